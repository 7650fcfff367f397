"""Compute nodes (workers) that run jobs."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs.models.base import ArvadosModel


class Node(ArvadosModel):
    hostname = models.CharField(max_length=255, null=True, blank=True)
    domain = models.CharField(max_length=255, null=True, blank=True)
    ip_address = models.CharField(max_length=255, null=True, blank=True)
    slot_number = models.IntegerField(null=True, blank=True)
    first_ping_at = models.DateTimeField(null=True, blank=True)
    last_ping_at = models.DateTimeField(null=True, blank=True, db_index=True)  # live_nodes()
    job_uuid = models.CharField(max_length=27, null=True, blank=True)
    info = models.JSONField(null=True, blank=True)
    properties = models.JSONField(null=True, blank=True)

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "hostname",
        "domain",
        "ip_address",
        "slot_number",
        "first_ping_at",
        "last_ping_at",
        "job_uuid",
        "info",
        "properties",
    )
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"hostname", "domain", "ip_address", "info", "properties", "owner_uuid", "uuid"}
    )
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset({"info", "properties"})

    class Meta:
        db_table = "nodes"
