"""The operator contract (PRODUCT.md): commands, `--json` output (JSON and nothing else on stdout), error shape,
exit status — run as real processes against the test database."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from accounts.models import ApiKey, Membership, User
from tenants import provisioning
from tenants.models import Domain, Workspace
from tests.live import BASE_DIR, process_env


def manage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=process_env(connection.settings_dict),
        capture_output=True, text=True, timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def slug() -> str:
    return f"cmd-{secrets.token_hex(4)}"


def test_create_list_key_delete_roundtrip():
    name = slug()
    created = json.loads(manage("create_workspace", "--slug", name, "--name", "Cmd Co", "--owner-email",
                                f"{name}@example.test", "--owner-password", "A-strong-pass-123", "--plan", "pro",
                                "--json").stdout)
    assert created["slug"] == name and created["plan"] == "pro" and created["url"].startswith(f"http://{name}.localhost")
    workspace = Workspace.objects.get(slug=name)
    assert Membership.objects.get(workspace=workspace).role == "owner"
    assert provisioning.schema_exists(workspace.schema_name)

    listed = json.loads(manage("list_workspaces", "--json").stdout)
    assert any(row["slug"] == name and row["members"] == 1 for row in listed)

    key = json.loads(manage("create_api_key", "--workspace", name, "--name", "ci", "--scopes", "read,chat", "--json").stdout)
    assert key["key"].startswith("ccg_") and key["scopes"] == ["read", "chat"]
    assert ApiKey.objects.filter(workspace=workspace, name="ci").exists()

    # Something written to the workspace's cache and media must go with it.
    connection.set_tenant(workspace)
    cache.set("purge-probe", "x")
    connection.set_schema_to_public()
    # the probe is there under the pattern checked below (else that check could not fail)
    assert list(cache._cache.get_client(write=True).scan_iter(match=f"*:{workspace.schema_name}:*"))
    media = settings.MEDIA_ROOT / "workspaces" / workspace.schema_name
    media.mkdir(parents=True, exist_ok=True)
    (media / "f.txt").write_text("x")

    deleted = json.loads(manage("delete_workspace", "--slug", name, "--yes", "--json").stdout)
    assert deleted["deleted"] == name and any("schema" in line for line in deleted["removed"])
    assert not Workspace.objects.filter(slug=name).exists()
    assert not Domain.objects.filter(domain=f"{name}.localhost").exists()
    assert not provisioning.schema_exists(workspace.schema_name)
    assert not media.exists()
    assert not ApiKey.objects.filter(name="ci", workspace_id=workspace.pk).exists()
    client = cache._cache.get_client(write=True)
    assert list(client.scan_iter(match=f"*:{workspace.schema_name}:*")) == []
    assert User.objects.filter(email=f"{name}@example.test").exists()  # people outlive workspaces


@pytest.mark.parametrize(
    "args, code",
    [
        (["create_workspace", "--slug", "www", "--name", "X", "--owner-email", "a@example.test"], "slug_reserved"),
        (["create_workspace", "--slug", "Bad_Slug", "--name", "X", "--owner-email", "a@example.test"], "slug_invalid"),
        (["create_workspace", "--slug", "ok-slug-x", "--name", "X", "--owner-email", "not-an-email"], "invalid"),
        (["delete_workspace", "--slug", "no-such-workspace", "--yes"], "workspace_not_found"),
        (["delete_workspace", "--slug", "whatever"], "invalid"),
        (["create_api_key", "--workspace", "no-such-workspace", "--name", "x"], "workspace_not_found"),
    ],
)
def test_errors_are_json_in_the_error_shape_with_exit_1(args, code):
    result = manage(*args, "--json", check=False)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["error"]["code"] == code and body["error"]["message"]


def test_taken_slug_is_refused():
    name = slug()
    manage("create_workspace", "--slug", name, "--name", "A", "--owner-email", f"{name}@example.test", "--json")
    result = manage("create_workspace", "--slug", name, "--name", "B", "--owner-email", f"b-{name}@example.test",
                    "--json", check=False)
    assert result.returncode == 1 and json.loads(result.stdout)["error"]["code"] == "slug_taken"


def test_human_output_without_json():
    name = slug()
    result = manage("create_workspace", "--slug", name, "--name", "Human", "--owner-email", f"{name}@example.test")
    assert f"Created workspace {name}" in result.stdout and "Owner password:" in result.stdout
