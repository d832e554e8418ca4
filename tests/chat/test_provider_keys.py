"""Vendor API keys at rest (AssistantSettings.providers): the database row never holds the plain key, whatever writes
it (save, update_or_create, update, the data migration); building the provider decrypts it, and the real LangChain
clients still authenticate against the fake vendors (real HTTP servers on loopback); no page or API returns it."""
from __future__ import annotations

import importlib
import json
import secrets
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.db import connection

from chat.models import AssistantSettings
from chat.providers import BuiltinChatModel, ProviderConfig, provider_chain, providers_stream
from chat.providers.breaker import breaker_reset
from chat.providers.secrets import field_cipher, providers_public, secret_hint
from tests.chat.fakes import FakeVendor, Reply
from tests.chat.test_providers import MESSAGES
from tests.factories import workspace_with_owner

migration = importlib.import_module("chat.migrations.0004_encrypt_provider_keys")


@pytest.fixture(scope="module")
def ws(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Provider Keys")


@pytest.fixture
def in_ws(ws):
    connection.set_tenant(ws.workspace)
    yield ws
    connection.set_schema_to_public()


@pytest.fixture
def vendor_of():
    started: list[FakeVendor] = []

    def make(kind: str) -> FakeVendor:
        vendor = FakeVendor(kind, [Reply(text="Hold Reset for ten seconds [1].")])
        started.append(vendor)
        return vendor

    yield make
    for vendor in started:
        vendor.close()


def raw_providers() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT providers::text FROM chat_assistantsettings ORDER BY id")
        return "\n".join(row[0] for row in cursor.fetchall())


def plain_key(kind: str = "openai") -> str:
    return ("sk-" if kind == "openai" else "sk-ant-") + secrets.token_hex(16)


def entry(vendor: FakeVendor, key: str) -> dict:
    return {"kind": vendor.kind, "base_url": vendor.base_url, "api_key": key, "first_token_timeout": 5,
            "model": "gpt-4o-mini" if vendor.kind == "openai" else "claude-3-5-haiku-latest"}


def answer_with(providers: list) -> tuple[list, object]:
    chain, problems = provider_chain(providers)
    for config in chain:
        breaker_reset(provider_key=config.key)
    events = list(_drain(providers_stream(chain=chain, messages=MESSAGES, builtin=BuiltinChatModel(fixed_text="x"))))
    return events, problems


def _drain(stream):
    while True:
        try:
            yield next(stream)
        except StopIteration as stop:
            yield ("result", stop.value)
            return


def sent_key(vendor: FakeVendor) -> str:
    headers = vendor.requests[-1]["headers"]  # Anthropic: x-api-key or a bearer token, depending on the SDK version
    return headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_the_row_holds_no_plain_key_and_the_vendor_still_gets_it(in_ws, vendor_of, kind):
    vendor = vendor_of(kind)
    key = plain_key(kind)
    AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [entry(vendor, key), {"kind": "builtin"}]})
    stored = raw_providers()
    assert key not in stored and key[-12:] not in stored and "fernet:" in stored
    assert json.loads(stored)[0]["api_key_hint"] == secret_hint(key) == key.split("-", 1)[0] + "-…" + key[-4:]

    row = AssistantSettings.objects.get(id=1)
    assert row.providers[0]["api_key"].startswith("fernet:"), "reads keep the ciphertext; only the chain decrypts"
    events, problems = answer_with(row.providers)
    assert problems == []
    result = events[-1][1]
    assert result.config.kind == kind and result.fallbacks == [], result.fallbacks
    assert sent_key(vendor) == key
    assert key not in repr(result.config), "the key never shows in a repr (logs)"


def test_update_and_resave_never_store_plain_and_never_double_encrypt(in_ws, vendor_of):
    vendor = vendor_of("openai")
    key = plain_key()
    AssistantSettings.objects.update_or_create(id=1, defaults={"providers": []})
    AssistantSettings.objects.filter(id=1).update(providers=[entry(vendor, key)])
    assert key not in raw_providers()
    row = AssistantSettings.objects.get(id=1)
    row.name = "Renamed"
    row.save()  # the ciphertext goes back as it is
    assert AssistantSettings.objects.get(id=1).providers == row.providers
    answer_with(AssistantSettings.objects.get(id=1).providers)
    assert sent_key(vendor) == key


def test_the_data_migration_encrypts_existing_plain_keys(in_ws, vendor_of):
    vendor = vendor_of("openai")
    key = plain_key()
    AssistantSettings.objects.update_or_create(id=1, defaults={"providers": []})
    with connection.cursor() as cursor:  # a row as the old code wrote it
        cursor.execute("UPDATE chat_assistantsettings SET providers = %s::jsonb WHERE id = 1",
                       [json.dumps([entry(vendor, key)])])
    assert key in raw_providers()
    editor = SimpleNamespace(connection=connection)
    migration.encrypt_provider_keys(apps, editor)
    assert key not in raw_providers() and "fernet:" in raw_providers()
    before = raw_providers()
    migration.encrypt_provider_keys(apps, editor)  # idempotent
    assert raw_providers() == before
    answer_with(AssistantSettings.objects.get(id=1).providers)
    assert sent_key(vendor) == key
    migration.decrypt_provider_keys(apps, editor)  # the way back, for a rollback
    assert json.loads(raw_providers())[0]["api_key"] == key
    migration.encrypt_provider_keys(apps, editor)
    assert key not in raw_providers()


def test_a_key_encrypted_with_another_key_is_a_config_problem_and_rotation_works(in_ws, vendor_of, settings):
    vendor = vendor_of("openai")
    key = plain_key()
    old = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [entry(vendor, key)]})
    stored = AssistantSettings.objects.get(id=1).providers
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    chain, problems = provider_chain(stored)
    assert [c.kind for c in chain] == ["builtin"] and problems and key not in repr(problems)
    settings.FIELD_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},{old}"  # new key first, the old one still reads
    answer_with(stored)
    assert sent_key(vendor) == key
    assert field_cipher() is not None


def test_public_view_shows_only_the_hint():
    shown = providers_public([{"kind": "openai", "api_key": "fernet:abc", "api_key_hint": "sk-…abcd"},
                              {"kind": "builtin"}])
    assert shown == [{"kind": "openai", "api_key_hint": "sk-…abcd"}, {"kind": "builtin", "api_key_hint": ""}]
    assert secret_hint("short") == "…" and secret_hint("") == ""
    assert "sk-secret-value-1234" not in repr(ProviderConfig(kind="openai", api_key="sk-secret-value-1234"))


def test_no_page_or_api_returns_the_key(ws, vendor_of, host_client):
    vendor = vendor_of("openai")
    key = plain_key()
    connection.set_tenant(ws.workspace)
    try:
        AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [entry(vendor, key)]})
        ciphertext = AssistantSettings.objects.get(id=1).providers[0]["api_key"]
    finally:
        connection.set_schema_to_public()
    client = host_client(ws.host)
    client.force_login(ws.owner)
    try_page = client.get("/conversations/try/", follow=True)
    pages = [try_page]
    for path in ("/", "/conversations/", "/knowledge/", "/settings/billing/", "/api/v1/me/", "/api/v1/conversations/",
                 "/api/v1/usage/", "/api/v1/audit-log/"):
        pages.append(client.get(path, follow=True))
    for response in pages:
        body = response.content.decode(errors="replace")
        assert response.status_code < 500, (response.request["PATH_INFO"], response.status_code)
        assert key not in body and key[-8:] not in body and ciphertext not in body, response.request["PATH_INFO"]
