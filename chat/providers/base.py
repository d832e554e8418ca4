"""One provider interface: a LangChain chat model, its configuration, and a stream guarded by deadlines.

Every provider is a `langchain_core` `BaseChatModel` and is consumed through `.stream()`. A vendor can fail in ways
an HTTP timeout does not see: it can answer the request and then say nothing (a stall before the first token), stop
in the middle (a stall between tokens) while still sending keep-alive pings, send an event stream that is not JSON,
or close the stream without finishing. `ProviderStream` runs the model's stream in a helper thread and watches it
from the caller's thread, so each of these becomes a `ProviderFailure` with a stable code within the configured
deadline, whatever the socket does.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage

from chat.providers.secrets import secret_decrypt
from config.errors import ValidationFailed

PROVIDER_KINDS = ("builtin", "openai", "anthropic")


class FailureCode:
    HTTP_ERROR = "http_error"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth_failed"
    CONNECTION = "connection_failed"
    TIMEOUT_FIRST_TOKEN = "timeout_first_token"
    TIMEOUT_INTER_TOKEN = "timeout_inter_token"
    TIMEOUT_TOTAL = "timeout_total"
    GARBAGE = "garbage_stream"
    EMPTY = "empty_answer"
    TRUNCATED = "truncated_stream"
    CIRCUIT_OPEN = "circuit_open"
    CONFIG = "bad_config"
    ERROR = "provider_error"


class ProviderFailure(Exception):
    def __init__(self, code: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class ProviderConfig:
    """One entry of a workspace's provider chain (AssistantSettings.providers).

    Timeouts are seconds. `first_token_timeout` runs from the request to the first text; `inter_token_timeout`
    between two pieces of text; `total_timeout` bounds the whole answer. Prices are USD per million tokens and
    override the price table.
    """

    kind: str
    model: str = ""
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    api_key_env: str = ""
    name: str = ""
    connect_timeout: float = 5.0
    first_token_timeout: float = 20.0
    inter_token_timeout: float = 10.0
    total_timeout: float = 120.0
    max_tokens: int = 800
    temperature: float = 0.2
    price_in: float | None = None
    price_out: float | None = None
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0

    @property
    def label(self) -> str:
        return self.name or (self.kind if self.kind == "builtin" else f"{self.kind}:{self.model}")

    @property
    def key(self) -> str:
        """Identity of the endpoint for the circuit breaker (not the secret: rotating a key keeps the history)."""
        raw = f"{self.kind}|{self.base_url.rstrip('/')}|{self.model}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def resolved_api_key(self) -> str:
        if self.api_key:
            return self.api_key
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def public(self) -> dict[str, Any]:
        return {"provider": self.label, "kind": self.kind, "model": self.model}


_FLOAT_FIELDS = {"connect_timeout", "first_token_timeout", "inter_token_timeout", "total_timeout", "temperature",
                 "price_in", "price_out", "breaker_cooldown"}
_INT_FIELDS = {"max_tokens", "breaker_failures"}
_DEFAULT_MODELS = {"builtin": "extractive-v1", "openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}


def provider_config_parse(entry: dict[str, Any]) -> ProviderConfig:
    """Validate one provider entry; raises ValidationFailed with the offending fields."""
    if not isinstance(entry, dict):
        raise ValidationFailed("A provider entry must be an object.", details={"entry": repr(entry)[:200]})
    kind = str(entry.get("kind", "")).strip().lower()
    if kind not in PROVIDER_KINDS:
        raise ValidationFailed(f"Unknown provider kind {kind!r}.", details={"kind": kind, "allowed": PROVIDER_KINDS})
    known = {f.name for f in fields(ProviderConfig)}
    values: dict[str, Any] = {"kind": kind}
    errors: dict[str, str] = {}
    for name, value in entry.items():
        if name not in known or name == "kind" or value is None:
            continue
        try:
            if name in _FLOAT_FIELDS:
                value = float(value)
                if value < 0:
                    raise ValueError
            elif name in _INT_FIELDS:
                value = int(value)
                if value < 0:
                    raise ValueError
            elif name == "api_key":
                try:
                    # Stored keys are encrypted (chat/providers/secrets.py); this is the one place they're read.
                    value = secret_decrypt(str(value)).strip()
                except ValueError as exc:
                    errors[name] = str(exc)
                    continue
            else:
                value = str(value).strip()
        except (TypeError, ValueError):
            errors[name] = "must be a non-negative number"
            continue
        values[name] = value
    values.setdefault("model", _DEFAULT_MODELS[kind])
    if kind == "openai" and not values.get("base_url"):
        values["base_url"] = "https://api.openai.com/v1"
    if kind == "anthropic" and not values.get("base_url"):
        values["base_url"] = "https://api.anthropic.com"
    base_url = values.get("base_url", "")
    if base_url and not base_url.startswith(("http://", "https://")):
        errors["base_url"] = "must be an http(s) URL"
    if errors:
        raise ValidationFailed("The provider settings are not valid.", details={"fields": errors})
    return ProviderConfig(**values)


def provider_chain(entries: list[Any] | None) -> tuple[list[ProviderConfig], list[dict[str, Any]]]:
    """The ordered chain for a workspace, always ending in the built-in answerer (which never needs the network).

    Invalid entries are left out and reported, so a typo in one entry does not silence the assistant."""
    chain: list[ProviderConfig] = []
    problems: list[dict[str, Any]] = []
    for index, entry in enumerate(entries or []):
        try:
            config = provider_config_parse(entry)
        except ValidationFailed as error:
            problems.append({"provider": f"#{index + 1}", "error": FailureCode.CONFIG, "message": error.message})
            continue
        chain.append(config)
        if config.kind == "builtin":
            break  # nothing after the built-in answerer could ever be reached
    if not chain or chain[-1].kind != "builtin":
        chain.append(ProviderConfig(kind="builtin", model=_DEFAULT_MODELS["builtin"]))
    return chain, problems


def chunk_text(chunk: AIMessageChunk) -> str:
    content = chunk.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in ("text", "text_delta"):
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _finish_reason(chunk: AIMessageChunk) -> str | None:
    meta = chunk.response_metadata or {}
    return meta.get("finish_reason") or meta.get("stop_reason")


class ProviderStream:
    """Iterate text deltas of one model call under deadlines; afterwards `usage`, `finish_reason`, `text`.

    `decline_marker`: if the answer begins with this marker the model says the sources do not answer the question;
    text is held back until the beginning is known, nothing is yielded, and `declined` is set.
    """

    def __init__(
        self,
        config: ProviderConfig,
        model: BaseChatModel,
        messages: list[BaseMessage],
        *,
        decline_marker: str = "",
        watch: bool = True,
    ) -> None:
        self.config = config
        self.model = model
        self.messages = messages
        self.decline_marker = decline_marker
        self.watch = watch
        self.usage: tuple[int, int] | None = None
        self.finish_reason: str | None = None
        self.model_name: str = config.model
        self.text = ""
        self.declined = False
        self._stop = threading.Event()

    # The helper thread only talks HTTP; it never touches the database or Django state.
    def _pump(self, out: queue.Queue) -> None:
        iterator = None
        try:
            iterator = iter(self.model.stream(self.messages))
            for chunk in iterator:
                out.put(("chunk", chunk))
                if self._stop.is_set():
                    break
            out.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 — everything is reported to the watching thread
            out.put(("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # closes the HTTP response when we stopped early
                except Exception:  # noqa: BLE001
                    pass

    def _chunks(self) -> Iterator[AIMessageChunk]:
        if not self.watch:
            try:
                yield from self.model.stream(self.messages)
            except ProviderFailure:
                raise
            except Exception as exc:  # noqa: BLE001
                raise provider_failure_from(exc) from exc
            return
        out: queue.Queue = queue.Queue()
        thread = threading.Thread(target=self._pump, args=(out,), name=f"provider-{self.config.kind}", daemon=True)
        started = time.monotonic()
        last_text_at: float | None = None
        thread.start()
        try:
            while True:
                now = time.monotonic()
                if last_text_at is None:
                    deadline, code = started + self.config.first_token_timeout, FailureCode.TIMEOUT_FIRST_TOKEN
                else:
                    deadline, code = last_text_at + self.config.inter_token_timeout, FailureCode.TIMEOUT_INTER_TOKEN
                total_deadline = started + self.config.total_timeout
                if total_deadline < deadline:
                    deadline, code = total_deadline, FailureCode.TIMEOUT_TOTAL
                try:
                    kind, payload = out.get(timeout=max(0.0, deadline - now))
                except queue.Empty:
                    raise ProviderFailure(code, f"{self.config.label}: no text for {deadline - started:.1f}s "
                                                f"into the answer ({code})") from None
                if kind == "end":
                    return
                if kind == "error":
                    raise provider_failure_from(payload) from payload
                if chunk_text(payload):
                    last_text_at = time.monotonic()
                yield payload
        finally:
            self._stop.set()

    def __iter__(self) -> Iterator[str]:
        held = ""
        deciding = bool(self.decline_marker)
        accumulated: AIMessageChunk | None = None
        for chunk in self._chunks():
            # Only the usage, model name and finish reason are read from the sum, and only chunks that carry
            # metadata change those: summing every text chunk cost ~0.15 ms each (pydantic), most of an answer's
            # provider overhead.
            if chunk.usage_metadata or chunk.response_metadata:
                accumulated = chunk if accumulated is None else accumulated + chunk
            reason = _finish_reason(chunk)
            if reason:
                self.finish_reason = reason
            delta = _clean(chunk_text(chunk))
            if not delta:
                continue
            self.text += delta
            if deciding:
                held += delta
                probe = held.lstrip()
                if probe.startswith(self.decline_marker):
                    self.declined = True
                    self._stop.set()
                    break
                if len(probe) < len(self.decline_marker) and self.decline_marker.startswith(probe):
                    continue
                deciding = False
                delta, held = held.lstrip(), ""
            yield delta
        if deciding and held and not self.declined:
            # A very short answer that was still being held back.
            yield held.lstrip()
        if accumulated is not None:
            usage = accumulated.usage_metadata
            if usage and (usage.get("input_tokens") or usage.get("output_tokens")):
                self.usage = (int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
            meta = accumulated.response_metadata or {}
            self.model_name = str(meta.get("model_name") or meta.get("model") or self.config.model)
            self.finish_reason = self.finish_reason or _finish_reason(accumulated)
        if self.declined:
            return
        if not self.text.strip():
            raise ProviderFailure(FailureCode.EMPTY, f"{self.config.label} returned no text")
        if self.finish_reason is None:
            raise ProviderFailure(FailureCode.TRUNCATED, f"{self.config.label} closed the stream without finishing")


_CONTROL = {c: None for c in range(32) if c not in (9, 10)}


def _clean(text: str) -> str:
    """Control characters never reach a customer's screen."""
    return text.translate(_CONTROL).replace("\ufffd", "") if text else text


