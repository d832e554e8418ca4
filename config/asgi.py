"""ASGI entry point: HTTP through Django (django-tenants picks the schema), WebSocket through Channels with the
workspace resolved from the Host header (config.ws)."""
import os

from django.core.asgi import get_asgi_application

# Fail closed: without an explicit choice, the production settings (which refuse to start without secrets).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from config.body_caps import RequestBodyCapMiddleware  # noqa: E402
from config.metrics import WebSocketMetricsMiddleware  # noqa: E402
from config.ws import WorkspaceAuthMiddleware, WorkspaceHostMiddleware, websocket_urlpatterns  # noqa: E402
from chat.routing import websocket_urlpatterns as chat_websocket_urlpatterns  # noqa: E402
from embeds.routing import websocket_urlpatterns as embed_websocket_urlpatterns  # noqa: E402

websocket_routes = websocket_urlpatterns + chat_websocket_urlpatterns + embed_websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": RequestBodyCapMiddleware(django_asgi_app),  # upload bodies over their cap: 413 before reading
        "websocket": WebSocketMetricsMiddleware(WorkspaceHostMiddleware(
            SessionMiddlewareStack(WorkspaceAuthMiddleware(URLRouter(websocket_routes)))
        ), routes=websocket_routes),
    }
)

from config.warmup import warm_up_start  # noqa: E402

# The first answer's model, tokenizer and vector client load in a background thread now, not on the first request.
warm_up_start(process="web")
