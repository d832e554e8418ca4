"""Staff notifications (issue #18 item 4; docs/handoff.md "Staff notifications").

* **A customer waits and nobody is there.** `chat.signals.handoff_requested` schedules `chat.handoff_notify` with a
  countdown of the workspace's `OfficeHours.notify_after_seconds`. When it runs it sends nothing if the wait is over
  (an agent joined, the conversation was handed back or closed, or a newer wait started: `handoff_at` changed), if an
  agent has the inbox open (presence, chat.inbox), if it is outside office hours, or if the workspace turned it off.
  Otherwise every member who can handle conversations (owner, admin, agent) gets one e-mail with a link to the
  conversation in the inbox. Once per wait: a Redis key beside the conversation's log records the wait notified
  (not the conversation row: a notification changes nothing of the workspace's data).
* **The daily digest.** Beat runs `chat.digest_send_all` every hour; a workspace whose local time (its office-hours
  time zone) has reached DIGEST_HOUR and that has not had today's digest gets one, to its owners, listing the last
  24 hours' questions the assistant declined and answers that got a thumbs-down. Nothing to report: no e-mail.

Listens to signals only: the answer path (chat.answering, chat.streaming) does not know this module exists.
"""
from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection
from django.utils import timezone

from chat import inbox
from chat.events import sync_client
from chat.models import Conversation, ConversationStatus, Message, MessageRole, OfficeHours

logger = logging.getLogger(__name__)
DIGEST_HOUR = 8  # local time of the workspace (its office hours' time zone)
DIGEST_ITEMS_MAX = 50
NOTIFIED_TTL = 7 * 24 * 3600
# "A customer is waiting" e-mails per workspace per hour: anonymous visitors can ask for a person as often as they
# open conversations, and the team's inboxes must not be the thing they flood. Past it, waits are not e-mailed (the
# inbox still shows them).
HANDOFF_EMAILS_PER_HOUR = 20


def _one_line(text: str, *, limit: int) -> str:
    """What a visitor typed, as one line of an e-mail: no line breaks or control characters (they could start lines
    that look like ours — a fake link, a fake instruction), at most `limit` characters."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _quoted(text: str, *, limit: int) -> str:
    """What a visitor typed, quoted: every line starts with "> ", so nothing they write reads as our own text."""
    text = text[:limit]
    return "\n".join("> " + "".join(ch if ch.isprintable() else " " for ch in line) for line in text.splitlines())


def notified_key(schema_name: str, public_id: Any) -> str:
    """Redis: the handoff_at of the conversation's wait that was notified. Beside the conversation's replay log
    (same prefix, schema and id), and deleted with it (chat.retention, chat.visitors, workspace purge)."""
    from chat.events import ConversationLog

    return ConversationLog(schema=schema_name, conversation=public_id.hex).seq_key.rsplit(":", 1)[0] + ":notified"


def _settings() -> OfficeHours:
    return OfficeHours.objects.order_by("id").first() or OfficeHours()  # unsaved: the model's defaults


def _workspace() -> Any:
    from tenants.models import Workspace

    tenant = getattr(connection, "tenant", None)
    if tenant is not None and getattr(tenant, "pk", None) and tenant.schema_name == connection.schema_name:
        return tenant
    return Workspace.objects.get(schema_name=connection.schema_name)


def _recipients(*, workspace: Any, permission: str | None = None, roles: set[str] | None = None) -> list[str]:
    from accounts.roles import roles_with
    from accounts.selectors import membership_list

    allowed = set(roles or ()) | {str(role) for role in (roles_with(permission) if permission else ())}
    return sorted({m.user.email for m in membership_list(workspace=workspace)
                   if m.role in allowed and m.user.is_active and m.user.email})


# --- a customer waits ------------------------------------------------------------------------------------------------
def handoff_notification_schedule(*, conversation: Conversation) -> bool:
    """Receiver side of handoff_requested: queue the check for after the workspace's delay. Returns whether queued."""
    from chat.tasks import handoff_notify

    hours = _settings()
    if not hours.notify_agents or conversation.handoff_at is None:
        return False
    handoff_notify.apply_async(args=[str(conversation.public_id), conversation.handoff_at.isoformat()],
                               countdown=max(0, int(hours.notify_after_seconds)))
    return True


def handoff_notification_send(*, public_id: str, handoff_at: str) -> str:
    """Send the "a customer is waiting" e-mail for one wait if it is still needed. Returns what happened:
    `sent`, or why not: `off`, `gone`, `over` (joined, handed back, closed or a newer wait), `notified`,
    `online` (an agent has the inbox open), `closed_hours`, `no_recipients`, `throttled` (the workspace had
    HANDOFF_EMAILS_PER_HOUR of them this hour)."""
    from chat import handoff
    from tenants.selectors import workspace_url

    hours = _settings()
    if not hours.notify_agents:
        return "off"
    if inbox.agents_online():
        return "online"
    if not handoff.office_hours_open(handoff.office_hours_get()):
        return "closed_hours"
    workspace = _workspace()
    recipients = _recipients(workspace=workspace, permission="conversations.handle")
    if not recipients:
        return "no_recipients"
    conversation = Conversation.objects.filter(public_id=public_id).first()
    if conversation is None:
        return "gone"
    if conversation.status != ConversationStatus.WAITING or conversation.handoff_at is None \
            or conversation.handoff_at.isoformat() != handoff_at:
        return "over"
    key = notified_key(connection.schema_name, conversation.public_id)
    client = sync_client()
    if client.set(key, handoff_at, ex=NOTIFIED_TTL, get=True) == handoff_at.encode():
        return "notified"  # a redelivered or repeated task: this wait has had its e-mail
    last = (Message.objects.filter(conversation=conversation, role=MessageRole.CUSTOMER)
            .order_by("-id").values_list("content", flat=True).first() or "")
    if not _within_hourly_budget(client, schema_name=connection.schema_name):
        client.delete(key)
        return "throttled"
    link = workspace_url(workspace=workspace, path=f"/conversations/inbox/?c={conversation.public_id}")
    who = _one_line(conversation.visitor_name or conversation.visitor_email or "", limit=80) or "A customer"
    # Our words and the link first; what the visitor wrote last, quoted.
    body = (f"A customer is waiting for a person in {workspace.name} and nobody has the inbox open.\n\n"
            f"Open the conversation: {link}\n\n"
            f"Customer (as they gave it): {who}\n"
            + (f"Their last message:\n{_quoted(last, limit=500)}\n" if last else ""))
    try:
        send_mail(subject=f"[{workspace.name}] A customer is waiting for a person", message=body,
                  from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=recipients)
    except Exception:
        client.delete(key)  # not sent: forget the mark so that the task's retry sends it
        raise
    return "sent"


