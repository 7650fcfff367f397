"""ASGI entry point: `crunch serve` runs this under uvicorn."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")
django_application = get_asgi_application()

from api.keep import keep_upload_guard  # noqa: E402  (needs the settings loaded above)

application = keep_upload_guard(django_application)
