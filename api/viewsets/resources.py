"""The resources of this layer: users, groups, tokens, links, collections, repositories, nodes,
keep services."""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.urls_util import external_base_url
from api.viewsets.base import ArvadosViewSet
from api.viewsets.collections import CollectionViewSet
from api.viewsets.keep import KeepServiceViewSet
from jobs.models import ApiClientAuthorization, Group, Link, Node, Repository, User

SELECT_PARAM = {
    "select": {
        "type": "array",
        "location": "query",
        "description": "Attributes of the object to return.",
    }
}


class UserViewSet(ArvadosViewSet):
    model = User
    resource = "users"
    singular = "user"
    EXTRA_METHODS: ClassVar[dict[str, dict[str, Any]]] = {
        "current": {"httpMethod": "GET", "path": "users/current", "parameters": SELECT_PARAM},
    }

    @action(detail=False, methods=["get"])
    def current(self, request: Request) -> Response:
        return Response(self.render(self.actor.user, self.selected()))


class GroupViewSet(ArvadosViewSet):
    model = Group
    resource = "groups"
    singular = "group"


class ApiClientAuthorizationViewSet(ArvadosViewSet):
    model = ApiClientAuthorization
    resource = "api_client_authorizations"
    singular = "api_client_authorization"
    EXTRA_METHODS: ClassVar[dict[str, dict[str, Any]]] = {
        "current": {
            "httpMethod": "GET",
            "path": "api_client_authorizations/current",
            "parameters": SELECT_PARAM,
        },
    }

    def base_queryset(self) -> Any:
        return ApiClientAuthorization.objects.select_related("user")

    def extra_attributes(self, obj: Any) -> dict[str, Any]:
        return {"user_id": obj.user_id, "api_token": obj.api_token}

    @action(detail=False, methods=["get"])
    def current(self, request: Request) -> Response:
        return Response(self.render(self.actor.auth, self.selected()))


class LinkViewSet(ArvadosViewSet):
    model = Link
    resource = "links"
    singular = "link"


class RepositoryViewSet(ArvadosViewSet):
    model = Repository
    resource = "repositories"
    singular = "repository"

    def extra_attributes(self, obj: Any) -> dict[str, Any]:
        url = f"{external_base_url(self.request._request)}/git/{obj.name}.git"
        return {"fetch_url": url, "push_url": url, "clone_urls": [url]}


class NodeViewSet(ArvadosViewSet):
    model = Node
    resource = "nodes"
    singular = "node"


from api.viewsets.jobs import JobViewSet  # noqa: E402  (jobs builds on the resources above)

RESOURCE_VIEWSETS: tuple[type[ArvadosViewSet], ...] = (
    UserViewSet,
    GroupViewSet,
    ApiClientAuthorizationViewSet,
    LinkViewSet,
    CollectionViewSet,
    RepositoryViewSet,
    NodeViewSet,
    JobViewSet,
    KeepServiceViewSet,
)
