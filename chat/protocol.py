"""The conversation WebSocket protocol: client frames in, server events out (docs/websocket-protocol.md).

Pure functions and small value classes, no I/O: the consumer (chat/consumers.py) parses with `client_frame_parse`,
and everything that produces events (services, the answer stream) builds them with `conversation_event` and
`message_payload`, so the same event has the same shape whichever path sent it.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from config.parsers import unstorable_text
from config.errors import ApplicationError, ErrorCode

# Client → server frame types.
CLIENT_TYPES = frozenset({"message", "typing", "feedback", "request_human", "contact", "ping", "resume"})

# Server → client events that belong to the conversation: they get a seq, are kept in the replay log and reach
# every socket watching the conversation.
SEQUENCED_TYPES = frozenset({
    "message", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "token", "reset",
    "agent_completed", "error", "status", "feedback",
    # human handoff (docs/handoff.md): a person joined or left; their messages are `message` events (role agent)
    "agent_joined", "agent_left",
})
# Server → client frames that concern one socket only (no seq, never replayed): welcome, ack, pong, resumed, error
# about a frame the client sent; and `typing`, which is ephemeral (a replayed typing indicator means nothing).

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
# Close codes (4000-4999 are the application's).
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_IDLE = 4408
CLOSE_FLOOD = 4429
CLOSE_UNAVAILABLE = 1011  # the server could not open the conversation's stream (Redis): reconnect later


class ProtocolError(ApplicationError):
    """A frame the server will not act on. The socket stays open; the client gets an `error` event."""

    def __init__(
        self, code: ErrorCode | str, message: str, *, details: dict[str, Any] | None = None, client_id: str | None = None
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.client_id = client_id


@dataclass(frozen=True)
class ProtocolLimits:
    max_message_chars: int
    max_frame_bytes: int
    idle_timeout: float
    ping_interval: float
    frame_rate: float
    frame_burst: int
    message_rate: float
    message_burst: int

    @classmethod
    def from_settings(cls) -> ProtocolLimits:
        return cls(
            max_message_chars=settings.CHAT_MESSAGE_MAX_CHARS,
            max_frame_bytes=settings.CHAT_WS_MAX_FRAME_BYTES,
            idle_timeout=settings.CHAT_WS_IDLE_TIMEOUT,
            ping_interval=settings.CHAT_WS_PING_INTERVAL,
            frame_rate=settings.CHAT_WS_FRAME_RATE,
            frame_burst=settings.CHAT_WS_FRAME_BURST,
            message_rate=settings.CHAT_WS_MESSAGE_RATE,
            message_burst=settings.CHAT_WS_MESSAGE_BURST,
        )

    def public(self) -> dict[str, Any]:
        return {
            "max_message_chars": self.max_message_chars, "max_frame_bytes": self.max_frame_bytes,
            "idle_timeout": self.idle_timeout, "ping_interval": self.ping_interval,
        }


@dataclass(frozen=True)
class ClientFrame:
    type: str
    data: dict[str, Any]


class TokenBucket:
    """Per-connection rate limit: `burst` frames at once, refilled at `rate` per second."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0.0 when allowed; otherwise the seconds until a frame would be allowed."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


# --- client frames ---------------------------------------------------------------------------------------------
def message_text_clean(text: Any, *, max_chars: int) -> str:
    """The question as stored: any string up to the cap, never empty. Markup is kept as typed (it is text)."""
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.INVALID, "`text` must be a string.", details={"field": "text"})
    if not text.strip():
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE, "The message is empty.")
    if unstorable_text(text):
        raise ProtocolError(ErrorCode.INVALID, "Text may not contain NUL characters or unpaired surrogates.",
                            details={"field": "text"})
    if len(text) > max_chars:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG, f"Messages are limited to {max_chars} characters.",
            details={"max_chars": max_chars, "chars": len(text)},
        )
    return text.strip()


def client_id_clean(value: Any) -> str:
    if not isinstance(value, str) or not CLIENT_ID_RE.match(value):
        raise ProtocolError(
            ErrorCode.INVALID, "`client_id` must be 1-64 characters of letters, digits and _ . : -",
            details={"field": "client_id"},
        )
    return value


def _int_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(ErrorCode.INVALID, f"`{name}` must be an integer.", details={"field": name})
    return value


