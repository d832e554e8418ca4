"""Outbound webhooks (issue #18 item 3, docs/webhooks.md) against a real receiver on loopback and a real worker.

The worker is one of this module's own, on its own queue, allowed to reach 127.0.0.1 only (URL_IMPORT_ALLOWED_NETWORKS,
as an operator would allow an intranet), with short retry gaps and a file mail backend the test reads back.
"""
from __future__ import annotations

import gzip
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.services import api_key_create
from analytics import webhooks
from analytics.models import WebhookDelivery, WebhookEndpoint
from tests.browser.mailbox import Mailbox
from tests.documents.test_pipeline import dedicated_worker
from tests.factories import WorkspaceWithOwner, workspace_with_owner

BASE_DIR = Path(__file__).resolve().parents[2]
HUNG_AFTER_SECONDS = 60
BOMB = gzip.compress(b"\0" * 50_000_000)
RETRY_WINDOW = 8  # seconds: attempts at 0, +1, +2, +4; the next gap (8) would end past the window


def documented_verifier() -> Any:
    """`webhook_verify` exactly as docs/webhooks.md prints it."""
    text = (BASE_DIR / "docs" / "webhooks.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def webhook_verify" in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 — our own documentation
    return namespace["webhook_verify"]


class Receiver:
    """A threaded HTTP server on loopback: /ok answers 200, /fail 500; every request is kept."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.arrived:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    receiver.arrived.notify_all()
                if self.path.startswith("/bomb"):  # 50 MB of zeros in ~50 KB of gzip
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(BOMB)))
                    self.end_headers()
                    self.wfile.write(BOMB)
                    return
                if self.path.startswith("/slowheaders"):  # the status line and headers a byte at a time
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        for _ in range(120):
                            self.wfile.write(b"a")
                            self.wfile.flush()
                            time.sleep(0.5)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if self.path.startswith("/drip"):  # a byte now and then: never trips a per-read timeout
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(120):
                            self.wfile.write(b".")
                            self.wfile.flush()
                            time.sleep(0.5)
                    except OSError:
                        pass
                    return
                code = 500 if self.path.startswith("/fail") else 200
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"broken on purpose" if code == 500 else b"thanks")

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer((host, 0), Handler)
        self.host = host
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.http.server_address[1]}{path}"

    def of(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def wait_for(self, path: str, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + HUNG_AFTER_SECONDS
        with self.arrived:
            while len(self.of(path)) < count:
                assert time.monotonic() < deadline, f"hung: {len(self.of(path))} of {count} requests to {path}"
                self.arrived.wait(timeout=0.5)
        return self.of(path)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def mail_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("webhook-mail")


@pytest.fixture(scope="module")
def hook_worker(django_db_blocker, mail_folder) -> Iterator[str]:
    queue = f"webhooks_{secrets.token_hex(3)}"
    with django_db_blocker.unblock(), dedicated_worker(
        "hook-worker", queue, URL_IMPORT_ALLOWED_NETWORKS="127.0.0.1/32", WEBHOOK_QUEUE=queue,
        WEBHOOK_RETRY_BASE_SECONDS="1", WEBHOOK_RETRY_WINDOW_SECONDS=str(RETRY_WINDOW),
        WEBHOOK_DISABLE_AFTER_FAILURES="6", WEBHOOK_DISABLE_AFTER_SECONDS="0", WEBHOOK_TIMEOUT_SECONDS="5",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(mail_folder),
    ):
        yield queue


@pytest.fixture
def hooks(hook_worker, settings) -> str:
    """This process sends delivery tasks to the module's worker and may subscribe loopback receivers."""
    settings.WEBHOOK_QUEUE = hook_worker
    settings.URL_IMPORT_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    return hook_worker


@pytest.fixture(scope="module")
def ws(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Webhooks Co")


def _api(host_client, ws: WorkspaceWithOwner):
    _key, raw = api_key_create(workspace=ws.workspace, name="hooks", scopes=["read", "write"])
    return host_client(ws.host, HTTP_AUTHORIZATION=f"Api-Key {raw}")


def _subscribe(client, url: str, events: list[str]) -> dict[str, Any]:
    response = client.post("/api/v1/webhooks/", {"url": url, "events": events}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def _in(ws: WorkspaceWithOwner, fn, *args, **kwargs):
    connection.set_tenant(ws.workspace)
    try:
        return fn(*args, **kwargs)
    finally:
        connection.set_schema_to_public()


def _conversation_start(ws: WorkspaceWithOwner):
    from chat.services import conversation_start

    return _in(ws, conversation_start, channel="api", title="Where is my parcel?")


def _delivery_settled(ws: WorkspaceWithOwner, **filters: Any) -> WebhookDelivery:
    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    while True:
        delivery = _in(ws, lambda: WebhookDelivery.objects.filter(**filters).order_by("-id").first())
        if delivery is not None and delivery.status in ("delivered", "failed"):
            return delivery
        assert time.monotonic() < deadline, f"hung: delivery {filters} is {delivery and delivery.status}"
        time.sleep(0.1)


def test_a_delivery_verifies_with_the_documented_snippet(ws, hooks, receiver, host_client):
    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/ok"), ["conversation.created"])
    assert endpoint["secret"].startswith("whsec_") and endpoint["secret_hint"] == endpoint["secret"][-4:]
    assert "secret" not in client.get(f"/api/v1/webhooks/{endpoint['id']}/").json(), "the secret is shown once"

    conversation = _conversation_start(ws)
    request = receiver.wait_for("/ok")[-1]
    verify = documented_verifier()
    assert verify(endpoint["secret"], request["headers"], request["body"])
    body = json.loads(request["body"])
    assert body["type"] == "conversation.created" and body["workspace"] == ws.workspace.slug
    assert body["data"]["conversation"]["id"] == str(conversation.public_id)
    assert request["headers"]["Webhook-Id"] == body["id"] and request["headers"]["Webhook-Event"] == body["type"]
    # The snippet refuses what it must: another secret, a changed body, a replay outside the window.
    assert not verify(endpoint["secret"] + "x", request["headers"], request["body"])
    assert not verify(endpoint["secret"], request["headers"], request["body"].replace(b"conversation", b"Conversation"))
    assert not verify(endpoint["secret"], request["headers"], request["body"],
                      now=int(request["headers"]["Webhook-Timestamp"]) + 301)

    delivery = _delivery_settled(ws, endpoint_id=endpoint["id"], event_type="conversation.created")
    assert delivery.status == "delivered" and delivery.response_status == 200 and delivery.attempts == 1
    assert delivery.response_excerpt == "thanks" and delivery.latency_ms is not None

    # Rotation: the old secret stops verifying, the new one (shown once) does.
    rotated = client.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret/").json()
    assert rotated["secret"] != endpoint["secret"]
    _conversation_start(ws)
    request = receiver.wait_for("/ok", 2)[-1]
    assert verify(rotated["secret"], request["headers"], request["body"])
    assert not verify(endpoint["secret"], request["headers"], request["body"])
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_500s_are_retried_with_growing_gaps_then_given_up(ws, hooks, receiver, host_client):
    client = _api(host_client, ws)
    path = f"/fail/{secrets.token_hex(3)}"
    endpoint = _subscribe(client, receiver.url(path), ["document.indexed", "conversation.created"])
    _conversation_start(ws)
    delivery = _delivery_settled(ws, endpoint_id=endpoint["id"])
    assert delivery.status == "failed" and delivery.error.startswith("Gave up after"), delivery.error
    gaps = delivery.retry_delays
    assert len(gaps) >= 2 and all(later > earlier for earlier, later in zip(gaps, gaps[1:])), gaps
    assert delivery.attempts == len(gaps) + 1 == len(receiver.of(path))
    assert delivery.response_status == 500 and delivery.response_excerpt == "broken on purpose"
    ids = {r["headers"]["Webhook-Id"] for r in receiver.of(path)}
    assert len(ids) == 1, "every attempt carries the same event id"
    listed = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries/").json()["results"]
    assert listed[0]["retry_delays"] == gaps and listed[0]["status"] == "failed"
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_redelivery_and_the_test_event(ws, hooks, receiver, host_client):
    client = _api(host_client, ws)
    path = f"/ok/{secrets.token_hex(3)}"
    endpoint = _subscribe(client, receiver.url(path), ["conversation.closed"])
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    assert sent.status_code == 202 and sent.json()["event_type"] == "webhook.test"
    first = _delivery_settled(ws, pk=sent.json()["id"])
    assert first.status == "delivered"
    again = client.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{first.pk}/redeliver/")
    assert again.status_code == 202 and again.json()["redelivery_of"] == first.pk
    second = _delivery_settled(ws, pk=again.json()["id"])
    assert second.status == "delivered" and second.event_id == first.event_id
    requests = receiver.wait_for(path, 2)
    assert [json.loads(r["body"])["id"] for r in requests] == [str(first.event_id)] * 2
    assert all(documented_verifier()(endpoint["secret"], r["headers"], r["body"]) for r in requests)
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_sustained_failure_switches_the_endpoint_off_and_tells_the_owner(ws, hooks, receiver, host_client,
                                                                         mail_folder):
    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url(f"/fail/{secrets.token_hex(3)}"), ["conversation.created"])
    for _ in range(2):  # 2 events x 4 attempts >= WEBHOOK_DISABLE_AFTER_FAILURES (6)
        _conversation_start(ws)
    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    while client.get(f"/api/v1/webhooks/{endpoint['id']}/").json()["is_active"]:
        assert time.monotonic() < deadline, "hung: the failing endpoint was never switched off"
        time.sleep(0.2)
    state = client.get(f"/api/v1/webhooks/{endpoint['id']}/").json()
    assert state["disabled_at"] and state["disabled_reason"].startswith("Failed ")
    message = Mailbox(mail_folder).wait_for(to=ws.owner.email, subject_contains="webhook endpoint was switched off")
    assert endpoint["url"] in Mailbox.body(message)
    # Switched off: nothing new is queued for it, and redelivery is refused until it is switched on again.
    before = _in(ws, lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).count())
    _conversation_start(ws)
    assert _in(ws, lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).count()) == before
    last = _in(ws, lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).first())
    refused = client.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{last.pk}/redeliver/")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "webhook_disabled"
    back = client.patch(f"/api/v1/webhooks/{endpoint['id']}/", {"is_active": True}, content_type="application/json")
    assert back.json()["is_active"] and back.json()["consecutive_failures"] == 0
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_refused_networks_at_subscription_and_at_delivery(ws, hooks, host_client, settings):
    client = _api(host_client, ws)
    for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]:8080/", "http://127.0.0.2/"):
        response = client.post("/api/v1/webhooks/", {"url": url, "events": ["message.created"]},
                               content_type="application/json")
        assert response.status_code == 400 and response.json()["error"]["code"] == "url_forbidden", (url, response.content)
    bad = client.post("/api/v1/webhooks/", {"url": "ftp://example.com/", "events": ["message.created"]},
                      content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "url_invalid"
    unknown = client.post("/api/v1/webhooks/", {"url": "http://127.0.0.1:9/", "events": ["nope"]},
                          content_type="application/json")
    assert unknown.status_code == 400

    # An endpoint that was fine when subscribed but now points at a refused address (as after DNS rebinding): the
    # worker allows 127.0.0.1/32 only, so 127.0.0.2 is refused at delivery and nothing reaches the listener there.
    inside = Receiver(host="127.0.0.2")
    try:
        settings.URL_IMPORT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
        endpoint = _subscribe(client, inside.url("/ok"), ["conversation.created"])
        _conversation_start(ws)
        delivery = _delivery_settled(ws, endpoint_id=endpoint["id"])
        assert delivery.status == "failed" and delivery.attempts == 1 and not delivery.retry_delays
        assert "private network" in delivery.error and delivery.response_status is None
        assert inside.requests == []
    finally:
        inside.close()
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_nothing_is_queued_without_a_subscription(ws, hooks, receiver, host_client):
    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/ok/docs-only"), ["document.failed"])
    before = _in(ws, lambda: WebhookDelivery.objects.count())
    _conversation_start(ws)
    assert _in(ws, lambda: WebhookDelivery.objects.count()) == before
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")
    assert _in(ws, lambda: WebhookEndpoint.objects.filter(pk=endpoint["id"]).exists()) is False


def test_another_workspace_sees_and_uses_none_of_it(ws, hooks, receiver, host_client, django_db_blocker):
    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/ok/isolation"), ["conversation.created"])
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    connection.set_schema_to_public()  # the test client's requests leave the connection in our schema
    other = workspace_with_owner(name="Other hooks")
    theirs = _api(host_client, other)
    assert theirs.get("/api/v1/webhooks/").json() == []
    for path in (f"/api/v1/webhooks/{endpoint['id']}/", f"/api/v1/webhooks/{endpoint['id']}/deliveries/",
                 f"/api/v1/webhooks/{endpoint['id']}/deliveries/{sent['id']}/"):
        assert theirs.get(path).status_code == 404
    for path in (f"/api/v1/webhooks/{endpoint['id']}/test/", f"/api/v1/webhooks/{endpoint['id']}/rotate-secret/",
                 f"/api/v1/webhooks/{endpoint['id']}/deliveries/{sent['id']}/redeliver/"):
        assert theirs.post(path).status_code == 404
    # Their key on our host is refused; their events reach none of our endpoints.
    key_on_our_host = host_client(ws.host, HTTP_AUTHORIZATION=theirs.defaults["HTTP_AUTHORIZATION"])
    assert key_on_our_host.get("/api/v1/webhooks/").status_code == 401
    before = _in(ws, lambda: WebhookDelivery.objects.count())
    _conversation_start(other)
    assert _in(ws, lambda: WebhookDelivery.objects.count()) == before
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_roles_and_the_dashboard_page(ws, hooks, receiver, host_client):
    from tests.factories import member

    agent = member(ws.workspace, "agent")
    agent_client = host_client(ws.host)
    agent_client.force_login(agent)
    assert agent_client.get("/api/v1/webhooks/").status_code == 403
    assert agent_client.get("/settings/webhooks/").status_code == 403
    reader = host_client(ws.host, HTTP_AUTHORIZATION=f"Api-Key {api_key_create(workspace=ws.workspace, name='r', scopes=['read'])[1]}")
    assert reader.get("/api/v1/webhooks/").status_code == 403
    # A write-only key may not read conversations, so it may not read them through webhook payloads either.
    writer = host_client(ws.host, HTTP_AUTHORIZATION=f"Api-Key {api_key_create(workspace=ws.workspace, name='w', scopes=['write'])[1]}")
    for method, path in (("get", "/api/v1/webhooks/"), ("post", "/api/v1/webhooks/")):
        refused = getattr(writer, method)(path, {"url": receiver.url("/ok/w"), "events": ["message.created"]},
                                          content_type="application/json")
        assert refused.status_code == 403 and refused.json()["error"]["details"]["permission"] == "conversations.view"
    assert _api(host_client, ws).get("/api/v1/webhooks/").status_code == 200  # read + write

    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    page = owner.post("/settings/webhooks/", {"action": "create", "url": receiver.url("/ok/page"),
                                              "events": ["conversation.created", "bogus"]})
    assert page.status_code == 200 and b'data-testid="webhook-secret"' in page.content
    endpoint = _in(ws, lambda: WebhookEndpoint.objects.get(url=receiver.url("/ok/page")))
    assert endpoint.events == ["conversation.created"]
    refused = owner.post("/settings/webhooks/", {"action": "create", "url": "http://10.0.0.1/",
                                                 "events": ["conversation.created"]})
    assert refused.status_code == 400 and b"private network" in refused.content
    assert owner.post("/settings/webhooks/", {"action": "test", "endpoint": endpoint.pk}).status_code == 302
    delivery = _delivery_settled(ws, endpoint_id=endpoint.pk, event_type="webhook.test")
    assert delivery.status == "delivered"
    listing = owner.get("/settings/webhooks/")
    assert b"webhook.test" in listing.content and b"delivered" in listing.content
    assert owner.post(f"/settings/webhooks/{endpoint.pk}/deliveries/{delivery.pk}/redeliver/").status_code == 302
    assert _delivery_settled(ws, redelivery_of_id=delivery.pk).status == "delivered"
    assert owner.post("/settings/webhooks/", {"action": "delete", "endpoint": endpoint.pk}).status_code == 302


def test_retention_forgets_the_deliveries_of_purged_conversations(ws, hooks, receiver, host_client):
    from datetime import timedelta

    from django.utils import timezone

    from chat.retention import conversations_purge_expired

    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/ok/retention"), ["conversation.created"])
    kept = _conversation_start(ws)
    _delivery_settled(ws, endpoint_id=endpoint["id"])
    purged = _conversation_start(ws)
    _delivery_settled(ws, endpoint_id=endpoint["id"], payload__data__conversation__id=str(purged.public_id))
    # Only `purged` is older than the rule when the purge runs "later": move the clock, not the rows.
    later = timezone.now() + timedelta(days=31)
    from chat.models import Conversation

    _in(ws, lambda: Conversation.objects.filter(pk=kept.pk).update(last_message_at=later))
    assert _in(ws, conversations_purge_expired, days=30, now=later) >= 1
    left = _in(ws, lambda: {d.payload["data"]["conversation"]["id"] for d in
                            WebhookDelivery.objects.filter(endpoint_id=endpoint["id"])})
    assert str(purged.public_id) not in left and str(kept.public_id) in left
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_an_attempt_in_flight_does_not_hold_up_other_deliveries_to_its_endpoint(ws, hooks, receiver, host_client,
                                                                               settings):
    """Two worker processes deliver to one endpoint at once: one attempt's lock must not make the other skip its
    delivery (a FOR UPDATE over the join with the endpoint did, and the skipped delivery stayed pending)."""
    from django.db import connections

    client = _api(host_client, ws)
    path = f"/ok/{secrets.token_hex(3)}"
    endpoint = _subscribe(client, receiver.url(path), ["conversation.closed"])
    settings.WEBHOOK_QUEUE = f"nobody_{secrets.token_hex(3)}"  # no worker takes it: this test attempts it here
    delivery = _in(ws, webhooks.webhook_test_send,
                   endpoint=_in(ws, webhooks.webhook_endpoint_get, endpoint_id=endpoint["id"]))
    locked = threading.Event()
    release = threading.Event()

    def hold_the_endpoint_row() -> None:  # what an attempt in flight in another process holds
        other = connections.create_connection("default")
        try:
            other.set_tenant(ws.workspace)
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT 1 FROM analytics_webhookendpoint WHERE id = %s FOR UPDATE", [endpoint["id"]])
                locked.set()
                release.wait(HUNG_AFTER_SECONDS)
                cursor.execute("ROLLBACK")
        finally:
            other.close()

    holder = threading.Thread(target=hold_the_endpoint_row)
    holder.start()
    try:
        assert locked.wait(HUNG_AFTER_SECONDS), "hung: the lock was never taken"
        status = _in(ws, webhooks.webhook_delivery_attempt, delivery_id=delivery.pk)
    finally:
        release.set()
        holder.join(HUNG_AFTER_SECONDS)
    assert status == "delivered", status
    assert _in(ws, lambda: WebhookDelivery.objects.get(pk=delivery.pk).status) == "delivered"
    assert len(receiver.of(path)) == 1
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_lead_captured_and_source_synced_are_delivered_and_erasure_forgets_them(ws, hooks, receiver, host_client):
    """The two events whose senders came last: a visitor's lead form (chat.signals.lead_captured, sent by
    conversation_lead_save) and the end of a website source's run (documents.events.source_synced, sent by the run's
    end); a visitor's erasure takes the deliveries that carry what they wrote."""
    from django.utils import timezone

    from chat.services import conversation_lead_save, conversation_start
    from chat.visitors import visitor_erase
    from documents import sources
    from documents.models import Source, SourceRun

    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/ok/lead-source"), ["lead.captured", "source.synced"])
    visitor_id = f"v-{secrets.token_hex(6)}"
    conversation = _in(ws, conversation_start, channel="widget", visitor_id=visitor_id, title="Lead")
    _in(ws, conversation_lead_save, conversation=conversation, stage="before_chat",
        values={"name": "Ada Lovelace", "email": "ada@example.test"})
    lead = _delivery_settled(ws, endpoint_id=endpoint["id"], event_type="lead.captured")
    assert lead.status == "delivered", lead.status
    assert lead.payload["data"]["lead"]["email"] == "ada@example.test"
    assert lead.payload["data"]["conversation"]["visitor_id"] == visitor_id

    def run_finish() -> int:
        source = Source.objects.create(url="https://help.example/", title="Help")
        run = SourceRun.objects.create(source=source, status="running", started_at=timezone.now(), fetched=3,
                                       indexed=2, unchanged=1)
        sources._run_finish(run, "completed")
        return run.pk

    run_id = _in(ws, run_finish)
    synced = _delivery_settled(ws, endpoint_id=endpoint["id"], event_type="source.synced")
    assert synced.status == "delivered", synced.status
    data = synced.payload["data"]
    assert data["run"]["id"] == run_id and data["run"]["status"] == "completed" and data["run"]["indexed"] == 2
    assert data["source"]["url"] == "https://help.example/"
    bodies = [json.loads(r["body"]) for r in receiver.wait_for("/ok/lead-source", 2)]
    assert {body["type"] for body in bodies} == {"lead.captured", "source.synced"}

    _in(ws, visitor_erase, workspace=ws.workspace, actor=ws.owner, visitor_id=visitor_id)
    left = _in(ws, lambda: list(WebhookDelivery.objects.filter(endpoint_id=endpoint["id"])
                                 .values_list("event_type", flat=True)))
    assert left == ["source.synced"], left
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_a_compressed_or_dripping_reply_is_cut_short_not_expanded_or_waited_for(ws, hooks, receiver, host_client):
    """A reply body is read raw (never decompressed: a small zstd or gzip frame can expand to gigabytes in a worker)
    and for at most the timeout (a receiver that drips a byte now and then never trips the per-read timeout)."""
    client = _api(host_client, ws)
    for path in ("/bomb", "/drip"):
        endpoint = _subscribe(client, receiver.url(path), ["conversation.created"])
        _conversation_start(ws)
        delivery = _delivery_settled(ws, endpoint_id=endpoint["id"])
        assert delivery.status == "delivered" and delivery.response_status == 200, (path, delivery.error)
        assert len(delivery.response_excerpt) <= webhooks.RESPONSE_EXCERPT_CHARS, path
        if path == "/drip":
            assert set(delivery.response_excerpt) <= {"."} and len(delivery.response_excerpt) < 120
        client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_headers_dripped_a_byte_at_a_time_end_the_attempt_at_its_timeout(ws, hooks, receiver, host_client):
    """The whole exchange is bounded, not only the body: a receiver that drips its header lines a byte every half
    second never trips the per-read timeout, so the attempt is cut at WEBHOOK_TIMEOUT_SECONDS (5 s in the module's
    worker) and retried, instead of holding a worker for the minute the receiver would go on."""
    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/slowheaders"), ["conversation.created"])
    _conversation_start(ws)
    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    while True:
        delivery = _in(ws, lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).first())
        if delivery is not None and delivery.error:
            break
        assert time.monotonic() < deadline, "hung: the attempt never ended"
        time.sleep(0.3)
    assert delivery.status == "retrying", (delivery.status, delivery.error)
    assert delivery.error == "The endpoint did not answer in time.", delivery.error
    assert delivery.response_status is None
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def test_an_attempt_is_counted_before_its_request_so_a_crash_mid_request_is_retried_and_bounded(
        ws, hooks, receiver, host_client, settings):
    """The attempt is claimed (counted and leased) in its own committed transaction before the request: a worker
    killed during the request leaves the count (so the retry window still ends the delivery) and a lease that stops
    duplicates while it runs; once the lease has passed, beat's due sweep sends the delivery again."""
    from datetime import timedelta

    from django.utils import timezone

    client = _api(host_client, ws)
    path = f"/ok/{secrets.token_hex(3)}"
    endpoint = _subscribe(client, receiver.url(path), ["conversation.closed"])
    settings.WEBHOOK_QUEUE = f"nobody_{secrets.token_hex(3)}"  # no worker takes it: this test attempts it here
    delivery = _in(ws, webhooks.webhook_test_send,
                   endpoint=_in(ws, webhooks.webhook_endpoint_get, endpoint_id=endpoint["id"]))
    claimed = _in(ws, webhooks._attempt_claim, delivery_id=delivery.pk)  # what a worker killed mid-request did
    assert not isinstance(claimed, str), claimed
    row = _in(ws, lambda: WebhookDelivery.objects.get(pk=delivery.pk))
    assert row.attempts == 1 and row.status == "pending" and row.next_attempt_at > timezone.now()
    # While the lease holds, a duplicate message does not send.
    assert _in(ws, webhooks.webhook_delivery_attempt, delivery_id=delivery.pk) == "pending"
    assert receiver.of(path) == []
    assert delivery.pk not in _in(ws, _due_ids)
    # The lease passes: the sweep finds it, and the next attempt is the second.
    _in(ws, lambda: WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)))
    assert delivery.pk in _in(ws, _due_ids)
    assert _in(ws, webhooks.webhook_delivery_attempt, delivery_id=delivery.pk) == "delivered"
    row = _in(ws, lambda: WebhookDelivery.objects.get(pk=delivery.pk))
    assert (row.attempts, row.status) == (2, "delivered")
    assert len(receiver.of(path)) == 1
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")


