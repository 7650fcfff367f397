"""ASGI entry point: `crunch serve` runs this under uvicorn."""

import os
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")


class SyncChainASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware chain and the view run as one synchronous
    call on the request's thread, as under WSGI.

    Every view and middleware here is synchronous (streaming responses iterate
    asynchronously, after the chain). Django's own ASGI handler builds an asynchronous chain
    instead, in which each middleware's process_request, process_view and process_response
    and the view are separate hops between the event loop and the request's thread: about
    fifteen per request, which cost more CPU than a simple view itself.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # thread_sensitive: the request's own thread, where request_started ran (the
        # database connection of this request lives there).
        response: Any = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        return response


django.setup(set_prefix=False)
django_application = SyncChainASGIHandler()

from api.bacalhau.logs import ROUTES as BACALHAU_ROUTES  # noqa: E402
from api.keep import keep_asgi  # noqa: E402  (needs the settings loaded above)
from api.ray.tail import ROUTES as RAY_ROUTES  # noqa: E402
from api.websocket import Route, websocket_app  # noqa: E402

# Each front door's WebSocket routes (api/websocket.py); all other paths are HTTP only.
WEBSOCKET_ROUTES: list[Route] = [*RAY_ROUTES, *BACALHAU_ROUTES]

# Block uploads are taken before Django, which would first copy each body to a temporary file.
# The admin's stylesheets and scripts (`/static/`) come from the installed apps, so the
# operator pages work from `crunch serve` with no collectstatic and no other web server.
application = websocket_app(keep_asgi(ASGIStaticFilesHandler(django_application)), WEBSOCKET_ROUTES)
