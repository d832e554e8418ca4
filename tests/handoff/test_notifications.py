"""Staff notifications (issue #18 item 4; chat.notifications): a customer who asks for a person while nobody has the
inbox open makes the real Celery worker e-mail the workspace's agents — through a real mail backend (Django's
file-based one: the worker writes each message to a file the test reads back) — with a link to the conversation;
the wait is checked again when the delay is up (joined, someone online, outside office hours: nothing sent; once per
wait). The owners' daily digest lists the day's declined and thumbs-down questions. Office hours and these settings
are edited on a dashboard page and over the API."""
from __future__ import annotations

import asyncio
import datetime as dt
import secrets

from django.core import mail
from django.utils import timezone
from django_tenants.utils import tenant_context

from chat import handoff, inbox, notifications, services
from chat.models import Conversation, OfficeHours
from tests.factories import member, workspace_with_owner

LIVENESS_DEADLINE = 60  # seconds: generous; the configured delay is 1 s


def _waiting_conversation(workspace, *, text: str) -> Conversation:
    with tenant_context(workspace):
        conversation = services.conversation_start(channel="widget", visitor_id=f"v-{secrets.token_hex(4)}",
                                                   visitor_name="Dana Customer")
        services.customer_message_post(conversation=conversation, text=text)
        return handoff.conversation_handoff_request(conversation=conversation, reason="asked")


def test_a_waiting_customer_makes_the_worker_email_the_agents_with_a_link(celery_worker, worker_mailbox):
    shop = workspace_with_owner(name=f"Notify Shop {secrets.token_hex(3)}")
    agent, viewer = member(shop.workspace, "agent"), member(shop.workspace, "viewer")
    with tenant_context(shop.workspace):
        OfficeHours.objects.create(notify_agents=True, notify_after_seconds=1)
    text = f"My parcel {secrets.token_hex(4)} never arrived, can a person help?"
    conversation = _waiting_conversation(shop.workspace, text=text)

    message = worker_mailbox.wait_for(to=agent.email, subject_contains="A customer is waiting",
                                      timeout=LIVENESS_DEADLINE)
    recipients = message["To"]
    assert shop.owner.email in recipients and agent.email in recipients  # everyone who handles conversations
    assert viewer.email not in recipients
    assert shop.workspace.name in message["Subject"]
    body = worker_mailbox.body(message)
    assert text in body and "Dana Customer" in body
    link = worker_mailbox.link(message, "/conversations/inbox/")
    assert link.endswith(f"/conversations/inbox/?c={conversation.public_id}")
    assert shop.workspace.slug in link

    # Once per wait: the same wait checked again (a redelivered task) sends nothing more.
    with tenant_context(shop.workspace):
        again = notifications.handoff_notification_send(public_id=str(conversation.public_id),
                                                        handoff_at=conversation.handoff_at.isoformat())
    assert again == "notified"


def test_nothing_is_sent_when_the_wait_is_over_someone_is_online_or_it_is_off():
    shop = workspace_with_owner(name=f"Quiet Shop {secrets.token_hex(3)}")
    agent = member(shop.workspace, "agent")
    schema = shop.workspace.schema_name
    mail.outbox = []

    def check(conversation: Conversation) -> str:
        with tenant_context(shop.workspace):
            return notifications.handoff_notification_send(public_id=str(conversation.public_id),
                                                           handoff_at=conversation.handoff_at.isoformat())

    joined = _waiting_conversation(shop.workspace, text="A person please")
    with tenant_context(shop.workspace):
        handoff.conversation_join(conversation=joined, agent=agent)
    assert check(joined) == "over"

    online = _waiting_conversation(shop.workspace, text="Anyone there?")
    asyncio.run(inbox.agent_presence_touch(schema_name=schema, user_id=agent.pk))
    try:
        assert check(online) == "online"
    finally:
        asyncio.run(inbox.agent_presence_clear(schema_name=schema, user_id=agent.pk))

    with tenant_context(shop.workspace):
        handoff.office_hours_set(enabled=True, timezone_name="UTC", weekly_hours={})  # closed every day
    assert check(online) == "closed_hours"
    with tenant_context(shop.workspace):
        handoff.office_hours_set(enabled=False, timezone_name="UTC", weekly_hours={}, notify_agents=False)
    assert check(online) == "off"
    assert mail.outbox == []

    with tenant_context(shop.workspace):
        handoff.office_hours_set(enabled=False, timezone_name="UTC", weekly_hours={}, notify_agents=True)
    assert check(online) == "sent"  # this process's backend (locmem) this time
    [sent] = mail.outbox
    assert agent.email in sent.to and f"?c={online.public_id}" in sent.body


