"""The fallback chain: try a workspace's providers in order, each behind its circuit breaker, ending in the built-in
answerer.

Rules (docs/answers.md):
- a provider whose circuit is open is skipped (recorded as `circuit_open`);
- any failure — HTTP error, 429, auth, connection, no first token in time, a stall between tokens, a stream that is
  not what the vendor's format says, an empty or unfinished answer — moves on to the next provider and counts
  against the provider's breaker (a 429 opens it at once for the vendor's Retry-After);
- text already streamed stays consistent: a failure before the first token falls back silently; a failure after
  some tokens yields a `reset` event (the client drops the partial answer) and the next provider starts afresh.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from chat.providers.base import FailureCode, ProviderConfig, ProviderFailure, ProviderStream
from chat.providers.breaker import breaker_allow, breaker_record_failure, breaker_record_success
from chat.providers.pricing import answer_cost, token_count_estimate


@dataclass
class ChainEvent:
    type: str  # "token" | "reset"
    data: dict[str, Any]
    kind: str = ""  # the provider kind whose tokens these are ("builtin", "openai", ...); not part of the data sent


@dataclass
class ChainResult:
    text: str
    config: ProviderConfig
    model: str
    tokens_in: int
    tokens_out: int
    tokens_estimated: bool
    cost: Decimal
    declined: bool
    first_token_at: float | None
    fallbacks: list[dict[str, Any]] = field(default_factory=list)


def chat_model_build(config: ProviderConfig) -> BaseChatModel:
    """The LangChain chat model for a provider entry; an entry the client library refuses is a config failure."""
    try:
        if config.kind == "openai":
            from chat.providers.openai import openai_chat_model

            return openai_chat_model(config)
        if config.kind == "anthropic":
            from chat.providers.anthropic import anthropic_chat_model

            return anthropic_chat_model(config)
    except Exception as exc:  # noqa: BLE001 — e.g. pydantic refusing a value; the chain moves on
        raise ProviderFailure(FailureCode.CONFIG, f"{config.label}: {type(exc).__name__}: {exc}"[:300]) from exc
    raise ProviderFailure(FailureCode.CONFIG, f"no chat model for kind {config.kind!r}")


def providers_stream(
    *,
    chain: list[ProviderConfig],
    messages: list[BaseMessage],
    builtin: BaseChatModel,
    decline_marker: str = "",
    fallbacks: list[dict[str, Any]] | None = None,
) -> Generator[ChainEvent, None, ChainResult]:
    """Yield token / reset events; return the ChainResult of the provider that finished the answer."""
    fallbacks = list(fallbacks or [])
    prompt_text = "\n".join(str(m.content) for m in messages)
    for config in chain:
        is_builtin = config.kind == "builtin"
        if not is_builtin:
            decision = breaker_allow(provider_key=config.key, probe_timeout=config.total_timeout + 5)
            if not decision.allowed:
                fallbacks.append({**config.public(), "error": FailureCode.CIRCUIT_OPEN,
                                  "message": f"circuit {decision.state}; retry in {decision.retry_in:.0f}s",
                                  "after_tokens": 0})
                continue
        emitted = 0
        first_token_at: float | None = None
        try:
            model = builtin if is_builtin else chat_model_build(config)
            stream = ProviderStream(config, model, messages, decline_marker="" if is_builtin else decline_marker,
                                    watch=not is_builtin)
            for delta in stream:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                emitted += 1
                yield ChainEvent("token", {"text": delta}, kind=config.kind)
        except ProviderFailure as failure:
            if not is_builtin:
                breaker_record_failure(provider_key=config.key, failure_threshold=config.breaker_failures,
                                       cooldown=config.breaker_cooldown,
                                       retry_after=failure.retry_after if failure.code == FailureCode.RATE_LIMITED
                                       else None)
            entry = {**config.public(), "error": failure.code, "message": failure.message[:300],
                     "after_tokens": emitted}
            if failure.status:
                entry["status"] = failure.status
            if failure.retry_after is not None:
                entry["retry_after"] = failure.retry_after
            fallbacks.append(entry)
            if emitted:
                yield ChainEvent("reset", {"reason": failure.code, "provider": config.label})
            continue
        if not is_builtin:
            breaker_record_success(provider_key=config.key)
        if stream.usage:
            tokens_in, tokens_out = stream.usage
            estimated = False
        else:
            tokens_in = token_count_estimate(prompt_text)
            tokens_out = token_count_estimate(stream.text)
            estimated = True
        cost = Decimal(0) if is_builtin else answer_cost(
            model=stream.model_name or config.model, tokens_in=tokens_in, tokens_out=tokens_out,
            price_in=config.price_in, price_out=config.price_out)
        return ChainResult(
            text=stream.text, config=config, model=stream.model_name or config.model, tokens_in=tokens_in,
            tokens_out=tokens_out, tokens_estimated=estimated, cost=cost, declined=stream.declined,
            first_token_at=first_token_at, fallbacks=fallbacks,
        )
    last = fallbacks[-1] if fallbacks else {}
    # Name the last failure (the built-in answerer's): without it the log says only that everything failed.
    raise ProviderFailure(FailureCode.ERROR, "every provider failed, the built-in answerer included; last: "
                          f"{last.get('error', '?')}: {str(last.get('message', ''))[:200]}")
