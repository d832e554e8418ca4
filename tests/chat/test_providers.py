"""The provider chain against fake vendors — real HTTP servers on loopback speaking OpenAI's and Anthropic's wire
formats — with the real LangChain clients: streaming, usage and cost, failover on 500 / 429 / stalls / garbage,
the reset rule after partial output, and the circuit breaker (state in Redis, per workspace)."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.db import connection
from langchain_core.messages import HumanMessage, SystemMessage

from chat.providers import (
    BuiltinChatModel,
    FailureCode,
    ProviderConfig,
    answer_cost,
    breaker_state,
    provider_chain,
    provider_config_parse,
    providers_stream,
)
from chat.providers.breaker import breaker_allow, breaker_record_failure, breaker_reset
from config.errors import ValidationFailed
from documents.embedding import embedder
from tests.chat.fakes import FakeVendor, Reply
from tests.factories import workspace_with_owner

MESSAGES = [SystemMessage("You answer from sources."), HumanMessage("Sources:\n[1] Reset\nHold the button.\n\nQuestion: How?")]
FALLBACK_TEXT = "Hold the Reset button for ten seconds [1]."


@pytest.fixture(scope="module")
def workspaces(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Providers A"), workspace_with_owner(name="Providers B")


@pytest.fixture
def in_workspace(workspaces):
    connection.set_tenant(workspaces[0].workspace)
    return workspaces[0]


@pytest.fixture
def vendors():
    started: list[FakeVendor] = []

    def make(kind: str, *replies: Reply) -> FakeVendor:
        vendor = FakeVendor(kind, list(replies) or None)
        started.append(vendor)
        return vendor

    yield make
    for vendor in started:
        vendor.close()


def config_for(vendor: FakeVendor, **overrides) -> ProviderConfig:
    model = "gpt-4o-mini" if vendor.kind == "openai" else "claude-3-5-haiku-latest"
    values = dict(kind=vendor.kind, base_url=vendor.base_url, model=model, api_key="test-key",
                  first_token_timeout=1.5, inter_token_timeout=1.0, total_timeout=20, breaker_failures=3,
                  breaker_cooldown=30)
    values.update(overrides)
    config = ProviderConfig(**values)
    breaker_reset(provider_key=config.key)
    return config


def run_chain(chain: list[ProviderConfig], **kwargs):
    events = []
    stream = providers_stream(chain=chain + [ProviderConfig(kind="builtin")], messages=MESSAGES,
                              builtin=BuiltinChatModel(fixed_text=FALLBACK_TEXT), **kwargs)
    while True:
        try:
            events.append(next(stream))
        except StopIteration as stop:
            return events, stop.value


def text_after_last_reset(events) -> str:
    last = max((i for i, e in enumerate(events) if e.type == "reset"), default=-1)
    return "".join(e.data["text"] for e in events[last + 1:] if e.type == "token")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_vendor_streams_tokens_with_usage_and_cost(in_workspace, vendors, kind):
    vendor = vendors(kind, Reply(text="Press and hold Reset for ten seconds [1].", usage=(1200, 300)))
    events, result = run_chain([config_for(vendor)])
    tokens = [e.data["text"] for e in events if e.type == "token"]
    assert len(tokens) > 3 and "".join(tokens) == "Press and hold Reset for ten seconds [1]."
    assert result.config.kind == kind and result.fallbacks == []
    assert (result.tokens_in, result.tokens_out, result.tokens_estimated) == (1200, 300, False)
    expected = answer_cost(model=result.model, tokens_in=1200, tokens_out=300)
    assert result.cost == expected and expected > 0
    request = vendor.requests[0]
    assert request["body"]["stream"] is True
    if kind == "openai":
        assert request["headers"]["authorization"] == "Bearer test-key"
        assert request["body"]["messages"][0] == {"role": "system", "content": "You answer from sources."}
    else:
        headers = request["headers"]  # x-api-key or a bearer token, depending on the SDK version
        assert "test-key" in headers.get("x-api-key", "") + headers.get("authorization", "")
        assert headers["anthropic-version"] and request["path"] == "/v1/messages"
        assert "You answer from sources." in str(request["body"]["system"])


def test_server_error_falls_back_to_the_next_vendor_before_any_token(in_workspace, vendors):
    broken = vendors("openai", Reply(mode="error", status=500))
    healthy = vendors("anthropic", Reply(text="From the second vendor [1]."))
    events, result = run_chain([config_for(broken), config_for(healthy)])
    assert [e.type for e in events if e.type != "token"] == []  # nothing was shown, so nothing to reset
    assert result.config.kind == "anthropic" and result.text == "From the second vendor [1]."
    assert result.fallbacks == [{"provider": "openai:gpt-4o-mini", "kind": "openai", "model": "gpt-4o-mini",
                                 "error": FailureCode.HTTP_ERROR, "message": result.fallbacks[0]["message"],
                                 "after_tokens": 0, "status": 500}]


def test_rate_limit_with_retry_after_opens_the_circuit_and_skips_the_vendor(in_workspace, vendors):
    limited = vendors("openai", Reply(mode="error", status=429, headers={"Retry-After": "30"}))
    config = config_for(limited)
    events, result = run_chain([config])
    assert result.config.kind == "builtin" and text_after_last_reset(events) == FALLBACK_TEXT
    failure = result.fallbacks[0]
    assert failure["error"] == FailureCode.RATE_LIMITED and failure["retry_after"] == 30 and failure["status"] == 429
    assert breaker_state(provider_key=config.key) == "open"
    # The next answer does not even ask: the vendor said when to come back.
    _events, again = run_chain([config])
    assert limited.calls == 1
    assert again.fallbacks[0]["error"] == FailureCode.CIRCUIT_OPEN


def test_stall_before_the_first_token_times_out_and_falls_back(in_workspace, vendors):
    for kind in ("openai", "anthropic"):  # Anthropic's keep-alive pings must not count as progress
        stalled = vendors(kind, Reply(mode="stall_first"))
        events, result = run_chain([config_for(stalled, first_token_timeout=0.8)])
        assert not any(e.type == "reset" for e in events)
        assert result.config.kind == "builtin" and result.text == FALLBACK_TEXT
        assert result.fallbacks[0]["error"] == FailureCode.TIMEOUT_FIRST_TOKEN


def test_stall_mid_stream_resets_the_partial_answer_then_falls_back(in_workspace, vendors):
    stalled = vendors("openai", Reply(mode="stall_mid", text="Hold the button and wait", stall_after=2))
    healthy = vendors("anthropic", Reply(text="Hold Reset for ten seconds [1]."))
    events, result = run_chain([config_for(stalled, inter_token_timeout=0.6), config_for(healthy)])
    types = [e.type for e in events]
    reset_at = types.index("reset")
    assert types[:reset_at] == ["token", "token"] and types.count("reset") == 1
    assert events[reset_at].data == {"reason": FailureCode.TIMEOUT_INTER_TOKEN, "provider": "openai:gpt-4o-mini"}
    assert text_after_last_reset(events) == result.text == "Hold Reset for ten seconds [1]."
    assert result.fallbacks[0]["after_tokens"] == 2


@pytest.mark.parametrize("kind,reply,code", [
    ("openai", Reply(mode="garbage"), FailureCode.GARBAGE),
    ("anthropic", Reply(mode="garbage"), FailureCode.GARBAGE),
    ("openai", Reply(mode="html"), FailureCode.EMPTY),
    ("openai", Reply(mode="truncated", stall_after=3), FailureCode.TRUNCATED),
    ("anthropic", Reply(mode="truncated", stall_after=3), FailureCode.TRUNCATED),
    ("anthropic", Reply(mode="error_event", stall_after=2), FailureCode.ERROR),
    ("anthropic", Reply(mode="error", status=529), FailureCode.HTTP_ERROR),
    ("openai", Reply(mode="error", status=401), FailureCode.AUTH),
])
def test_broken_streams_end_in_the_builtin_answerer(in_workspace, vendors, kind, reply, code):
    vendor = vendors(kind, reply)
    events, result = run_chain([config_for(vendor)])
    assert result.fallbacks[0]["error"] == code
    assert result.config.kind == "builtin"
    assert text_after_last_reset(events) == FALLBACK_TEXT
    if result.fallbacks[0]["after_tokens"]:
        assert [e.type for e in events].count("reset") == 1


def test_connection_refused_falls_back(in_workspace):
    config = ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="gpt-4o-mini")
    breaker_reset(provider_key=config.key)
    _events, result = run_chain([config])
    assert result.fallbacks[0]["error"] == FailureCode.CONNECTION and result.config.kind == "builtin"


def test_circuit_opens_after_repeated_failures_then_half_opens_and_closes(in_workspace, vendors):
    vendor = vendors("openai", Reply(mode="error", status=500), Reply(mode="error", status=500), Reply(text="Back [1]."))
    config = config_for(vendor, breaker_failures=2, breaker_cooldown=1)
    run_chain([config])
    assert breaker_state(provider_key=config.key) == "closed"  # one failure is not a pattern
    run_chain([config])
    assert breaker_state(provider_key=config.key) == "open"
    _events, skipped = run_chain([config])
    assert vendor.calls == 2 and skipped.fallbacks[0]["error"] == FailureCode.CIRCUIT_OPEN
    deadline = time.monotonic() + 30
    while breaker_state(provider_key=config.key) == "open":
        assert time.monotonic() < deadline, "the breaker never left `open` after its cooldown"
        time.sleep(0.1)
    assert breaker_state(provider_key=config.key) == "half_open"
    _events, probed = run_chain([config])  # the probe succeeds
    assert probed.config.kind == "openai" and probed.text == "Back [1]."
    assert breaker_state(provider_key=config.key) == "closed" and vendor.calls == 3


def test_failed_probe_reopens_and_only_one_caller_probes(in_workspace):
    config = ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="probe-test")
    breaker_reset(provider_key=config.key)
    breaker_record_failure(provider_key=config.key, failure_threshold=1, cooldown=0.2)
    deadline = time.monotonic() + 30
    while breaker_state(provider_key=config.key) == "open":
        assert time.monotonic() < deadline, "the breaker never left `open` after its 0.2 s cooldown"
        time.sleep(0.05)
    first, second = breaker_allow(provider_key=config.key), breaker_allow(provider_key=config.key)
    assert (first.allowed, first.state) == (True, "half_open")
    assert (second.allowed, second.state) == (False, "half_open")
    assert breaker_record_failure(provider_key=config.key, failure_threshold=5, cooldown=0.2) == "open"
    assert breaker_state(provider_key=config.key) == "open"


def test_circuit_state_is_per_workspace(workspaces):
    config = ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="shared-model")
    connection.set_tenant(workspaces[0].workspace)
    breaker_reset(provider_key=config.key)
    breaker_record_failure(provider_key=config.key, failure_threshold=1, cooldown=60)
    assert breaker_state(provider_key=config.key) == "open"
    connection.set_tenant(workspaces[1].workspace)
    assert breaker_state(provider_key=config.key) == "closed"


def test_missing_usage_is_estimated_with_the_embedding_tokenizer(in_workspace, vendors):
    vendor = vendors("openai", Reply(text="Hold the Reset button [1].", usage=None))
    _events, result = run_chain([config_for(vendor, price_in=1.0, price_out=2.0)])
    assert result.tokens_estimated is True
    assert result.tokens_out == embedder().count_tokens("Hold the Reset button [1].")
    assert result.tokens_in == embedder().count_tokens("\n".join(str(m.content) for m in MESSAGES))
    assert result.cost == answer_cost(model="x", tokens_in=result.tokens_in, tokens_out=result.tokens_out,
                                      price_in=1.0, price_out=2.0)


def test_decline_marker_is_never_shown(in_workspace, vendors):
    vendor = vendors("openai", Reply(pieces=["[[NO", "_ANSWER", "]]"]))
    events, result = run_chain([config_for(vendor)], decline_marker="[[NO_ANSWER]]")
    assert [e for e in events if e.type == "token"] == []
    assert result.declined and result.config.kind == "openai"


def test_cost_table():
    assert answer_cost(model="gpt-4o-mini", tokens_in=1000, tokens_out=500) == Decimal("0.000450")
    assert answer_cost(model="gpt-4o-mini-2024-07-18", tokens_in=1_000_000, tokens_out=0) == Decimal("0.150000")
    assert answer_cost(model="claude-3-5-haiku-latest", tokens_in=2000, tokens_out=1000) == Decimal("0.005600")
    assert answer_cost(model="llama3.1:8b", tokens_in=10_000, tokens_out=10_000) == Decimal("0")  # self-hosted
    assert answer_cost(model="llama3.1:8b", tokens_in=1_000_000, tokens_out=0, price_in=0.2) == Decimal("0.200000")


def test_provider_settings_are_validated_and_the_chain_ends_in_builtin():
    chain, problems = provider_chain([
        {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "llama3.1"},
        {"kind": "carrier-pigeon"},
        {"kind": "anthropic", "first_token_timeout": "soon"},
        {"kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"},
    ])
    assert [c.kind for c in chain] == ["openai", "anthropic", "builtin"]
    assert chain[1].base_url == "https://api.anthropic.com" and chain[1].model.startswith("claude")
    assert [p["provider"] for p in problems] == ["#2", "#3"]
    assert provider_chain([])[0] == [ProviderConfig(kind="builtin", model="extractive-v1")]
    with pytest.raises(ValidationFailed) as raised:
        provider_config_parse({"kind": "openai", "base_url": "ftp://example.com", "max_tokens": -3})
    assert set(raised.value.details["fields"]) == {"base_url", "max_tokens"}
