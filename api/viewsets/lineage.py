"""`provenance` and `used_by` of jobs and collections (jobs/provenance.py), shared by both
viewsets."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse

from api.discovery import INTEGER, query_parameter
from api.viewsets.base import ArvadosViewSet
from jobs import provenance

_PARAMETERS = {
    "depth": query_parameter(
        INTEGER,
        f"Levels of jobs to walk (default {provenance.DEFAULT_DEPTH}, "
        f"at most {provenance.MAX_DEPTH}).",
        default=str(provenance.DEFAULT_DEPTH),
    ),
}
LINEAGE_METHODS: dict[str, dict[str, Any]] = {
    "provenance": {"parameters": _PARAMETERS, "response": {}},
    "used_by": {"parameters": _PARAMETERS, "response": {}},
}


def lineage_response(view: ArvadosViewSet, ident: str, *, downstream: bool) -> HttpResponse:
    """The lineage of a job or collection, as the caller may see it: a graph of nodes and
    edges (jobs/provenance.py). A graph can hold thousands of nodes: it is encoded once,
    straight to compact UTF-8 JSON by orjson (the same bytes as the standard library's
    `json.dumps(..., ensure_ascii=False, separators=(",", ":"))`, a seventh of the time),
    without the renderer's passes."""
    graph = provenance.lineage(
        user=view.actor.user,
        ident=ident,
        depth=provenance.parse_depth(view.params.get("depth")),
        downstream=downstream,
    )
    return HttpResponse(orjson.dumps(graph), content_type="application/json")