def test_the_daily_digest_lists_declined_and_thumbs_down_questions_to_the_owners():
    from chat.services import assistant_answer_persist, customer_message_post, message_feedback_set

    shop = workspace_with_owner(name=f"Digest Shop {secrets.token_hex(3)}")
    agent = member(shop.workspace, "agent")
    marker = secrets.token_hex(4)
    mail.outbox = []
    with tenant_context(shop.workspace):
        OfficeHours.objects.create(timezone="Europe/Berlin")
        conversation = services.conversation_start(channel="widget")
        declined_q, _ = customer_message_post(conversation=conversation, text=f"Do you sell rockets {marker}?")
        assistant_answer_persist(conversation=conversation, reply_to=declined_q,
                                 result={"answer": "I don't know.", "answered": False, "confidence": 0.1},
                                 latency_first_token_ms=None, latency_total_ms=None)
        disliked_q, _ = customer_message_post(conversation=conversation, text=f"Where is my refund {marker}?")
        disliked = assistant_answer_persist(conversation=conversation, reply_to=disliked_q,
                                            result={"answer": "In the mail.", "answered": True, "confidence": 0.9},
                                            latency_first_token_ms=None, latency_total_ms=None)
        message_feedback_set(conversation=conversation, message_id=disliked.pk, value=-1)

        morning = timezone.now().astimezone(dt.timezone.utc).replace(hour=5, minute=0)  # 06:00/07:00 in Berlin
        assert notifications.digest_send(now=morning) == "not_due"
        due = morning.replace(hour=9)
        assert notifications.digest_send(now=due) == "sent"
        assert notifications.digest_send(now=due) == "already_sent"
    [digest] = mail.outbox
    assert digest.to == [shop.owner.email] and agent.email not in digest.to
    assert "1 unanswered, 1 thumbs-down" in digest.subject
    assert f"Do you sell rockets {marker}?" in digest.body and f"Where is my refund {marker}?" in digest.body
    assert f"/conversations/{conversation.public_id}/" in digest.body

    quiet = workspace_with_owner(name=f"Quiet {secrets.token_hex(3)}")
    with tenant_context(quiet.workspace):
        assert notifications.digest_send(now=due) == "empty"


def test_the_beat_task_has_the_worker_send_each_due_digest(celery_worker, worker_mailbox):
    """chat.digest_send_all (what beat sends hourly) fans out to the worker, which mails the owners of a workspace
    whose local time is past 08:00 (its time zone is picked so that it is noon there now)."""
    from chat.services import assistant_answer_persist, customer_message_post
    from chat.tasks import digest_send_all

    shop = workspace_with_owner(name=f"Noon Shop {secrets.token_hex(3)}")
    offset = 12 - timezone.now().astimezone(dt.timezone.utc).hour  # -11 … 12 hours: noon there
    marker = secrets.token_hex(4)
    with tenant_context(shop.workspace):
        OfficeHours.objects.create(timezone=f"Etc/GMT{-offset:+d}" if offset else "UTC")  # Etc/GMT signs are inverted
        conversation = services.conversation_start(channel="widget")
        question, _ = customer_message_post(conversation=conversation, text=f"Can you fix my boat {marker}?")
        assistant_answer_persist(conversation=conversation, reply_to=question,
                                 result={"answer": "I don't know.", "answered": False, "confidence": 0.1},
                                 latency_first_token_ms=None, latency_total_ms=None)
    assert digest_send_all() >= 1
    digest = worker_mailbox.wait_for(to=shop.owner.email, subject_contains="Daily digest", timeout=LIVENESS_DEADLINE)
    assert f"Can you fix my boat {marker}?" in worker_mailbox.body(digest)


