"""Routes. Collection-level methods (`users/current`, `jobs/queue`) come before `{uuid}`."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import URLPattern, path, re_path

from api.bacalhau.urls import urlpatterns as bacalhau_urlpatterns
from api.collection_files import COLLECTION_FILES_ROUTE, collection_files
from api.discovery import discovery_view
from api.git_http import GIT_HTTP_ROUTE, git_http
from api.keep import KEEP_BLOCK_ROUTE, keep_block
from api.logstream import LOG_TAIL_FOLLOW_ROUTE, log_tail_follow
from api.metrics import METRICS_ROUTE, metrics_view
from api.nomad.urls import urlpatterns as nomad_urlpatterns
from api.ray.urls import urlpatterns as ray_urlpatterns
from api.viewsets.resources import RESOURCE_VIEWSETS

UUID = r"(?P<uuid>[^/]+)"


def resource_routes(viewset: Any) -> list[URLPattern]:
    base = f"arvados/v1/{viewset.resource}"
    routes = []
    for name, method in _extra_actions(viewset, detail=False):
        routes.append(
            re_path(
                rf"^{base}/{name}$",
                viewset.as_view({method: name}),
                name=f"{viewset.resource}-{name}",
            )
        )
    for name, method in _extra_actions(viewset, detail=True):
        routes.append(
            re_path(
                rf"^{base}/{UUID}/{name}$",
                viewset.as_view({method: name}),
                name=f"{viewset.resource}-{name}",
            )
        )
    routes.append(
        re_path(
            rf"^{base}$",
            viewset.as_view({"get": "list", "post": "create"}),
            name=f"{viewset.resource}-list",
        )
    )
    routes.append(
        re_path(
            rf"^{base}/{UUID}$",
            viewset.as_view(
                {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"}
            ),
            name=f"{viewset.resource}-detail",
        )
    )
    return routes


def _extra_actions(viewset: Any, *, detail: bool) -> list[tuple[str, str]]:
    found = []
    for extra in viewset.get_extra_actions():
        if extra.detail == detail:
            for method in extra.mapping:
                found.append((extra.url_path, method))
    return found


urlpatterns: list[Any] = [
    path("admin/", admin.site.urls),
    path("discovery/v1/apis/arvados/v1/rest", discovery_view, name="discovery"),
    re_path(GIT_HTTP_ROUTE, git_http, name="git-http"),
    re_path(KEEP_BLOCK_ROUTE, keep_block, name="keep-block"),
    re_path(COLLECTION_FILES_ROUTE, collection_files, name="collection-files"),
    re_path(METRICS_ROUTE, metrics_view, name="metrics"),
    # A streaming (asynchronous) response, outside the DRF viewset; described with its
    # methods in the discovery document (api/viewsets/jobs.py).
    re_path(LOG_TAIL_FOLLOW_ROUTE, log_tail_follow, name="jobs-log_tail_follow"),
]
for _viewset in RESOURCE_VIEWSETS:
    urlpatterns += resource_routes(_viewset)
# Front doors other than Arvados, each in its own package.
urlpatterns += ray_urlpatterns
urlpatterns += nomad_urlpatterns
urlpatterns += bacalhau_urlpatterns
