"""`manage.py ask` per the operator contract in PRODUCT.md, run as a real process against the test database."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.db import connection

from tests.chat.knowledge import ROUTER_DOCS, knowledge_workspace
from tests.live import BASE_DIR, process_env

RECORD_KEYS = {"id", "answer", "answered", "citations", "timings_ms", "curated_answer_id"}
# quoted: the answer's [n] markers cite it (those come first); url: the page of a web-imported document, else null
CITATION_KEYS = {"document_id", "title", "filename", "section", "page", "snippet", "score", "quoted", "url"}


@pytest.fixture(scope="module")
def kb(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return knowledge_workspace("Ask KB", ROUTER_DOCS)


def manage(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=process_env(connection.settings_dict),
        capture_output=True, text=True, timeout=180, input=stdin,
    )


def test_single_question_prints_one_json_object(kb):
    result = manage("ask", "--workspace", kb.workspace.slug, "How do I reset my router to factory settings?", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # JSON and nothing else on stdout
    assert set(record) == RECORD_KEYS and record["id"] is None
    assert record["answered"] is True and "Reset button" in record["answer"]
    assert record["citations"] and all(set(c) == CITATION_KEYS for c in record["citations"])
    first = record["citations"][0]
    assert first["title"] == "Resetting the router" and first["filename"] == "Resetting the router.md"
    assert isinstance(first["document_id"], int) and 0 < first["score"] <= 1 and first["snippet"]
    assert set(record["timings_ms"]) == {"retrieval", "first_token", "total"}
    assert record["curated_answer_id"] is None  # from the knowledge base


def test_citations_keep_the_order_the_customer_sees(kb):
    import re

    from chat.answering import answer_once
    from django_tenants.utils import tenant_context

    question = "How long do I have to get a refund, and how do I update the firmware?"
    result = manage("ask", "--workspace", kb.workspace.slug, question, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    with tenant_context(kb.workspace):
        shown = answer_once(question=question, history=[])  # what the widget and the dashboard show, in order
    assert record["answer"] == shown["answer"]
    assert [(c["document_id"], c["section"], c["quoted"]) for c in record["citations"]] == \
        [(c["document_id"], c["section"], c["quoted"]) for c in shown["citations"]]
    quoted = [c for c in record["citations"] if c["quoted"]]
    assert len(quoted) >= 2 and record["citations"][:len(quoted)] == quoted and len(record["citations"]) <= 5
    markers = list(dict.fromkeys(int(n) for n in re.findall(r"\[(\d+)\]", record["answer"])))
    assert markers == list(range(1, len(quoted) + 1))  # [1] is citations[0]


def test_file_prints_json_lines_in_order(kb, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join([
        json.dumps({"id": "q1", "question": "How do I change the Wi-Fi password?"}),
        json.dumps({"id": "q2", "question": "Who won the 1998 World Cup?"}),
        "",
        json.dumps({"id": 3, "question": "and how long does it take?",
                    "history": [["customer", "How do I update the firmware?"]]}),
    ]) + "\n")
    result = manage("ask", "--workspace", kb.workspace.slug, "--file", str(questions), "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["q1", "q2", 3]
    assert all(set(r) == RECORD_KEYS for r in records)
    wifi, world_cup, follow_up = records
    assert wifi["answered"] is True and wifi["citations"][0]["title"] == "Wi-Fi setup"
    assert world_cup["answered"] is False and world_cup["citations"] == []
    assert follow_up["answered"] is True and "four minutes" in follow_up["answer"]


def test_bad_lines_get_an_error_record_and_exit_status_1(kb):
    lines = "\n".join([json.dumps({"id": "ok", "question": "How do I set up port forwarding?"}), "not json",
                       json.dumps({"id": "empty", "question": "  "})]) + "\n"
    result = manage("ask", "--workspace", kb.workspace.slug, "--file", "-", "--json", stdin=lines)
    assert result.returncode == 1
    ok, broken, empty = [json.loads(line) for line in result.stdout.splitlines()]
    assert ok["answered"] is True and ok["id"] == "ok"
    assert broken["error"]["code"] == "malformed_request" and broken["error"]["details"] == {"line": 2}
    assert empty["id"] == "empty" and empty["error"]["code"] == "invalid"


def test_unknown_workspace_is_an_error_in_the_one_shape():
    result = manage("ask", "--workspace", "no-such-workspace", "Hello?", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "workspace_not_found"


def test_question_and_file_together_are_refused(kb, tmp_path):
    result = manage("ask", "--workspace", kb.workspace.slug, "--file", str(tmp_path / "x.jsonl"), "Hi?", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["error"]["code"] == "invalid"


def test_human_output_lists_sources(kb):
    result = manage("ask", "--workspace", kb.workspace.slug, "How do I forward a port to my camera?")
    assert result.returncode == 0, result.stderr
    assert "[1] Port forwarding" in result.stdout and "answered;" in result.stdout


def test_a_curated_answer_is_reported_by_its_id(kb):
    from django_tenants.utils import tenant_context

    from documents import curated

    with tenant_context(kb.workspace):
        made = curated.curated_answer_create(question="Can I return a router I opened?",
                                             answer="Yes, within 30 days, opened or not.")
    try:
        result = manage("ask", "--workspace", kb.workspace.slug, "Can I return a router I opened?", "--json")
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert set(record) == RECORD_KEYS and record["curated_answer_id"] == made.pk
        assert record["answered"] is True and record["answer"] == "Yes, within 30 days, opened or not."
        [citation] = record["citations"]
        assert set(citation) == CITATION_KEYS and citation["title"] == "Answer from the team"
        assert citation["document_id"] is None
        other = json.loads(manage("ask", "--workspace", kb.workspace.slug, "How do I set up port forwarding?",
                                  "--json").stdout)
        assert other["curated_answer_id"] is None and other["citations"][0]["document_id"] is not None
    finally:
        with tenant_context(kb.workspace):
            curated.curated_answer_delete(curated=curated.curated_answer_get(curated_answer_id=made.pk))
