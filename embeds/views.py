"""Dashboard pages of the widget: the list, create, edit with a live preview, the snippet, and the actions (rotate
the key, identity secret on / rotate / off, deactivate, activate). Everyone may look (widgets.view); owners and
admins change (widgets.manage)."""
from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.permissions import workspace_permission_required
from accounts.roles import role_has_permission
from config.errors import ApplicationError, ValidationFailed
from embeds import selectors, services
from embeds.forms import EmbedForm
from embeds.leads import MAX_STARTER_QUESTIONS
from embeds.models import Embed
from embeds.starters import starter_questions_suggest
from embeds.theme import STRINGS


PREVIEW_STRINGS = {language: {name: strings[name] for name in ("title", "greeting", "placeholder")}
                   for language, strings in STRINGS.items()}


def _can_manage(request: HttpRequest) -> bool:
    return role_has_permission(getattr(request, "role", None), "widgets.manage")


def _embed_or_404(embed_id: int) -> Embed:
    embed = selectors.embed_get(embed_id=embed_id)
    if embed is None:
        raise Http404("No such widget.")
    return embed


@workspace_permission_required("widgets.view")
def widgets_index(request: HttpRequest) -> HttpResponse:
    return render(request, "embeds/index.html", {
        "embeds": selectors.embed_list(), "can_manage": _can_manage(request),
    })


@workspace_permission_required("widgets.manage")
@require_http_methods(["GET", "POST"])
def widget_create(request: HttpRequest) -> HttpResponse:
    form = EmbedForm.for_embed(None, data=request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                embed = services.embed_create(created_by=request.user, **form.service_arguments())
            except ValidationFailed as error:
                form.add_service_errors(error)
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                messages.success(request, f"Widget “{embed.name}” created. Paste the snippet into your site.")
                return redirect("widget-edit", embed_id=embed.pk)
        status = 400
    return render(request, "embeds/edit.html", {
        "form": form, "embed": None, "can_manage": True, "preview_strings": PREVIEW_STRINGS,
    }, status=status)


def _edit_page(request: HttpRequest, embed: Embed, form: EmbedForm, *, status: int = 200,
               new_secret: str | None = None) -> HttpResponse:
    response = render(request, "embeds/edit.html", {
        "form": form, "embed": embed, "can_manage": _can_manage(request), "new_secret": new_secret,
        "preview_strings": PREVIEW_STRINGS,
        "snippet": selectors.embed_snippet(embed=embed, base_url=selectors.workspace_base_url()),
        "starter_suggestions": starter_questions_suggest(embed=embed) if _can_manage(request) else [],
        "starter_room": len(embed.starter_questions or []) < MAX_STARTER_QUESTIONS,
    }, status=status)
    if new_secret:
        response["Cache-Control"] = "no-store"  # the secret is shown once; not from a cache either
    return response


@workspace_permission_required("widgets.view")
@require_http_methods(["GET", "POST"])
def widget_edit(request: HttpRequest, embed_id: int) -> HttpResponse:
    embed = _embed_or_404(embed_id)
    if request.method == "GET":
        return _edit_page(request, embed, EmbedForm.for_embed(embed))
    if not _can_manage(request):
        return render(request, "errors/forbidden.html", {"permission": "widgets.manage"}, status=403)
    form = EmbedForm.for_embed(embed, data=request.POST)
    if form.is_valid():
        try:
            services.embed_update(embed=embed, actor=request.user, **form.service_arguments())
        except ValidationFailed as error:
            form.add_service_errors(error)
        else:
            messages.success(request, "Saved.")
            return redirect("widget-edit", embed_id=embed.pk)
    return _edit_page(request, embed, form, status=400)


ACTIONS = ("rotate_key", "rotate_secret", "disable_identity", "deactivate", "activate", "add_starter")


@workspace_permission_required("widgets.manage")
@require_POST
def widget_action(request: HttpRequest, embed_id: int) -> HttpResponse:
    embed = _embed_or_404(embed_id)
    action = request.POST.get("action")
    if action not in ACTIONS:
        messages.error(request, "Unknown action.")
        return redirect("widget-edit", embed_id=embed.pk)
    try:
        if action == "add_starter":  # a suggestion approved by staff (embeds.starters)
            question = request.POST.get("question", "")
            services.embed_update(embed=embed, actor=request.user,
                                  starter_questions=[*(embed.starter_questions or []), question])
            messages.success(request, "Added to the starter questions.")
            return redirect("widget-edit", embed_id=embed.pk)
        if action == "rotate_secret":
            embed, secret = services.embed_identity_secret_rotate(embed=embed, actor=request.user)
            return _edit_page(request, embed, EmbedForm.for_embed(embed), new_secret=secret)
        done: dict[str, Any] = {
            "rotate_key": (services.embed_public_key_rotate, "New public key: update the snippet on your site — "
                                                             "the old one stopped working."),
            "disable_identity": (services.embed_identity_disable, "Identity verification is off."),
            "deactivate": (services.embed_deactivate, "Widget switched off: it shows nowhere now."),
            "activate": (services.embed_activate, "Widget switched on."),
        }
        service, message = done[action]
        service(embed=embed, actor=request.user)
        messages.success(request, message)
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect("widget-edit", embed_id=embed.pk)
