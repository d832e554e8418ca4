"""WebSocket routes of the chat app (merged into config/asgi.py's URLRouter)."""
from __future__ import annotations

from django.urls import path

from chat.consumers import ConversationConsumer, InboxConsumer

# <str:...>, not <uuid:...>: a malformed id must reach the consumer and get its 4404, not crash the router.
websocket_urlpatterns = [
    path("ws/chat/<str:conversation_id>/", ConversationConsumer.as_asgi()),
    path("ws/inbox/", InboxConsumer.as_asgi()),
]
