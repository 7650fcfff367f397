"""`collections`: manifests handed to each caller signed for the caller's token.

The database keeps manifests unsigned (signatures are per token and expire); every manifest
this resource returns (get, list, create, update, delete) has each block locator signed for
the token of the request, so the caller can read those blocks from Keep. Signing happens in
`render`, after the etag is computed from the stored attributes: the etag names the stored
version, not a presentation that changes every second.

`get` also takes a portable data hash for the uuid, as in Arvados: the answer is the content
of a readable collection with that hash, with the hash as its uuid.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.http import HttpResponse
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.serializers import serialize
from api.viewsets.base import ArvadosViewSet
from api.viewsets.lineage import LINEAGE_METHODS, lineage_response
from jobs import manifests
from jobs.exceptions import NotFound
from jobs.keep.blocks import manifest_sign
from jobs.keep.collections import collection_readable
from jobs.models import ApiClientAuthorization, Collection

PDH_ATTRIBUTES = ("uuid", "portable_data_hash", "manifest_text", "trash_at")


def signed_manifest(obj: Collection, auth: ApiClientAuthorization | None) -> str:
    """The collection's manifest signed for `auth`'s token, until its trash time at most."""
    text = obj.manifest_text or ""
    if auth is None or not text:
        return text
    not_after = int(obj.trash_at.timestamp()) if obj.trash_at else None
    return manifest_sign(text=text, token_id=auth.token_hash, not_after=not_after)


def render_collection(
    obj: Collection, auth: ApiClientAuthorization | None, fields: list[str] | None = None
) -> dict[str, Any]:
    out = serialize(obj, resource="collections", fields=fields)
    if "manifest_text" in out:
        out["manifest_text"] = signed_manifest(obj, auth)
    return out


class CollectionViewSet(ArvadosViewSet):
    model = Collection
    resource = "collections"
    singular = "collection"
    EXTRA_METHODS: ClassVar[dict[str, dict[str, Any]]] = LINEAGE_METHODS

    def caller(self) -> ApiClientAuthorization | None:
        return getattr(getattr(self, "actor", None), "auth", None)

    def render(self, obj: Any, fields: list[str] | None = None) -> dict[str, Any]:
        out = super().render(obj, fields)
        if "manifest_text" in out:
            out["manifest_text"] = signed_manifest(obj, self.caller())
        return out

    def retrieve(self, request: Request, uuid: str) -> Response:
        locator = manifests.parse_locator(uuid)
        if locator is None or locator.size is None:
            return super().retrieve(request, uuid)
        obj = collection_readable(users=[a.user for a in self.readers()], identifier=uuid)
        if obj is None:
            raise NotFound()
        # As in Arvados: the content, not one of the records that hold it.
        full = super().render(obj) | {"uuid": obj.portable_data_hash}
        out: dict[str, Any] = {"kind": full["kind"]}
        for name in self.selected() or PDH_ATTRIBUTES:
            if name in PDH_ATTRIBUTES:
                out[name] = full[name]
        if "manifest_text" in out:
            out["manifest_text"] = signed_manifest(obj, self.caller())
        return Response(out)

    @action(detail=True, methods=["get"])
    def provenance(self, request: Request, uuid: str) -> HttpResponse:
        """What produced this collection (by uuid or portable data hash), upstream."""
        return lineage_response(self, uuid, downstream=False)

    @action(detail=True, methods=["get"])
    def used_by(self, request: Request, uuid: str) -> HttpResponse:
        """Every job that read this collection, their outputs, and so on downstream."""
        return lineage_response(self, uuid, downstream=True)
