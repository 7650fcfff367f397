"""`keep_services`: where Arvados clients send and fetch blocks (this server).

The one Keep service is computed, not stored (`jobs.keep.services`), so `list`, `get` and
`accessible` describe it and the write methods are refused. `accessible` is what the SDK's
KeepClient calls to find where to PUT and GET blocks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.params import parse_json_param
from api.serializers import serialize
from api.urls_util import external_base_url
from api.viewsets.base import ArvadosViewSet
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied
from jobs.keep.services import KeepService, keep_services_accessible


class KeepServiceViewSet(ArvadosViewSet):
    model = KeepService  # type: ignore[assignment]  (computed, not a database model)
    resource = "keep_services"
    singular = "keep_service"
    EXTRA_METHODS: ClassVar[dict[str, dict[str, Any]]] = {
        "accessible": {
            "httpMethod": "GET",
            "path": "keep_services/accessible",
            "response": {"$ref": "KeepServiceList"},
        },
    }

    def services(self) -> list[KeepService]:
        return keep_services_accessible(base_url=external_base_url(self.request._request))

    def services_response(self) -> Response:
        filters = self.params.get("filters")
        where = self.params.get("where")
        if (filters is not None and parse_json_param(filters, "filters", list)) or (
            where is not None and parse_json_param(where, "where", dict)
        ):
            raise InvalidRequest("keep_services cannot be filtered: there is one, this server")
        select = self.selected()
        items = [serialize(s, resource=self.resource, fields=select) for s in self.services()]
        return Response(
            {
                "kind": "arvados#keepServiceList",
                "etag": "",
                "self_link": "",
                "offset": 0,
                "limit": len(items),
                "items_available": len(items),
                "items": items,
            }
        )

    @action(detail=False, methods=["get"])
    def accessible(self, request: Request) -> Response:
        """List the Keep services this client should use: this server."""
        return self.services_response()

    def list(self, request: Request) -> Response:
        return self.services_response()

    def retrieve(self, request: Request, uuid: str) -> Response:
        for service in self.services():
            if service.uuid == uuid:
                return Response(serialize(service, resource=self.resource, fields=self.selected()))
        raise NotFound()

    def create(self, request: Request) -> Response:
        raise PermissionDenied("Keep services are not configurable: this server is the one")

    def update(self, request: Request, uuid: str) -> Response:
        raise PermissionDenied("Keep services are not configurable: this server is the one")

    def destroy(self, request: Request, uuid: str) -> Response:
        raise PermissionDenied("Keep services are not configurable: this server is the one")
