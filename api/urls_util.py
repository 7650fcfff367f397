"""URLs handed to clients: built from CRUNCH_EXTERNAL_URL, else from the request's Host."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def external_base_url(request: HttpRequest) -> str:
    if settings.CRUNCH_EXTERNAL_URL:
        return settings.CRUNCH_EXTERNAL_URL
    return f"{request.scheme}://{request.get_host()}"
