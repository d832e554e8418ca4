"""Fake LLM vendors: real HTTP servers on 127.0.0.1 speaking the vendors' own wire formats.

`FakeVendor("openai")` serves `POST /v1/chat/completions` (OpenAI-compatible: OpenAI, Ollama, vLLM, LM Studio) and
`FakeVendor("anthropic")` serves `POST /v1/messages` (Anthropic Messages API), both streaming with server-sent
events exactly as the vendors do. Each request takes the next scripted `Reply` (the last one repeats), so a test says
"500, then a normal answer" and the server behaves so. Stalls block on an event that `close()` releases, so no thread
outlives the test.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted reply.

    mode: "ok" (stream `text` in `pieces`), "error" (`status` with the vendor's error body, `headers`),
    "stall_first" (headers sent, then silence — keep-alive pings only, for Anthropic), "stall_mid" (`stall_after`
    pieces, then silence), "garbage" (200 event stream whose data lines are not JSON), "html" (200 text/html page
    instead of a stream), "truncated" (`stall_after` pieces, then the connection closes without a finish),
    "error_event" (Anthropic: an `error` event after `stall_after` pieces).
    """

    mode: str = "ok"
    text: str = "Hello from the fake vendor [1]."
    pieces: list[str] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stall_after: int = 2
    usage: tuple[int, int] | None = (42, 7)
    delay: float = 0.0  # between pieces

    def split(self) -> list[str]:
        if self.pieces is not None:
            return self.pieces
        words = self.text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


class FakeVendor:
    def __init__(self, kind: str, replies: list[Reply] | None = None) -> None:
        assert kind in ("openai", "anthropic")
        self.kind = kind
        self.replies: list[Reply] = list(replies or [Reply()])
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                expected = "/v1/chat/completions" if vendor.kind == "openai" else "/v1/messages"
                with vendor._lock:
                    vendor.requests.append({"path": self.path, "body": body,
                                            "headers": {k.lower(): v for k, v in self.headers.items()}})
                    reply = vendor.replies.pop(0) if len(vendor.replies) > 1 else vendor.replies[0]
                if self.path != expected:
                    return self._json(404, {"error": {"message": f"unknown path {self.path}", "type": "not_found"}})
                try:
                    vendor._serve(self, reply, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on us: that is what a stall test wants

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"fake-{kind}", daemon=True)
        self.thread.start()

    # --- public -----------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        # OpenAI-compatible clients take the base URL with /v1; Anthropic's SDK adds /v1 itself.
        return f"http://127.0.0.1:{self.port}/v1" if self.kind == "openai" else f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # --- wire formats ---------------------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler, reply: Reply, body: dict[str, Any]) -> None:
        if reply.mode == "error":
            payload = self._error_body(reply.status)
            return handler._json(reply.status, payload, reply.headers)  # type: ignore[attr-defined]
        if reply.mode == "html":
            page = b"<!doctype html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(page)))
            handler.end_headers()
            handler.wfile.write(page)
            return None
        if not body.get("stream"):
            return self._serve_unary(handler, reply, body)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        write = _writer(handler)
        if self.kind == "openai":
            self._stream_openai(write, reply, body)
        else:
            self._stream_anthropic(write, reply, body)
        return None

    def _stall(self, write: Any) -> None:
        # Silence until the test ends; Anthropic's API keeps the connection alive with pings while it thinks.
        while not self.release.wait(0.2):
            if self.kind == "anthropic":
                write("event: ping\ndata: {\"type\": \"ping\"}\n\n")

    def _error_body(self, status: int) -> dict[str, Any]:
        if self.kind == "openai":
            kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "server_error")
            return {"error": {"message": f"fake vendor says {status}", "type": kind, "param": None, "code": kind}}
        kind = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"fake vendor says {status}"}}

    def _stream_openai(self, write: Any, reply: Reply, body: dict[str, Any]) -> None:
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        model = body.get("model", "fake-model")

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {
                "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"

        if reply.mode == "garbage":
            write(chunk({"role": "assistant", "content": ""}))
            write("data: {\"choices\": [{\"delta\": {\"content\": \"Hel\n\n")
            write("data: \x00\x01\x02 not json at all }}}\n\n")
            write("data: [DONE]\n\n")
            return
        write(chunk({"role": "assistant", "content": "", "refusal": None}))
        if reply.mode == "stall_first":
            return self._stall(write)
        for index, piece in enumerate(reply.split()):
            if reply.mode in ("stall_mid", "truncated") and index == reply.stall_after:
                if reply.mode == "stall_mid":
                    self._stall(write)
                return
            if reply.delay:
                time.sleep(reply.delay)
            write(chunk({"content": piece}))
        write(chunk({}, finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage") and reply.usage:
            prompt, completion = reply.usage
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            payload = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                       "choices": [], "usage": usage}
            write(f"data: {json.dumps(payload)}\n\n")
        write("data: [DONE]\n\n")

    def _stream_anthropic(self, write: Any, reply: Reply, body: dict[str, Any]) -> None:
        model = body.get("model", "claude-fake")

        def event(name: str, payload: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(payload)}\n\n"

        prompt, completion = reply.usage or (0, 0)
        write(event("message_start", {"type": "message_start", "message": {
            "id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1}}}))
        if reply.mode == "garbage":
            write("event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\n\n")
            write("event: content_block_delta\ndata: <<<>>> \u00ff\x07 }{\n\n")
            return
        write(event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}}))
        write("event: ping\ndata: {\"type\": \"ping\"}\n\n")
        if reply.mode == "stall_first":
            return self._stall(write)
        for index, piece in enumerate(reply.split()):
            if reply.mode in ("stall_mid", "truncated", "error_event") and index == reply.stall_after:
                if reply.mode == "stall_mid":
                    self._stall(write)
                if reply.mode == "error_event":
                    write(event("error", {"type": "error",
                                          "error": {"type": "overloaded_error", "message": "Overloaded"}}))
                return
            if reply.delay:
                time.sleep(reply.delay)
            write(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": piece}}))
        write(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        write(event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"input_tokens": prompt, "output_tokens": completion}}))
        write(event("message_stop", {"type": "message_stop"}))

    def _serve_unary(self, handler: BaseHTTPRequestHandler, reply: Reply, body: dict[str, Any]) -> None:
        prompt, completion = reply.usage or (0, 0)
        if self.kind == "openai":
            payload = {
                "id": "chatcmpl-unary", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake-model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            }
        else:
            payload = {
                "id": "msg_unary", "type": "message", "role": "assistant", "model": body.get("model", "claude-fake"),
                "content": [{"type": "text", "text": reply.text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }
        handler._json(200, payload)  # type: ignore[attr-defined]


def _writer(handler: BaseHTTPRequestHandler):
    def write(text: str) -> None:
        handler.wfile.write(text.encode("utf-8", errors="replace"))
        handler.wfile.flush()

    return write