def test_office_hours_and_notifications_have_a_settings_page_and_api(host_client):
    shop = workspace_with_owner(name=f"Hours Shop {secrets.token_hex(3)}")
    client = host_client(f"{shop.workspace.slug}.localhost")
    client.force_login(shop.owner)
    page = client.get("/conversations/office-hours/")
    assert page.status_code == 200 and "Office hours" in page.content.decode()
    saved = client.post("/conversations/office-hours/", {
        "enabled": "on", "timezone": "Europe/Berlin", "mon": "09:00-12:00, 13:00-17:00", "fri": "10:00-14:00",
        "notify_agents": "on", "notify_after_seconds": "300"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    api = client.get("/api/v1/conversations/office-hours/").json()
    assert api["weekly_hours"] == {"mon": [["09:00", "12:00"], ["13:00", "17:00"]], "fri": [["10:00", "14:00"]]}
    assert (api["enabled"], api["timezone"], api["notify_agents"], api["notify_after_seconds"], api["daily_digest"]) \
        == (True, "Europe/Berlin", True, 300, False)

    bad = client.post("/conversations/office-hours/", {"timezone": "Mars/Olympus", "notify_after_seconds": "5"})
    assert bad.status_code == 200 and "Unknown time zone" in bad.content.decode()
    too_long = client.put("/api/v1/conversations/office-hours/", {
        "enabled": False, "timezone": "UTC", "weekly_hours": {}, "notify_after_seconds": 100000},
        content_type="application/json")
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid"
    kept = client.put("/api/v1/conversations/office-hours/", {"enabled": False, "timezone": "UTC", "weekly_hours": {}},
                      content_type="application/json").json()
    assert kept["notify_after_seconds"] == 300  # left out: unchanged

    viewer = host_client(f"{shop.workspace.slug}.localhost")
    viewer.force_login(member(shop.workspace, "agent"))
    assert viewer.get("/conversations/office-hours/").status_code == 403


def test_what_a_visitor_typed_is_quoted_and_a_flood_of_waits_is_throttled_per_workspace(monkeypatch):
    """An anonymous visitor controls their name and message: neither can start a line of the e-mail that reads as
    ours (a fake link or instruction), our link comes first, and one workspace gets at most HANDOFF_EMAILS_PER_HOUR
    "waiting" e-mails an hour however many conversations ask for a person (the inbox still shows every wait)."""
    shop = workspace_with_owner(name=f"Flood Shop {secrets.token_hex(3)}")
    member(shop.workspace, "agent")
    monkeypatch.setattr(notifications, "HANDOFF_EMAILS_PER_HOUR", 2)
    mail.outbox = []
    forged = "hello\nOpen the conversation: https://evil.example/login\n\nSigned, the security team"
    results = []
    for index in range(3):
        with tenant_context(shop.workspace):
            conversation = services.conversation_start(
                channel="widget", visitor_id=f"v-{secrets.token_hex(4)}",
                visitor_name="Mallory\nOpen the conversation: https://evil.example/")
            services.customer_message_post(conversation=conversation, text=forged)
            conversation = handoff.conversation_handoff_request(conversation=conversation, reason="asked")
            results.append(notifications.handoff_notification_send(
                public_id=str(conversation.public_id), handoff_at=conversation.handoff_at.isoformat()))
    assert results == ["sent", "sent", "throttled"]
    assert len(mail.outbox) == 2
    lines = mail.outbox[0].body.splitlines()
    ours = [line for line in lines if line.startswith("Open the conversation:")]
    assert len(ours) == 1 and "evil.example" not in ours[0] and shop.workspace.slug in ours[0]
    assert lines.index(ours[0]) < min(i for i, line in enumerate(lines) if "evil.example" in line)
    for line in lines:
        if "evil.example" in line or "security team" in line:
            assert line.startswith("> ") or line.startswith("Customer (as they gave it): Mallory "), line
    with tenant_context(shop.workspace):
        assert Conversation.objects.filter(status="waiting").count() == 3  # every wait is still in the inbox
