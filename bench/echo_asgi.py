"""The stack's own limit for bench/chat.py: a bare Channels consumer on the same server (uvicorn, one process), with
no authentication, no database, no Redis and no answering, speaking the shape of our protocol.

    uvicorn bench.echo_asgi:application --port 8001 --ws-per-message-deflate false

On connect it sends `welcome`; `resume` gets `resumed`; a `message` gets what a reply of ours looks like on the
wire: the `message` event, `ack`, `agent_started`, ECHO_TOKENS `token` events (the question's words, cycled) and
`agent_completed` — each with a seq, one frame per event, as many frames as a typical answer of ours.
"""
from __future__ import annotations

import json
import os

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False, SECRET_KEY="echo-bench", ALLOWED_HOSTS=["*"], INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={},  # no channel layer: a bare consumer
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

ECHO_TOKENS = int(os.environ.get("ECHO_TOKENS", "20"))


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        self.seq = 0
        await self.send(text_data=json.dumps({"type": "welcome", "last_seq": 0}))

    def _event(self, **event: object) -> str:
        self.seq += 1
        return json.dumps({"seq": self.seq, **event})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = json.loads(text_data or "{}")
        kind = frame.get("type")
        if kind == "resume":
            await self.send(text_data=json.dumps({"type": "resumed", "last_seq": self.seq, "replayed": 0}))
        elif kind == "ping":
            await self.send(text_data=json.dumps({"type": "pong", "last_seq": self.seq}))
        elif kind == "message":
            text = str(frame.get("text", ""))
            await self.send(text_data=self._event(type="message", message={"id": self.seq, "content": text}))
            await self.send(text_data=json.dumps({"type": "ack", "client_id": frame.get("client_id")}))
            await self.send(text_data=self._event(type="agent_started", reply_to=1))
            words = text.split() or ["echo"]
            parts = []
            for index in range(ECHO_TOKENS):
                piece = words[index % len(words)] + " "
                parts.append(piece)
                await self.send(text_data=self._event(type="token", reply_to=1, text=piece))
            await self.send(text_data=self._event(
                type="agent_completed", reply_to=1, message={"id": self.seq, "content": "".join(parts)}))


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("ws/chat/<str:conversation_id>/", EchoConsumer.as_asgi())]),
})