def client_frame_parse(text: str, limits: ProtocolLimits) -> ClientFrame:
    """Parse and validate one text frame. Raises ProtocolError with a stable code."""
    # A UTF-8 character is at most 4 bytes: only long frames need the exact (encoding) check.
    if len(text) * 4 > limits.max_frame_bytes and len(text.encode("utf-8")) > limits.max_frame_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"Frames are limited to {limits.max_frame_bytes} bytes.",
            details={"max_bytes": limits.max_frame_bytes},
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "The frame is not valid JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "A frame is a JSON object with a string `type`.")
    kind = data["type"]
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, "Unknown frame type.", details={"type": kind[:40], "known": sorted(CLIENT_TYPES)}
        )
    if kind == "message":
        client_id = client_id_clean(data.get("client_id"))
        try:
            clean = {"client_id": client_id, "text": message_text_clean(data.get("text"), max_chars=limits.max_message_chars)}
        except ProtocolError as error:
            error.client_id = client_id  # so the client knows which of its messages was refused
            raise
    elif kind == "resume":
        last_seq = _int_field(data, "last_seq")
        if last_seq < 0:
            raise ProtocolError(ErrorCode.INVALID_SEQ, "`last_seq` cannot be negative.", details={"last_seq": last_seq})
        clean = {"last_seq": last_seq}
    elif kind == "feedback":
        value = _int_field(data, "value")
        if value not in (-1, 0, 1):
            raise ProtocolError(ErrorCode.INVALID, "`value` is 1, -1 or 0.", details={"field": "value"})
        comment = data.get("comment", "")
        if not isinstance(comment, str) or len(comment) > 2000 or unstorable_text(comment):
            raise ProtocolError(ErrorCode.INVALID, "`comment` is text up to 2000 characters.", details={"field": "comment"})
        clean = {"message_id": _int_field(data, "message_id"), "value": value, "comment": comment}
    elif kind == "typing":
        state = data.get("state", True)
        if not isinstance(state, bool):
            raise ProtocolError(ErrorCode.INVALID, "`state` must be true or false.", details={"field": "state"})
        clean = {"state": state}
    elif kind == "ping":
        nonce = data.get("nonce")
        clean = {"nonce": nonce if isinstance(nonce, (str, int)) and len(str(nonce)) <= 64 else None}
    elif kind == "contact":  # the customer leaves an email address for a reply (nobody online)
        email = data.get("email")
        if not isinstance(email, str) or len(email) > 254 or not EMAIL_RE.match(email.strip()):
            raise ProtocolError(ErrorCode.INVALID, "`email` must be an email address.", details={"field": "email"})
        clean = {"email": email.strip()}
    else:  # request_human
        clean = {}
    return ClientFrame(type=kind, data=clean)


# --- server events ---------------------------------------------------------------------------------------------
def conversation_event(kind: str, **payload: Any) -> dict[str, Any]:
    """An event of the conversation (its seq is added when it is appended to the log)."""
    assert kind in SEQUENCED_TYPES, kind
    return {"type": kind, **payload}


def local_frame(kind: str, **payload: Any) -> dict[str, Any]:
    """A frame for one socket only (no seq)."""
    return {"type": kind, **payload}


def error_frame(error: ApplicationError, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": error.code, "message": error.message, "details": error.details, **extra}


def encode(event: dict[str, Any]) -> str:
    """Compact JSON. Never contains a raw newline, which the event log uses as a separator."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def message_payload(message: Any) -> dict[str, Any]:
    """A message as events and the API show it."""
    data: dict[str, Any] = {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "client_id": message.client_message_id or None,
        "reply_to": message.reply_to_id,
        "created_at": message.created_at.isoformat() if message.created_at else None,
        "seq": message.seq,
        "feedback": message.feedback,
    }
    if message.role in ("assistant", "agent"):
        data.update(
            citations=message.citations, answered=message.answered, confidence=message.confidence,
            provider=message.provider, model=message.model, tokens_in=message.tokens_in,
            tokens_out=message.tokens_out, cost=float(message.cost or 0), timings_ms=message.timings_ms,
            latency_first_token_ms=message.latency_first_token_ms, latency_total_ms=message.latency_total_ms,
        )
    if message.author_id:
        data["author"] = {"id": message.author_id}
        if message.role in ("agent", "system", "note"):  # a person's name is shown with what they wrote
            author = message.author
            data["author_name"] = author.display_name if author is not None else ""
    return data


def conversation_payload(conversation: Any) -> dict[str, Any]:
    return {
        "id": str(conversation.public_id),
        "status": conversation.status,
        "channel": conversation.channel,
        "title": conversation.title,
        "handoff_reason": conversation.handoff_reason or None,
        "visitor_email_set": bool(conversation.visitor_email),
        "created_at": conversation.created_at.isoformat() if conversation.created_at else None,
    }
