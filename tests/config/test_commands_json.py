"""The operator contract (PRODUCT.md): with `--json`, stdout holds the command's JSON and nothing else, whatever mail,
logs or warnings the command causes. Every command that takes `--json` runs here as a real process on the test
database, with the console mail backend (mail on stdout is how the contract broke) and its stdout parsed as JSON."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import get_commands, load_command_class
from django.db import connection

from tests.factories import workspace_with_owner
from tests.live import BASE_DIR, process_env

CONSOLE_MAIL = "django.core.mail.backends.console.EmailBackend"
OUR_APPS = {"tenants", "accounts", "documents", "chat", "embeds", "analytics"}


def noisy_env() -> dict[str, str]:
    """The test subprocess environment, with mail printed by the console backend and chatty logs and warnings."""
    return process_env(connection.settings_dict, EMAIL_BACKEND=CONSOLE_MAIL, LOG_LEVEL="INFO",
                       PYTHONWARNINGS="default")


def manage_json(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args, "--json"], cwd=BASE_DIR, env=noisy_env(),
                          capture_output=True, text=True, timeout=300, input=stdin)


def only_json(result: subprocess.CompletedProcess, *, lines: bool = False) -> Any:
    """stdout parsed as one JSON document (or JSON Lines); anything else on it fails with both streams shown."""
    try:
        if lines:
            return [json.loads(line) for line in result.stdout.splitlines()]
        return json.loads(result.stdout)
    except ValueError as error:
        raise AssertionError(f"stdout is not JSON only ({error}):\n--- stdout\n{result.stdout}\n--- stderr\n"
                             f"{result.stderr[-3000:]}") from None


def slug() -> str:
    return f"json-{secrets.token_hex(4)}"


# --- the mechanism: everything that writes to stdout while a command runs ends up on stderr ---------------------

NOISY_COMMAND = """
import logging, os, subprocess, sys, warnings
import django
django.setup()
from django.core.mail import send_mail
from config.commands import OperatorCommand
from config.errors import ApplicationError

early = logging.StreamHandler(sys.stdout)  # made before the command runs: it holds the real stdout object
logging.getLogger("noisy").addHandler(early)
ending = sys.argv[1]

class Command(OperatorCommand):
    requires_system_checks = []

    def handle(self, *args, **options):
        print("noise: print")
        self.stdout.write("noise: self.stdout")
        os.write(1, b"noise: file descriptor 1\\n")
        subprocess.run([sys.executable, "-c", "print('noise: child process')"], check=True)
        logging.getLogger("noisy").warning("noise: logging")
        warnings.warn("noise: warning")
        send_mail("noise: mail subject", "noise: mail body", None, ["someone@example.test"])
        if ending == "emit":
            self.emit({"ok": True}, "human")
        elif ending == "lines":
            self.emit_line({"n": 1})
            print("noise: between lines")
            self.emit_line({"n": 2})
        elif ending == "error":
            raise ApplicationError("refused", code="invalid", details={"why": "test"})
        else:
            raise RuntimeError("a bug")

