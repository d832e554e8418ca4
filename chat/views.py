"""Dashboard pages of conversations: the list, a transcript (live), and "Try it" (ask the assistant yourself)."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.permissions import workspace_permission_required
from accounts.roles import role_has_permission
from chat import selectors, services
from chat.models import Channel, Conversation, ConversationStatus
from chat.protocol import ProtocolLimits

PAGE_SIZE = 50


def _conversation_or_404(conversation_id: UUID) -> Conversation:
    conversation = selectors.conversation_get(public_id=conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _chat_context(request: HttpRequest, conversation: Conversation, *, mode: str) -> dict[str, Any]:
    limits = ProtocolLimits.from_settings()
    return {
        "conversation": conversation,
        # Not "messages": that name belongs to django.contrib.messages in every template.
        "chat_messages": selectors.message_list(conversation=conversation).select_related("reply_to"),
        "can_post": role_has_permission(request.role, "conversations.reply"),  # type: ignore[attr-defined]
        "socket_path": f"/ws/chat/{conversation.public_id}/",
        "mode": mode,
        "max_message_chars": limits.max_message_chars,
    }


@workspace_permission_required("conversations.view")
@require_GET
def conversation_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    channel = request.GET.get("channel") or None
    search = (request.GET.get("q") or "").strip()[:200] or None
    conversations = selectors.conversation_list(
        status=status if status in ConversationStatus.values else None,
        channel=channel if channel in Channel.values else None,
        search=search,
    )
    page = Paginator(conversations, PAGE_SIZE).get_page(request.GET.get("page"))
    counts = selectors.conversation_counts()
    return render(request, "chat/conversation_list.html", {
        "page": page, "status_tabs": [(value, label, counts.get(value, 0)) for value, label in ConversationStatus.choices],
        "channels": Channel.choices, "filters": {"status": status or "", "channel": channel or "", "q": search or ""},
        "can_reply": role_has_permission(request.role, "conversations.reply"),  # type: ignore[attr-defined]
    })


@workspace_permission_required("conversations.reply")
@require_http_methods(["GET", "POST"])
def conversation_try_start(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        conversation = services.conversation_start(channel=Channel.DASHBOARD, created_by=request.user)
        return redirect("conversation-try", conversation_id=conversation.public_id)
    return render(request, "chat/try_start.html")


@workspace_permission_required("conversations.reply")
@require_GET
def conversation_try(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _conversation_or_404(conversation_id)
    return render(request, "chat/try.html", _chat_context(request, conversation, mode="try"))


@workspace_permission_required("conversations.view")
@require_GET
def conversation_transcript(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _conversation_or_404(conversation_id)
    return render(request, "chat/transcript.html", _chat_context(request, conversation, mode="watch"))


@workspace_permission_required("conversations.handle")
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    """The agents' live inbox (docs/handoff.md): lists and the conversation pane are filled by static/js/inbox.js
    from /api/v1/conversations/inbox/ and kept live by /ws/inbox/."""
    from accounts.roles import roles_with
    from accounts.selectors import membership_list

    handlers = roles_with("conversations.handle")
    agents = [
        {"id": m.user_id, "name": m.user.display_name}
        for m in membership_list(workspace=request.tenant).select_related("user")  # type: ignore[attr-defined]
        if m.role in handlers
    ]
    return render(request, "chat/inbox.html", {
        "agents": agents,
        "inbox_config": {"me": {"id": request.user.pk, "name": request.user.display_name}, "agents": agents},
        "max_message_chars": ProtocolLimits.from_settings().max_message_chars,
        "reasons": ["asked", "keyword", "unanswered", "agent"], "channels": Channel.choices,
    })


# --- visitor data rights (issue #18; docs/handoff.md "Visitor data rights") -----------------------------------------
@workspace_permission_required("visitors.manage")
@require_http_methods(["GET", "POST"])
def visitor_data(request: HttpRequest, visitor_id: str) -> HttpResponse:
    """One visitor: what we hold (their conversations), a JSON download, and erasure (POST, confirmed)."""
    from django.contrib import messages as flash

    from chat import visitors
    from config.errors import ApplicationError

    if request.method == "POST":
        if request.POST.get("confirm") != visitor_id:
            flash.error(request, "Type the visitor id to confirm the erasure.")
            return redirect("visitor-data", visitor_id=visitor_id)
        try:
            counts = visitors.visitor_erase(workspace=request.tenant, actor=request.user,  # type: ignore[attr-defined]
                                            visitor_id=visitor_id)
        except ApplicationError as exc:
            flash.error(request, exc.message)
            return redirect("conversations")
        flash.success(request, f"Visitor erased: {counts['conversations']} conversations, "
                               f"{counts['messages']} messages.")
        return redirect("conversations")
    conversations = selectors.conversation_list(visitor_id=visitor_id)[:200]
    if not conversations:
        raise Http404("No conversations of this visitor.")
    return render(request, "chat/visitor.html", {"visitor_id": visitor_id, "conversations": conversations})


@workspace_permission_required("visitors.manage")
@require_GET
def visitor_data_export(request: HttpRequest, visitor_id: str) -> HttpResponse:
    import json

    from chat import visitors
    from config.errors import NotFound

    try:
        document = visitors.visitor_export(workspace=request.tenant, actor=request.user,  # type: ignore[attr-defined]
                                           visitor_id=visitor_id)
    except NotFound:
        raise Http404("No conversations of this visitor.") from None
    response = HttpResponse(json.dumps(document, ensure_ascii=False, indent=2), content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="visitor-export.json"'
    return response


# --- office hours and staff notifications (issue #18; docs/handoff.md) ---------------------------------------------
def _office_hours_form_class():
    from django import forms

    from chat.handoff import NOTIFY_AFTER_MAX, WEEKDAYS

    day_fields = {day: forms.CharField(
        label=day.capitalize(), required=False, max_length=200,
        help_text="" if day != "mon" else "Spans like 09:00-12:00, 13:00-17:00; empty = closed.")
        for day in WEEKDAYS}

    def clean(self: forms.Form) -> dict[str, Any]:
        data = forms.Form.clean(self)
        weekly: dict[str, list[list[str]]] = {}
        for day in WEEKDAYS:
            text = (data.get(day) or "").strip()
            if not text:
                continue
            spans = [[bound.strip() for bound in part.split("-")] for part in text.split(",")]
            if any(len(span) != 2 for span in spans):
                self.add_error(day, "Write spans as 09:00-17:00.")
                continue
            weekly[day] = spans
        data["weekly_hours"] = weekly
        return data

    fields: dict[str, Any] = {
        "enabled": forms.BooleanField(label="Use office hours", required=False,
                                      help_text="Off: always within office hours (presence still counts)."),
        "timezone": forms.CharField(label="Time zone", max_length=64, help_text="An IANA name, e.g. Europe/Berlin."),
        **day_fields,
        "notify_agents": forms.BooleanField(
            label="E-mail the agents when a customer waits and nobody has the inbox open", required=False),
        "notify_after_seconds": forms.IntegerField(label="After (seconds)", min_value=0, max_value=NOTIFY_AFTER_MAX),
        "daily_digest": forms.BooleanField(
            label="Daily digest of unanswered and thumbs-down questions to the owners", required=False),
        "clean": clean,
    }
    OfficeHoursForm = type("OfficeHoursForm", (forms.Form,), fields)
    return OfficeHoursForm


@workspace_permission_required("settings.manage")
@require_http_methods(["GET", "POST"])
def office_hours_settings(request: HttpRequest) -> HttpResponse:
    from django.contrib import messages as flash

    from chat import handoff
    from chat.models import OfficeHours
    from config.errors import ValidationFailed

    form_class = _office_hours_form_class()
    hours = handoff.office_hours_get() or OfficeHours()
    if request.method == "POST":
        form = form_class(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                handoff.office_hours_set(
                    enabled=data["enabled"], timezone_name=data["timezone"], weekly_hours=data["weekly_hours"],
                    notify_agents=data["notify_agents"], notify_after_seconds=data["notify_after_seconds"],
                    daily_digest=data["daily_digest"])
            except ValidationFailed as exc:
                form.add_error(None, exc.message)
            else:
                flash.success(request, "Office hours saved.")
                return redirect("office-hours")
    else:
        initial = {"enabled": hours.enabled, "timezone": hours.timezone, "notify_agents": hours.notify_agents,
                   "notify_after_seconds": hours.notify_after_seconds, "daily_digest": hours.daily_digest}
        for day, spans in (hours.weekly_hours or {}).items():
            initial[day] = ", ".join(f"{start}-{end}" for start, end in spans)
        form = form_class(initial=initial)
    return render(request, "chat/office_hours.html", {"form": form, "open_now": handoff.office_hours_open(hours)})


def lead_csv_response(workspace: Any, *, embed_id: int | None = None) -> StreamingHttpResponse:
    """Every lead as a CSV download (the dashboard and the API serve the same file)."""
    from chat.leads import lead_csv_lines

    response = StreamingHttpResponse(lead_csv_lines(embed_id=embed_id), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="leads-{workspace.slug}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    response["Cache-Control"] = "no-store"
    return response


@workspace_permission_required("conversations.view")
@require_GET
def leads_export(request: HttpRequest) -> HttpResponse:
    return lead_csv_response(request.tenant)  # type: ignore[attr-defined]
