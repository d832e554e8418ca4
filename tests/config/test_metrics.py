"""/metrics: Prometheus text on the public host, HTTP latency by route pattern, nothing secret."""
from __future__ import annotations

from django.test import override_settings


def test_metrics_expose_latency_by_route_pattern(tenant, host_client):
    client = host_client(tenant.host)
    client.force_login(tenant.owner)
    assert client.get("/team/").status_code == 200
    response = host_client("localhost").get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'ccgpt_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/team/",status="2xx"}' in text
    # Labels are patterns, never concrete paths or hosts.
    assert tenant.workspace.slug not in text and tenant.owner.email not in text


def test_metrics_are_not_served_on_workspace_hosts(tenant, host_client):
    assert host_client(tenant.host).get("/metrics").status_code == 404


@override_settings(METRICS_REQUIRE_TOKEN=True, OPS_TOKEN="ops-secret-token")
def test_metrics_can_require_the_ops_token(host_client):
    client = host_client("localhost")
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_X_OPS_TOKEN="ops-secret-token").status_code == 200


# --- WebSocket, answers, credits, Celery tasks and queues ----------------------------------------------------------
def _scrape(live_server) -> str:
    response = live_server.request("GET", "localhost", "/metrics")
    assert response.status_code == 200, response.text[:300]
    return response.text


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample, 0 when absent (label order as prometheus_client prints them: sorted)."""
    import re

    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{label_text}}}" if labels else name) + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_websocket_connections_and_frames_are_counted_by_route(live_server, tenant, django_db_blocker):
    import json

    from tests.config.test_websocket import EVENTS_PATH, session_cookie

    with django_db_blocker.unblock():
        cookie = session_cookie(tenant.owner)
    before = _scrape(live_server)
    sent_before = _sample(before, "ccgpt_websocket_events_total", direction="in", route=EVENTS_PATH, type="ping")
    with live_server.ws_connect(tenant.host, EVENTS_PATH, additional_headers={"Cookie": cookie}) as socket:
        socket.send(json.dumps({"type": "ping"}))
        socket.recv(timeout=10)
        during = _scrape(live_server)
        assert _sample(during, "ccgpt_websocket_connections", route=EVENTS_PATH) >= 1
        assert _sample(during, "ccgpt_websocket_events_total", direction="in", route=EVENTS_PATH,
                       type="ping") == sent_before + 1
    # The gauge comes back down once the socket is closed (the server notices the close asynchronously).
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _sample(_scrape(live_server), "ccgpt_websocket_connections", route=EVENTS_PATH) == 0:
            break
        time.sleep(0.2)
    assert _sample(_scrape(live_server), "ccgpt_websocket_connections", route=EVENTS_PATH) == 0
    assert tenant.workspace.slug not in _scrape(live_server)


def test_answers_and_credits_are_counted(tenant, host_client):
    from django_tenants.utils import schema_context

    from chat.answering import answer_once
    from config.metrics import ANSWERS
    from tenants.billing import credits_consume

    before = ANSWERS.labels("builtin", "declined")._value.get() + ANSWERS.labels("builtin", "answered")._value.get()
    with schema_context(tenant.workspace.schema_name):
        completed = answer_once(question="What is the warranty on the flux capacitor?")
        credits_consume(workspace=tenant.workspace, amount=1, reason="answer", reference=f"metrics-test:{id(completed)}")
    text = host_client("localhost").get("/metrics").content.decode()
    provider = completed["provider"]
    assert provider == "builtin"
    total = _sample(text, "ccgpt_answers_total", outcome="declined", provider="builtin") + _sample(
        text, "ccgpt_answers_total", outcome="answered", provider="builtin")
    assert total == before + 1
    assert _sample(text, "ccgpt_answer_stage_seconds_count", provider="builtin", stage="total") >= 1
    assert _sample(text, "ccgpt_credits_consumed_total", reason="answer") >= 1


def test_task_durations_and_queue_depth_come_from_the_workers(live_server, celery_worker, tenant):
    import secrets
    import time

    from django_tenants.utils import schema_context

    from config.tasks import ping_schema
    from tests.config.test_celery import wait_for_report

    schema = tenant.workspace.schema_name
    before = _sample(_scrape(live_server), "ccgpt_task_duration_seconds_count", queue="default", state="SUCCESS",
                     task="config.ping_schema")
    token = secrets.token_hex(8)
    with schema_context(schema):
        ping_schema.delay(token)
    assert wait_for_report(schema, token) is not None, celery_worker.log_tail()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = _scrape(live_server)
        if _sample(text, "ccgpt_task_duration_seconds_count", queue="default", state="SUCCESS",
                   task="config.ping_schema") >= before + 1:
            break
        time.sleep(0.2)
    assert _sample(text, "ccgpt_task_duration_seconds_count", queue="default", state="SUCCESS",
                   task="config.ping_schema") >= before + 1
    assert _sample(text, "ccgpt_background_metrics_up") == 1
    assert 'ccgpt_queue_depth{queue="default"}' in text and 'ccgpt_queue_depth{queue="ingest"}' in text


def test_ingestion_stage_times_come_from_the_workers(live_server, celery_worker, tenant):
    """A document indexed by the real worker adds one observation to every stage it went through."""
    import time

    from tests.documents.test_pipeline import add_file, manual_text, wait_settled

    def embeds(text: str) -> float:
        return _sample(text, "ccgpt_ingest_stage_seconds_count", queue="ingest", stage="embed")

    before = _scrape(live_server)
    document_id = add_file(tenant.workspace, "metrics-stages.md",
                           manual_text(title="Stage metrics", sections=2, paragraphs=3, seed=5).encode())
    assert wait_settled(tenant.workspace, document_id).status == "indexed", celery_worker.log_tail()
    deadline = time.monotonic() + 10
    text = _scrape(live_server)
    while embeds(text) < embeds(before) + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        text = _scrape(live_server)
    for stage in ("parse", "chunk", "embed", "index", "queue_wait"):
        assert _sample(text, "ccgpt_ingest_stage_seconds_count", queue="ingest", stage=stage) >= \
            _sample(before, "ccgpt_ingest_stage_seconds_count", queue="ingest", stage=stage) + 1, stage
    assert _sample(text, "ccgpt_ingest_stage_seconds_bucket", le="+Inf", queue="ingest", stage="embed") == embeds(text)
