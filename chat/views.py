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
