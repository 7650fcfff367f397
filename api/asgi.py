"""ASGI entry point: `crunch serve` runs this under uvicorn."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")
django_application = get_asgi_application()

from api.keep import keep_asgi  # noqa: E402  (needs the settings loaded above)

# Block uploads are taken before Django, which would first copy each body to a temporary file.
application = keep_asgi(django_application)
