"""Collections: named manifests of files, identified by portable data hash."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs.models.base import ArvadosModel


class Collection(ArvadosModel):
    name = models.CharField(max_length=255, null=True, blank=True)
    description = models.TextField(null=True, blank=True)
    manifest_text = models.TextField(default="", blank=True)
    portable_data_hash = models.CharField(max_length=255, db_index=True)
    properties = models.JSONField(null=True, blank=True)
    replication_desired = models.IntegerField(null=True, blank=True)
    trash_at = models.DateTimeField(null=True, blank=True)
    delete_at = models.DateTimeField(null=True, blank=True)
    is_trashed = models.BooleanField(default=False)
    file_count = models.IntegerField(default=0)
    file_size_total = models.BigIntegerField(default=0)

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "portable_data_hash",
        "replication_desired",
        "replication_confirmed",
        "manifest_text",
        "name",
        "description",
        "properties",
        "trash_at",
        "delete_at",
        "is_trashed",
        "file_count",
        "file_size_total",
    )
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "name",
            "description",
            "manifest_text",
            "portable_data_hash",
            "properties",
            "replication_desired",
            "trash_at",
            "delete_at",
            "is_trashed",
            "owner_uuid",
            "uuid",
        }
    )
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset({"properties"})

    class Meta:
        db_table = "collections"

    @property
    def replication_confirmed(self) -> int | None:
        return None
