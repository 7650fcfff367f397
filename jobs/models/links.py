"""Links: typed edges between objects (permissions, image tags, provenance)."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs.models.base import ArvadosModel

PERMISSION_LEVELS = {"can_read": 1, "can_write": 2, "can_manage": 3}


class Link(ArvadosModel):
    tail_uuid = models.CharField(max_length=255, null=True, blank=True)
    head_uuid = models.CharField(max_length=255, null=True, blank=True)
    link_class = models.CharField(max_length=255, null=True, blank=True)
    name = models.CharField(max_length=255, null=True, blank=True)
    properties = models.JSONField(null=True, blank=True)

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "tail_uuid",
        "link_class",
        "name",
        "head_uuid",
        "properties",
    )
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"tail_uuid", "head_uuid", "link_class", "name", "properties", "owner_uuid", "uuid"}
    )
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset({"properties"})

    class Meta:
        db_table = "links"
        indexes = [  # noqa: RUF012  (Django reads Meta attributes; they are never mutated)
            models.Index(fields=["head_uuid"], name="links_head_uuid"),
            models.Index(fields=["tail_uuid"], name="links_tail_uuid"),
            models.Index(fields=["link_class", "name"], name="links_class_name"),
        ]