def provider_failure_from(exc: BaseException) -> ProviderFailure:
    """Map a vendor SDK / transport exception to a failure code (and Retry-After for 429s)."""
    if isinstance(exc, ProviderFailure):
        return exc
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    name = type(exc).__name__
    message = str(exc)[:300] or name
    if status == 429:
        retry_after = None
        headers = getattr(response, "headers", None) or {}
        raw = headers.get("retry-after") if hasattr(headers, "get") else None
        try:
            retry_after = float(raw) if raw is not None else None
        except ValueError:
            retry_after = None
        return ProviderFailure(FailureCode.RATE_LIMITED, message, status=429, retry_after=retry_after)
    if status in (401, 403):
        return ProviderFailure(FailureCode.AUTH, message, status=status)
    if isinstance(status, int) and status >= 300:
        return ProviderFailure(FailureCode.HTTP_ERROR, message, status=status)
    if isinstance(status, int):
        # An error event inside a 200 stream (Anthropic's `event: error`, e.g. overloaded).
        return ProviderFailure(FailureCode.ERROR, message)
    if "Timeout" in name:
        return ProviderFailure(FailureCode.TIMEOUT_INTER_TOKEN, message)
    if "Connection" in name or isinstance(exc, (ConnectionError, OSError)):
        return ProviderFailure(FailureCode.CONNECTION, message)
    if isinstance(exc, ValueError) and "No generation chunks" in message:
        return ProviderFailure(FailureCode.EMPTY, message)
    if isinstance(exc, (ValueError, KeyError, TypeError, UnicodeError)) or "APIError" in name:
        # JSON that is not JSON, events of the wrong shape, an error event inside a 200 stream.
        return ProviderFailure(FailureCode.GARBAGE, message)
    return ProviderFailure(FailureCode.ERROR, f"{name}: {message}")
