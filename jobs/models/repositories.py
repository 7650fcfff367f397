"""Git repositories hosted by Crunch (bare repositories under CRUNCH_DATA_DIR/git)."""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs.models.base import ArvadosModel


class Repository(ArvadosModel):
    name = models.CharField(max_length=255, unique=True)

    API_FIELDS: ClassVar[tuple[str, ...]] = ("name", "fetch_url", "push_url", "clone_urls")
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset({"name", "owner_uuid", "uuid"})

    class Meta:
        db_table = "repositories"
        verbose_name_plural = "repositories"
