"""`manage.py ask --workspace acme "question"` or `--file questions.jsonl`: answer questions as a customer would get
them (retrieval, the workspace's providers and fallbacks, grounding), one JSON object per question with `--json`
(JSON Lines for `--file`), per the operator contract in PRODUCT.md:

    {"id", "answer", "answered", "citations": [{"document_id", "title", "filename", "section", "page", "snippet",
     "score", "quoted", "url"}], "timings_ms": {"retrieval", "first_token", "total"}, "curated_answer_id": <id or null>}

`citations` are in the order the customer sees them: the quoted ones first, in the order of their [n] markers ([1] is
citations[0]), then the sources that support the answer (`quoted: false`); `url` is the web page of an imported or
crawled document, else null (docs/answers.md "Citations").

`curated_answer_id` names the curated answer served (issue #17), null when the answer came from the knowledge base.

`--file` lines are {"id", "question"} (optionally "history": [[role, text], ...]); `--file -` reads standard input.
A line that cannot be read gets {"id", "error": {...}} and the command exits with status 1 after the others.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

from django.core.management.base import CommandParser
from django.db import connection

from chat.answering import answer_once
from config.commands import OperatorCommand
from config.errors import ApplicationError, ErrorCode, NotFound, ValidationFailed
from tenants.selectors import workspace_get

CITATION_FIELDS = ("document_id", "title", "filename", "section", "page", "snippet", "score", "quoted", "url")


class Command(OperatorCommand):
    help = "Ask the workspace's assistant a question (or a JSON Lines file of questions)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--file", default=None, help='JSON Lines of {"id", "question"}; "-" for stdin.')
        parser.add_argument("--id", default=None, help="Id to report for a single question.")
        parser.add_argument("question", nargs="?", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["question"]) == bool(options["file"]):
            raise ValidationFailed("Give either a question or --file, not both and not neither.")
        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"No workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND,
                           details={"slug": options["workspace"]})
        connection.set_tenant(workspace)
        try:
            if options["question"]:
                record = _answer(options["id"], options["question"], [])
                self.emit(record, _human(record))
                return
            failed = 0
            for record in self._records(options["file"]):
                failed += "error" in record
                if self.as_json:
                    self.emit_line(record)
                else:
                    self.stdout.write(_human(record) + "\n")
        finally:
            connection.set_schema_to_public()
        if failed:
            sys.exit(1)

    def _records(self, path: str) -> Iterator[dict[str, Any]]:
        handle = sys.stdin if path == "-" else _open(path)
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise ValueError
                except ValueError:
                    yield {"id": None, "line": number,
                           "error": {"code": ErrorCode.MALFORMED_REQUEST.value, "message": "Not a JSON object.",
                                     "details": {"line": number}}}
                    continue
                question_id = item.get("id", number)
                try:
                    yield _answer(question_id, item.get("question"), item.get("history") or [])
                except ApplicationError as error:
                    yield {"id": question_id, **error.as_dict()}
        finally:
            if handle is not sys.stdin:
                handle.close()


def _open(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as error:
        raise NotFound(f"Cannot read {path}: {error.strerror}.", details={"path": path}) from None


def _answer(question_id: Any, question: Any, history: Any) -> dict[str, Any]:
    if not isinstance(question, str) or not question.strip():
        raise ValidationFailed("The question is missing or empty.", details={"field": "question"})
    turns = [(str(turn[0]), str(turn[1])) for turn in history if isinstance(turn, (list, tuple)) and len(turn) == 2]
    data = answer_once(question=question, history=turns)
    return {
        "id": question_id,
        "answer": data["answer"],
        "answered": data["answered"],
        "citations": [{key: citation.get(key) for key in CITATION_FIELDS} for citation in data["citations"]],
        "timings_ms": data["timings_ms"],
        # The curated answer served (documents.curated), or None when the answer came from the knowledge base.
        "curated_answer_id": data.get("curated_answer_id"),
    }


def _human(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"[{record.get('id')}] error ({record['error']['code']}): {record['error']['message']}"
    lines = [record["answer"], ""]
    for number, citation in enumerate(record["citations"], start=1):
        where = " › ".join(part for part in (citation["title"], citation["section"]) if part)
        page = f", page {citation['page']}" if citation.get("page") else ""
        seen = "" if citation.get("quoted") else ", supporting"
        lines.append(f"  [{number}] {where}{page} ({citation['filename']}, score {citation['score']}{seen})")
    status = "answered" if record["answered"] else "declined"
    lines.append(f"  ({status}; {record['timings_ms']['total']} ms)")
    prefix = f"[{record['id']}] " if record.get("id") is not None else ""
    return prefix + "\n".join(lines)
