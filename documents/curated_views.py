"""Dashboard pages of curated answers (under /knowledge/curated/): the list, write one (from a transcript, the review
queue or "Try it", with the question typed in), edit, delete. One service call each (documents/curated.py)."""
from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from accounts.permissions import workspace_permission_required
from config.errors import ApplicationError
from documents import curated

PAGE_SIZE = 50


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(str(value or "").strip())
    except ValueError:
        return None
    return number if 0 < number < 2**62 else None


def _examples(request: HttpRequest) -> list[str]:
    return [line for line in request.POST.get("examples", "").splitlines() if line.strip()]


def _back(request: HttpRequest) -> str | None:
    """Where the form came from (a transcript, the review queue), if it is a page of this host."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return None


@workspace_permission_required("knowledge.view")
@require_http_methods(["GET"])
def curated_index(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:200]
    page = Paginator(curated.curated_answer_list(search=search or None), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "documents/curated_list.html", {"page": page, "search": search})


@workspace_permission_required("knowledge.manage")
@require_http_methods(["GET", "POST"])
def curated_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = {"question": request.POST.get("question", ""), "answer": request.POST.get("answer", ""),
                "examples": request.POST.get("examples", ""), "message": request.POST.get("message", ""),
                "next": _back(request) or ""}
        try:
            obj = curated.curated_answer_create(
                question=form["question"], answer=form["answer"], examples=_examples(request), actor=request.user,
                source_message_id=_int_or_none(form["message"]),
            )
        except ApplicationError as error:
            return render(request, "documents/curated_form.html", {"form": form, "error": error.message},
                          status=error.status_code)
        messages.success(request, "The answer is saved: from now on, questions like this one get it.")
        back = _back(request)
        return redirect(back) if back else redirect("curated-answer-edit", curated_answer_id=obj.pk)
    form = {"question": request.GET.get("question", "").strip()[:curated.MAX_QUESTION_CHARS], "answer": "",
            "examples": "", "message": str(_int_or_none(request.GET.get("message")) or ""),
            "next": _back(request) or ""}
    similar = []
    if form["question"]:
        # The question may already have a curated answer that simply did not match: offer to add it as a phrasing.
        similar = curated.curated_answers_similar(question=form["question"], limit=3)
    return render(request, "documents/curated_form.html", {"form": form, "similar": similar})


@workspace_permission_required("knowledge.manage")
@require_http_methods(["GET", "POST"])
def curated_edit(request: HttpRequest, curated_answer_id: int) -> HttpResponse:
    obj = curated.curated_answer_get(curated_answer_id=curated_answer_id)
    if request.method == "POST":
        add_example = request.POST.get("add_example", "").strip()
        try:
            if add_example:
                obj = curated.curated_answer_update(curated=obj, examples=[*obj.examples, add_example],
                                                    actor=request.user)
            else:
                obj = curated.curated_answer_update(curated=obj, question=request.POST.get("question", ""),
                                                    answer=request.POST.get("answer", ""),
                                                    examples=_examples(request), actor=request.user)
        except ApplicationError as error:
            messages.error(request, error.message)
            return redirect("curated-answer-edit", curated_answer_id=obj.pk)
        messages.success(request, "The curated answer was saved.")
        back = _back(request)
        return redirect(back) if back else redirect("curated-answer-edit", curated_answer_id=obj.pk)
    form = {"question": obj.question, "answer": obj.answer, "examples": "\n".join(obj.examples), "message": "",
            "next": _back(request) or ""}
    return render(request, "documents/curated_form.html", {"form": form, "curated": obj})


@workspace_permission_required("knowledge.manage")
@require_POST
def curated_delete(request: HttpRequest, curated_answer_id: int) -> HttpResponse:
    obj = curated.curated_answer_get(curated_answer_id=curated_answer_id)
    curated.curated_answer_delete(curated=obj, actor=request.user)
    messages.success(request, "The curated answer was deleted.")
    return redirect("curated-answers")
