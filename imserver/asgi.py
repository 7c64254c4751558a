"""ASGI entry point: HTTP (admin now; BOSH later) and, later, WebSocket (RFC 7395)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imserver.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from xmpp.transport.websocket import XmppWebSocketConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The admin's CSS and JS are served by the same process, like Openfire's console.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        # RFC 7395 at Prosody's and ejabberd's path.
        "websocket": URLRouter([path("xmpp-websocket", XmppWebSocketConsumer.as_asgi())]),
    }
)
