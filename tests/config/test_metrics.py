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
    scraped_before = host_client("localhost").get("/metrics").content.decode()
    with schema_context(tenant.workspace.schema_name):
        completed = answer_once(question="What is the warranty on the flux capacitor?")
        credits_consume(workspace=tenant.workspace, amount=1, reason="answer", reference=f"metrics-test:{id(completed)}")
    text = host_client("localhost").get("/metrics").content.decode()
    provider = completed["provider"]
    assert provider == "builtin"
    total = _sample(text, "ccgpt_answers_total", outcome="declined", provider="builtin") + _sample(
        text, "ccgpt_answers_total", outcome="answered", provider="builtin")
    assert total == before + 1
    # Exact increments: one answer is one observation of each of its stages, one credit is one credit.
    for stage in completed["timings_ms"]:
        assert _sample(text, "ccgpt_answer_stage_seconds_count", provider="builtin", stage=stage) == _sample(
            scraped_before, "ccgpt_answer_stage_seconds_count", provider="builtin", stage=stage) + 1, stage
    assert _sample(text, "ccgpt_credits_consumed_total", reason="answer") == _sample(
        scraped_before, "ccgpt_credits_consumed_total", reason="answer") + 1


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
                   task="config.ping_schema") == before + 1  # exactly the one task this test sent
    assert _sample(text, "ccgpt_background_metrics_up") == 1
    assert 'ccgpt_queue_depth{queue="default"}' in text and 'ccgpt_queue_depth{queue="ingest"}' in text


def test_ingestion_stage_times_come_from_the_workers(live_server, tenant, settings, django_db_blocker):
    """A document indexed by a real worker adds exactly one observation to every stage it went through. The worker
    consumes a queue of this test's own, so no other document of the run can add to its series."""
    import secrets
    import time

    from tests.documents.test_pipeline import add_file, dedicated_worker, manual_text, wait_settled

    queue = f"ingest_metrics_{secrets.token_hex(3)}"
    settings.DOCUMENT_QUEUE = queue

    def embeds(text: str) -> float:
        return _sample(text, "ccgpt_ingest_stage_seconds_count", queue=queue, stage="embed")

    before = _scrape(live_server)
    with django_db_blocker.unblock(), dedicated_worker("metrics", queue) as worker:
        document_id = add_file(tenant.workspace, "metrics-stages.md",
                               manual_text(title="Stage metrics", sections=2, paragraphs=3, seed=5).encode())
        assert wait_settled(tenant.workspace, document_id).status == "indexed", worker.log_tail()
    deadline = time.monotonic() + 10
    text = _scrape(live_server)
    while embeds(text) < embeds(before) + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        text = _scrape(live_server)
    for stage in ("parse", "chunk", "embed", "index", "queue_wait"):
        assert _sample(text, "ccgpt_ingest_stage_seconds_count", queue=queue, stage=stage) == \
            _sample(before, "ccgpt_ingest_stage_seconds_count", queue=queue, stage=stage) + 1, stage
    assert _sample(text, "ccgpt_ingest_stage_seconds_count", queue=queue, stage="fetch") == 0  # a file: no fetch
    assert _sample(text, "ccgpt_ingest_stage_seconds_bucket", le="+Inf", queue=queue, stage="embed") == embeds(text)
    assert _sample(text, "ccgpt_task_duration_seconds_count", queue=queue, state="SUCCESS",
                   task="documents.ingest") == 1


# --- label cardinality -----------------------------------------------------------------------------------------------
def _http_series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith("ccgpt_http_requests_total{")}


def test_unmatched_paths_and_odd_methods_share_one_label(tenant, host_client):
    """Every 404 is one series (route="<unmatched>"), whatever the path or host; an unknown method is "other"."""
    import secrets

    scraper = host_client("localhost")
    before = _http_series(scraper.get("/metrics").content.decode())
    probes = [f"/probe-{secrets.token_hex(6)}/{secrets.token_hex(4)}" for _ in range(50)]
    for index, path in enumerate(probes):
        client = host_client(tenant.host if index % 2 else "localhost")
        assert client.get(path).status_code == 404
        assert client.generic(f"X{secrets.token_hex(3).upper()}", path).status_code in (404, 405)
    text = scraper.get("/metrics").content.decode()
    assert not any(path.split("/")[1] in text for path in probes)
    grown = _http_series(text) - before
    assert len(grown) <= 4, sorted(grown)
    assert all(('route="<unmatched>"' in series or 'route="/metrics"' in series) for series in grown), sorted(grown)
    assert not any("X" in series.split('method="')[1][:2] for series in _http_series(text) if 'method="' in series)