def _due_ids() -> list[int]:
    from django.utils import timezone

    return webhooks.webhook_deliveries_due_ids(now=timezone.now())


def test_a_workspace_has_at_most_webhook_endpoints_max_endpoints(ws, hooks, host_client, receiver, settings):
    """Every event fans out to each endpoint: their number is capped per workspace, with a stable 409 code."""
    client = _api(host_client, ws)
    existing = _in(ws, lambda: WebhookEndpoint.objects.count())
    settings.WEBHOOK_ENDPOINTS_MAX = existing + 1
    created = _subscribe(client, receiver.url("/ok/cap-1"), ["conversation.created"])
    response = client.post("/api/v1/webhooks/", {"url": receiver.url("/ok/cap-2"), "events": ["conversation.created"]},
                           content_type="application/json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "too_many_webhooks"
    assert response.json()["error"]["details"] == {"max": existing + 1}
    assert _in(ws, lambda: WebhookEndpoint.objects.count()) == existing + 1
    client.delete(f"/api/v1/webhooks/{created['id']}/")
    again = _subscribe(client, receiver.url("/ok/cap-2"), ["conversation.created"])
    client.delete(f"/api/v1/webhooks/{again['id']}/")


def test_an_event_still_in_the_broker_when_its_conversation_is_erased_is_not_written(ws, hooks, receiver,
                                                                                   host_client, settings):
    """Fan-out runs in the worker after the sender's commit: a visitor erased in between must not get a fresh
    delivery row holding a copy of what they wrote. The same event for a conversation that still exists is."""
    import uuid

    from chat.models import Conversation
    from chat.visitors import visitor_erase

    client = _api(host_client, ws)
    endpoint = _subscribe(client, receiver.url("/ok/late"), ["message.created"])
    settings.WEBHOOK_QUEUE = f"nobody_{secrets.token_hex(3)}"  # nothing is attempted: only the rows are looked at
    visitor_id = f"v-{secrets.token_hex(6)}"
    conversation = _in(ws, lambda: Conversation.objects.create(channel="widget", visitor_id=visitor_id))

    def envelope() -> dict[str, Any]:
        return webhooks._envelope(event_id=uuid.uuid4(), event_type="message.created", data={
            "conversation": {"id": str(conversation.public_id), "visitor_id": visitor_id},
            "message": {"content": "my card number is …"}})

    kept = _in(ws, webhooks.webhook_event_fan_out, envelope=envelope(), endpoint_ids=[endpoint["id"]])
    assert len(kept) == 1
    late = envelope()  # queued before the erasure, fanned out after it
    _in(ws, visitor_erase, workspace=ws.workspace, actor=ws.owner, visitor_id=visitor_id)
    assert _in(ws, webhooks.webhook_event_fan_out, envelope=late, endpoint_ids=[endpoint["id"]]) == []
    assert _in(ws, lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).count()) == 0
    client.delete(f"/api/v1/webhooks/{endpoint['id']}/")
