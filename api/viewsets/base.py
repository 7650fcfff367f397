"""The base of every Arvados resource: get, list, create, update, delete.

DRF binds HTTP verbs to these actions in `api/urls.py`. A resource subclass names its model,
its plural and singular names, and optionally computed attributes (`extra_attributes`) and
extra methods (decorated actions plus their discovery description in `EXTRA_METHODS`). The
rules live in `jobs` services and selectors; this class only parses, authenticates, calls them
and shapes the answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import ViewSet

from api.authentication import authenticate, reader_actors
from api.params import ListParams, merged_params, parse_json_param, parse_list_params, parse_select
from api.serializers import plain, serialize
from jobs import selectors
from jobs.exceptions import Disabled, InvalidRequest, NotFound
from jobs.filters import apply_filters, column_types
from jobs.models import ArvadosModel
from jobs.services.objects import Actor
from jobs.services.resources import service_for


class ArvadosViewSet(ViewSet):
    model: ClassVar[type[ArvadosModel]]
    resource: ClassVar[str]  # "links"
    singular: ClassVar[str]  # "link"
    # Extra methods for the discovery document: name -> description (see api/discovery.py).
    EXTRA_METHODS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Models those methods return that are not resources of their own (discovery schemas).
    EXTRA_SCHEMAS: ClassVar[tuple[type[Any], ...]] = ()
    # Actions that work without a token.
    PUBLIC_ACTIONS: ClassVar[frozenset[str]] = frozenset()

    actor: Actor
    params: dict[str, Any]

    # --- request set-up ----------------------------------------------------------------

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        action = self.action or ""
        if f"{self.resource}.{self.method_name(action)}" in settings.CRUNCH_DISABLE_API_METHODS:
            raise Disabled()
        self.params = merged_params(request.query_params, request.data)
        actor = authenticate(
            request._request, self.params, required=action not in self.PUBLIC_ACTIONS
        )
        if actor is not None:
            self.actor = actor

    @staticmethod
    def method_name(action: str) -> str:
        return {
            "retrieve": "get",
            "destroy": "delete",
            "partial_update": "update",
        }.get(action, action)

    # --- hooks -------------------------------------------------------------------------

    def extra_attributes(self, obj: Any) -> dict[str, Any]:
        """Computed attributes of one object (e.g. clone_urls)."""
        return {}

    def prepare(self, objects: list[Any]) -> None:
        """Called with a page of objects before they are rendered (to load, in one query,
        what `extra_attributes` needs for all of them)."""

    def base_queryset(self) -> Any:
        return self.model.objects.all()

    # --- helpers -----------------------------------------------------------------------

    def readers(self) -> list[Actor]:
        return [self.actor, *reader_actors(self.request._request, self.params)]

    def readable(self, queryset: Any) -> Any:
        return selectors.restrict_readable(queryset, [a.user for a in self.readers()])

    def get_object(self, uuid: str) -> Any:
        obj = selectors.readable_object(
            self.base_queryset(), [a.user for a in self.readers()], uuid
        )
        if obj is None:
            raise NotFound()
        return obj

    def render(self, obj: Any, fields: list[str] | None = None) -> dict[str, Any]:
        return serialize(obj, resource=self.resource, fields=fields, extra=self.extra_attributes)

    def selected(self) -> list[str] | None:
        return parse_select(self.params.get("select"), self.model.all_api_fields())

    def object_attrs(self) -> dict[str, Any]:
        raw = self.params.get(self.singular)
        if raw is None:
            # A JSON body of bare attributes, as the SDK's Collection.save_new() sends: the
            # Arvados server wraps a body's attribute names into the object (Rails'
            # wrap_parameters), so do the same.
            data = self.request.data
            fields = set(self.model.all_api_fields()) | set(self.model.CLIENT_FIELDS)
            wrapped = {k: v for k, v in data.items() if k in fields} if type(data) is dict else {}
            if wrapped:
                return wrapped
            raise InvalidRequest(f"No {self.singular} hash provided with request")
        try:
            return parse_json_param(raw, self.singular, dict)
        except InvalidRequest:
            raise InvalidRequest(f"No {self.singular} hash provided with request") from None

    def filtered(self, lp: ListParams) -> Any:
        queryset = apply_filters(
            self.base_queryset(), self.model, filters=lp.filters, where=lp.where
        )
        return self.readable(queryset)

    def list_response(self, queryset: Any, lp: ListParams) -> Response:
        body: dict[str, Any] = {
            "kind": f"{self.model.kind()}List",
            "etag": "",
            "self_link": "",
            "offset": lp.offset,
            "limit": lp.limit,
        }
        columns = column_types(self.model)
        if lp.distinct and lp.select and all(name in columns for name in lp.select):
            # SELECT DISTINCT over the selected columns, ordered by those of them the
            # client ordered by (spec §1.8): e.g. the distinct head_uuids of some links.
            order = [term for term in lp.order if term.lstrip("-") in lp.select]
            queryset = queryset.values(*lp.select).order_by(*order).distinct()
            rows = list(queryset[lp.offset : lp.offset + lp.limit]) if lp.limit else []
            body["items"] = [
                {"kind": self.model.kind()} | {k: plain(v) for k, v in row.items()} for row in rows
            ]
            page: list[Any] = rows
        else:
            if lp.distinct:
                queryset = queryset.distinct()
            page = (
                list(queryset.order_by(*lp.order)[lp.offset : lp.offset + lp.limit])
                if lp.limit
                else []
            )
            self.prepare(page)
            body["items"] = [self.render(obj, lp.select) for obj in page]
        if lp.count:
            if lp.offset == 0 and len(page) < lp.limit:
                body["items_available"] = len(page)
            else:
                body["items_available"] = queryset.count()
        return Response(body)

    # --- the five standard methods -----------------------------------------------------

    def list(self, request: Request) -> Response:
        lp = parse_list_params(self.params, self.model, self.model.all_api_fields())
        return self.list_response(self.filtered(lp), lp)

    def retrieve(self, request: Request, uuid: str) -> Response:
        return Response(self.render(self.get_object(uuid), self.selected()))

    def create(self, request: Request) -> Response:
        attrs = self.object_attrs()
        obj = service_for(self.model).create(actor=self.actor, attrs=attrs)
        return Response(self.render(obj, self.selected()))

    def update(self, request: Request, uuid: str) -> Response:
        obj = self.get_object(uuid)
        attrs = self.object_attrs()
        obj = service_for(self.model).update(actor=self.actor, obj=obj, attrs=attrs)
        return Response(self.render(obj, self.selected()))

    def partial_update(self, request: Request, uuid: str) -> Response:
        return self.update(request, uuid)

    def destroy(self, request: Request, uuid: str) -> Response:
        obj = self.get_object(uuid)
        body = self.render(obj)
        service_for(self.model).delete(actor=self.actor, obj=obj)
        return Response(body)