def test_websocket_labels_are_route_patterns_whatever_the_client_sends(live_server, tenant, django_db_blocker):
    """Refused sockets (any path on the public host), short ids and made-up frame types add no series."""
    import json
    import secrets

    from websockets.exceptions import ConnectionClosed

    from tests.config.test_websocket import EVENTS_PATH, session_cookie

    with django_db_blocker.unblock():
        cookie = session_cookie(tenant.owner)
    tokens = [f"probe{secrets.token_hex(5)}" for _ in range(10)]
    for token in tokens[:5]:
        with live_server.ws_connect("localhost", f"/ws/{token}/") as socket:
            try:
                socket.recv(timeout=10)
            except ConnectionClosed:
                pass
    with live_server.ws_connect(tenant.host, EVENTS_PATH, additional_headers={"Cookie": cookie}) as socket:
        for token in tokens[5:]:
            socket.send(json.dumps({"type": token[:24]}))
        socket.send(json.dumps({"type": "ping"}))
        deadline_frames = 20
        while deadline_frames and json.loads(socket.recv(timeout=10)).get("type") != "pong":
            deadline_frames -= 1
        text = _scrape(live_server)
        assert _sample(text, "ccgpt_websocket_connections", route=EVENTS_PATH) >= 1
    assert not any(token in text for token in tokens)
    assert _sample(text, "ccgpt_websocket_events_total", direction="in", route=EVENTS_PATH, type="other") >= 5


# --- the documented metrics and alerts (docs/operations.md) ----------------------------------------------------------
def _documented_metrics() -> tuple[dict[str, tuple[str, set[str]]], list[str]]:
    """The Metrics table (name -> (type, label names)) and the `expr:` lines of the example alerts."""
    import re

    from tests.live import BASE_DIR

    doc = (BASE_DIR / "docs" / "operations.md").read_text()
    table = {}
    for name, kind, labels in re.findall(r"^\| `(ccgpt_\w+)` \| (\w+) \| ([^|]+) \|", doc, re.MULTILINE):
        names = {label.strip() for label in re.sub(r"\(.*?\)", "", labels).split(",")} - {"—", ""}
        table[name] = (kind, names)
    alerts = doc.split("### Example alerts", 1)[1].split("```", 2)[1]
    return table, re.findall(r"^\s*expr: (.+)$", alerts, re.MULTILINE)


def test_every_series_the_documented_alerts_use_exists_with_its_labels(live_server, celery_worker, tenant):
    """An alert on a renamed metric or label never fires and says nothing: every metric and label an example alert
    names is in the documented table, and every documented family is served by the real server with its type and
    exactly its labels."""
    import re
    import secrets

    from django_tenants.utils import schema_context
    from prometheus_client.parser import text_string_to_metric_families

    from config.tasks import ping_schema
    from tests.config.test_celery import wait_for_report

    table, expressions = _documented_metrics()
    assert len(table) >= 12 and len(expressions) >= 7, (sorted(table), expressions)
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("",), "gauge": ("",)}
    for expr in expressions:
        for metric, matchers in re.findall(r"(ccgpt_\w+)(?:\{([^}]*)\})?", expr):
            family = next((name for name, (kind, _) in table.items()
                           if any(metric == name + suffix for suffix in suffixes[kind])), None)
            assert family, f"alert `{expr}` uses {metric}, which is not a documented series"
            used = set(re.findall(r"(\w+)\s*=~?", matchers or "")) | set(re.findall(r"by \((\w+)\)", expr))
            assert used - {"le"} <= table[family][1], (expr, used, table[family])

    token = secrets.token_hex(8)  # one task, so the workers' task histogram has a series
    with schema_context(tenant.workspace.schema_name):
        ping_schema.delay(token)
    assert wait_for_report(tenant.workspace.schema_name, token) is not None, celery_worker.log_tail()
    served = {family.name: family for family in text_string_to_metric_families(_scrape(live_server))}
    for name, (kind, labels) in table.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert family_name in served, f"{name} is documented but not served"
        assert served[family_name].type == kind, (name, served[family_name].type)
        for sample in served[family_name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
