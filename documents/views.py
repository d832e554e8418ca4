"""Dashboard pages of the knowledge base. Uploads go from the browser straight to the API (XHR, with upload
progress); the small forms here (text, FAQ, URL, actions) post to these views, which call one service each."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.permissions import workspace_permission_required
from config.errors import ApplicationError
from documents import selectors, services
from documents.models import DocumentSource, DocumentStatus

PAGE_SIZE = 50


def _row(document: Any) -> dict[str, Any]:
    return {
        "document": document,
        "note": selectors.document_state_note(document),
        "progress": services.document_progress_overall(
            stage=document.stage, stage_progress=document.stage_progress, status=document.status
        ),
    }


def _error_message(error: ApplicationError) -> str:
    help_text = selectors.ERROR_HELP.get(error.code)
    return error.message if not help_text or help_text == error.message else f"{error.message} {help_text}"


def _action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """POST-only dashboard actions: an ApplicationError becomes a plain-words message and a redirect back."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as error:
            if error.status_code == 404:
                raise
            messages.error(request, _error_message(error))
            fallback = reverse("knowledge-detail", args=[kwargs["document_id"]]) if "document_id" in kwargs else None
            return redirect(fallback or reverse("knowledge"))

    return wrapped


@workspace_permission_required("knowledge.view")
def knowledge_index(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:200]
    status = request.GET.get("status", "")
    status = status if status in DocumentStatus.values else ""
    page = Paginator(selectors.document_list(search=search or None, status=status or None), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    counts = selectors.document_status_counts()
    return render(request, "documents/knowledge.html", {
        "rows": [_row(document) for document in page.object_list],
        "page": page,
        "search": search,
        "status": status,
        "counts": counts,
        "usage": selectors.document_usage(),
        "status_chips": [(value, label, counts[value]) for value, label in DocumentStatus.choices],
        "max_mb": services.max_upload_bytes() // (1024 * 1024),
        # "Add to knowledge base" from analytics' unanswered questions opens the FAQ form with the question typed in.
        "faq_prefill": request.GET.get("faq_question", "").strip()[:1000],
    })


@workspace_permission_required("knowledge.view")
def knowledge_detail(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_get(document_id=document_id)
    return render(request, "documents/detail.html", {
        **_row(document),
        "chunks": selectors.document_chunks(document=document, limit=50),
        "is_url": document.source == DocumentSource.URL,
    })


@workspace_permission_required("knowledge.view")
def knowledge_failed(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.document_failed_list(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "documents/failed.html", {"rows": [_row(d) for d in page.object_list], "page": page})


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_add_text(request: HttpRequest) -> HttpResponse:
    document = services.document_create_text(
        title=request.POST.get("title", ""), text=request.POST.get("text", ""),
        markdown=request.POST.get("format") == "markdown", uploaded_by=request.user,
    )
    messages.success(request, f"“{document.title}” was added and is being processed.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_add_faq(request: HttpRequest) -> HttpResponse:
    document = services.document_create_faq(
        question=request.POST.get("question", ""), answer=request.POST.get("answer", ""), uploaded_by=request.user
    )
    messages.success(request, "The FAQ entry was added and is being processed.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_import_url(request: HttpRequest) -> HttpResponse:
    document = services.document_import_url(
        url=request.POST.get("url", ""), title=request.POST.get("title") or None, uploaded_by=request.user
    )
    messages.success(request, "The page is being fetched.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_reindex_all(request: HttpRequest) -> HttpResponse:
    count = services.workspace_reindex(actor=request.user)
    messages.success(request, f"{count} documents are being reindexed.")
    return redirect("knowledge")


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_delete(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_get(document_id=document_id)
    services.document_delete(document=document, actor=request.user)
    messages.success(request, f"“{document.title}” was deleted.")
    return redirect("knowledge")


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_retry(request: HttpRequest, document_id: int) -> HttpResponse:
    document = services.document_retry(document=selectors.document_get(document_id=document_id), actor=request.user)
    messages.success(request, f"“{document.title}” is queued again.")
    if request.POST.get("next") == "failed":
        return redirect("knowledge-failed")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_reindex(request: HttpRequest, document_id: int) -> HttpResponse:
    document = services.document_reindex(document=selectors.document_get(document_id=document_id),
                                         actor=request.user)
    messages.success(request, f"“{document.title}” is being reindexed.")
    return redirect("knowledge-detail", document_id=document.pk)


@workspace_permission_required("knowledge.manage")
@require_POST
@_action
def knowledge_new_version(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_get(document_id=document_id)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        messages.error(request, "Choose a file for the new version.")
        return redirect("knowledge-detail", document_id=document.pk)
    document = services.document_new_version(document=document, uploaded_file=uploaded, uploaded_by=request.user)
    messages.success(request, f"Version {document.version} of “{document.title}” is being processed.")
    return redirect("knowledge-detail", document_id=document.pk)
