"""WebSocket routes of the widget (merged into config/asgi.py's URLRouter)."""
from __future__ import annotations

from django.urls import path

from embeds.consumers import WidgetConversationConsumer

# <str:...>: a malformed id reaches the consumer and gets chat's 4404, it doesn't crash the router.
websocket_urlpatterns = [
    path("widget/v1/ws/<str:conversation_id>/", WidgetConversationConsumer.as_asgi()),
]