Command().run_from_argv(["manage.py", "noisy", "--json"])
"""
NOISE = ["noise: print", "noise: self.stdout", "noise: file descriptor 1", "noise: child process", "noise: logging",
         "noise: warning", "noise: mail subject"]


@pytest.mark.parametrize("ending, status, expected", [
    ("emit", 0, '{"ok": true}\n'),
    ("lines", 0, '{"n": 1}\n{"n": 2}\n'),
    ("error", 1, '{"error": {"code": "invalid", "message": "refused", "details": {"why": "test"}}}\n'),
    ("bug", 1, '{"error": {"code": "server_error", "message": "The command failed unexpectedly; the traceback is on '
               'stderr.", "details": {"exception": "RuntimeError"}}}\n'),
])
def test_json_is_all_that_reaches_stdout(ending, status, expected):
    result = subprocess.run([sys.executable, "-c", NOISY_COMMAND, ending], cwd=BASE_DIR, env=noisy_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == status, result.stderr[-3000:]
    assert result.stdout == expected, result.stderr[-3000:]
    missing = [marker for marker in NOISE if marker not in result.stderr]
    assert not missing, f"{missing} not on stderr:\n{result.stderr[-3000:]}"
    if ending == "bug":
        assert "RuntimeError: a bug" in result.stderr  # the traceback stays available to the operator


# --- every operator command -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ws(django_db_setup, django_db_blocker):
    """A free-plan workspace (one widget allowed) of its own, and an export archive of another one."""
    with django_db_blocker.unblock():
        return workspace_with_owner(name="JSON Contract Co")


@pytest.fixture(scope="module")
def archive(ws, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("json-contract") / "export.tar.gz"
    only_json(manage_json("export_workspace", "--workspace", ws.workspace.slug, "--output", str(path)))
    return path


def test_create_embed_at_the_widget_limit_mails_the_owner_on_stderr_and_prints_json_only(ws):
    # The free plan's one widget: creating it reaches 80 % and 100 % at once, so two plan alerts are mailed.
    result = manage_json("create_embed", "--workspace", ws.workspace.slug, "--name", "site", "--origin",
                         "https://shop.example")
    assert result.returncode == 0, result.stderr[-3000:]
    embed = only_json(result)
    assert embed["public_key"] and embed["allowed_origins"] == ["https://shop.example"]
    assert "you have reached your plan's limit of widgets" in result.stderr  # the mail was sent: on stderr
    assert ws.owner.email in result.stderr

    refused = manage_json("create_embed", "--workspace", ws.workspace.slug, "--name", "two", "--origin",
                          "https://shop.example")
    assert refused.returncode == 1 and only_json(refused)["error"]["code"] == "plan_limit"


CASES: dict[str, Any] = {
    "list_workspaces": lambda ws, tmp: ["list_workspaces"],
    "create_api_key": lambda ws, tmp: ["create_api_key", "--workspace", ws.workspace.slug, "--name", "ci"],
    "ingest": lambda ws, tmp: ["ingest", "--workspace", ws.workspace.slug, str(_text_file(tmp))],
    "reindex": lambda ws, tmp: ["reindex", "--workspace", ws.workspace.slug],
    # Queued only (no --wait): a host that does not resolve here is accepted and fails in the worker, with a reason.
    "crawl": lambda ws, tmp: ["crawl", "--workspace", ws.workspace.slug, "https://docs.example/help/", "--max-pages",
                              "5", "--exclude", "/blog/*", "--every", "weekly"],
    "sync_sources": lambda ws, tmp: ["sync_sources", "--workspace", ws.workspace.slug],
    "failed_jobs": lambda ws, tmp: ["failed_jobs", "--workspace", ws.workspace.slug],
    "ask": lambda ws, tmp: ["ask", "--workspace", ws.workspace.slug, "How do I reset my password?"],
    "usage_report": lambda ws, tmp: ["usage_report", "--workspace", ws.workspace.slug],
    "grant_credits": lambda ws, tmp: ["grant_credits", "--workspace", ws.workspace.slug, "--amount", "5", "--reason",
                                      "json contract"],
    "rebuild_analytics": lambda ws, tmp: ["rebuild_analytics", "--workspace", ws.workspace.slug],
    "export_workspace": lambda ws, tmp: ["export_workspace", "--workspace", ws.workspace.slug, "--output",
                                         str(tmp / "again.tar.gz")],
    "seed_demo": lambda ws, tmp: ["seed_demo", "--slug", slug()],
    "setup_platform": lambda ws, tmp: ["setup_platform", "--pool", "0"],
    "migrate_schemas": lambda ws, tmp: ["migrate_schemas", "--noinput", "--no-template-refresh"],
}
# Covered by their own tests below (they need more than one invocation or a prepared input).
SPECIAL = {"create_embed", "create_workspace", "delete_workspace", "import_workspace", "ask --file"}


def _text_file(folder: Path) -> Path:
    path = folder / "contract.md"
    path.write_text("# Contract\n\nWith --json, standard output holds JSON and nothing else.\n")
    return path


@pytest.mark.parametrize("command", sorted(CASES))
def test_every_command_prints_only_json(command, ws, tmp_path):
    result = manage_json(*CASES[command](ws, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_json(result) is not None


def test_create_and_delete_workspace_print_only_json():
    name = slug()
    created = manage_json("create_workspace", "--slug", name, "--name", "JSON Co", "--owner-email",
                          f"{name}@example.test", "--plan", "pro")
    assert created.returncode == 0, created.stderr[-3000:]
    assert only_json(created)["owner_password"]
    deleted = manage_json("delete_workspace", "--slug", name, "--yes")
    assert deleted.returncode == 0, deleted.stderr[-3000:]
    assert only_json(deleted)["deleted"] == name


def test_import_workspace_prints_only_json(archive):
    name = slug()
    result = manage_json("import_workspace", "--archive", str(archive), "--slug", name, "--owner-email",
                         f"{name}@example.test")
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_json(result)["slug"] == name


def test_ask_file_prints_json_lines_only(ws, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": "How do I reset my password?"}) + "\nnot json\n")
    result = manage_json("ask", "--workspace", ws.workspace.slug, "--file", str(questions))
    records = only_json(result, lines=True)
    assert [record["id"] for record in records] == ["a", None] and records[1]["error"]["code"] == "malformed_request"
    assert result.returncode == 1


def test_errors_are_json_only_too():
    result = manage_json("usage_report", "--workspace", "no-such-workspace")
    assert result.returncode == 1 and only_json(result)["error"]["code"] == "workspace_not_found"


def test_every_command_with_json_is_covered_and_built_on_the_mechanism():
    """A new command with --json must join CASES (or SPECIAL) and reserve stdout the same way."""
    from config.commands import JsonStdoutMixin

    with_json = set()
    for name, app in get_commands().items():
        if app.rsplit(".", 1)[-1] not in OUR_APPS or name == "migrate":  # `migrate` is migrate_schemas again
            continue
        command = load_command_class(app, name)
        options = {opt for action in command.create_parser("manage.py", name)._actions for opt in action.option_strings}
        if "--json" in options:
            with_json.add(name)
            assert isinstance(command, JsonStdoutMixin), f"{name} takes --json without config.commands' mechanism"
    covered = set(CASES) | {name.split()[0] for name in SPECIAL}
    assert with_json == covered, f"not covered: {sorted(with_json - covered)}; gone: {sorted(covered - with_json)}"
