"""ASGI entry point: `crunch serve` runs this under uvicorn."""

import os

import django
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")

django.setup(set_prefix=False)
from api.asgi_handler import SyncChainASGIHandler  # noqa: E402

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