def _within_hourly_budget(client: Any, *, schema_name: str) -> bool:
    """Count one "customer waiting" e-mail of this workspace in the current hour; False past HANDOFF_EMAILS_PER_HOUR.
    The key carries the schema (purged with the workspace) and expires with its hour."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "ccgpt")
    hour = timezone.now().strftime("%Y%m%d%H")
    key = f"{prefix}:chat:handoff-emails:{schema_name}:{hour}"
    count = client.incr(key)
    if count == 1:
        client.expire(key, 3600)
    return count <= HANDOFF_EMAILS_PER_HOUR


# --- the daily digest ------------------------------------------------------------------------------------------------
def digest_items(*, since: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    """The questions since `since` that the assistant declined, and the answers customers gave a thumbs-down."""
    answers = (Message.objects.filter(role=MessageRole.ASSISTANT, created_at__gte=since)
               .select_related("reply_to", "conversation").order_by("created_at"))

    def item(answer: Message) -> dict[str, Any]:
        return {"question": (answer.reply_to.content if answer.reply_to_id else "")[:300],
                "answer": answer.content[:300], "conversation_id": str(answer.conversation.public_id),
                "comment": answer.feedback_comment[:300]}

    return {"unanswered": [item(a) for a in answers.filter(answered=False)[:DIGEST_ITEMS_MAX]],
            "thumbs_down": [item(a) for a in answers.filter(feedback=-1)[:DIGEST_ITEMS_MAX]]}


def digest_send(*, now: dt.datetime | None = None, force: bool = False) -> str:
    """The current workspace's digest, if due (its local time has reached DIGEST_HOUR and today's is not sent yet)
    or `force`. Returns `sent`, `off`, `not_due`, `already_sent`, `empty` or `no_recipients`."""
    from tenants.selectors import workspace_url

    hours = _settings()
    if not hours.daily_digest:
        return "off"
    now = now or timezone.now()
    try:
        zone = zoneinfo.ZoneInfo(hours.timezone or "UTC")
    except Exception:
        zone = zoneinfo.ZoneInfo("UTC")
    local = now.astimezone(zone)
    if local.hour < DIGEST_HOUR and not force:
        return "not_due"
    items = digest_items(since=now - dt.timedelta(hours=24))
    if not items["unanswered"] and not items["thumbs_down"]:
        return "empty"
    workspace = _workspace()
    recipients = _recipients(workspace=workspace, roles={"owner"})
    if not recipients:
        return "no_recipients"
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "ccgpt")
    key = f"{prefix}:chat:digest:{connection.schema_name}:{local.date().isoformat()}"  # carries the schema: purged with it
    if not sync_client().set(key, "1", nx=True, ex=3 * 24 * 3600):
        return "already_sent"
    lines = [f"The last 24 hours in {workspace.name}.", ""]
    for title, entries in (("Questions the assistant could not answer", items["unanswered"]),
                           ("Answers that got a thumbs-down", items["thumbs_down"])):
        lines.append(f"{title} ({len(entries)}):")
        for entry in entries:
            link = workspace_url(workspace=workspace, path=f"/conversations/{entry['conversation_id']}/")
            comment = f" — comment: {_one_line(entry['comment'], limit=300)}" if entry["comment"] else ""
            question = _one_line(entry["question"], limit=300) or "(no question)"
            lines.append(f"- {link}\n  “{question}”{comment}")
        lines.append("")
    try:
        send_mail(subject=f"[{workspace.name}] Daily digest: {len(items['unanswered'])} unanswered, "
                          f"{len(items['thumbs_down'])} thumbs-down",
                  message="\n".join(lines), from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=recipients)
    except Exception:
        sync_client().delete(key)  # the next hourly run tries again
        raise
    return "sent"


# --- receivers -------------------------------------------------------------------------------------------------------
def on_handoff_requested(sender: Any = None, *, conversation: Conversation, **_: Any) -> None:
    try:
        handoff_notification_schedule(conversation=conversation)
    except Exception:  # a notification must never break the handoff
        logger.exception("chat: could not schedule the handoff notification of %s", conversation.public_id)


def notification_receivers_connect() -> None:
    from chat.signals import handoff_requested

    handoff_requested.connect(on_handoff_requested, dispatch_uid="chat.notifications.on_handoff_requested", weak=False)
