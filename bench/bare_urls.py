"""The API's routes plus the benchmark baseline: a bare Django view that returns one row."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from jobs.models import Link


def bare_link(request: HttpRequest, pk: int) -> JsonResponse:
    """One Link row by primary key: no authentication, permissions, DRF or serializer."""
    return JsonResponse(Link.objects.values().get(pk=pk))


urlpatterns: list[Any] = [
    path("bench/bare/<int:pk>", bare_link),
    path("", include("api.urls")),
]
