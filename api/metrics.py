"""`GET /metrics`: Prometheus' text format, for operators' scrapers (jobs/metrics.py says
what is in it). Open without a token only when CRUNCH_METRICS_PUBLIC is true; otherwise the
caller must present an admin token (401 without one, 403 with another)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from api.authentication import authenticate
from api.exceptions import response_for
from jobs.exceptions import CrunchError, Forbidden
from jobs.metrics import DatabaseCollector

METRICS_ROUTE = r"^metrics$"


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.CRUNCH_METRICS_PUBLIC:
        try:
            actor = authenticate(request, {})
            if actor is None or not actor.user.is_admin:
                raise Forbidden("Metrics need an admin token (or CRUNCH_METRICS_PUBLIC=true)")
        except CrunchError as exc:  # not logged in, not an admin: the Arvados envelope
            return response_for(exc)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(DatabaseCollector())  # type: ignore[arg-type]
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
