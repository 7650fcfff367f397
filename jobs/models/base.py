"""The common shape of every Arvados object: uuid, owner, timestamps, modifiers."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from jobs import uuids


class ArvadosShape:
    """What makes something render as an Arvados object: its class name, kind, uuid infix
    and attributes. Database models get it through ArvadosModel; computed objects (a Keep
    service) use it directly."""

    COMMON_FIELDS: ClassVar[tuple[str, ...]] = (
        "uuid",
        "owner_uuid",
        "created_at",
        "modified_by_client_uuid",
        "modified_by_user_uuid",
        "modified_at",
    )
    API_FIELDS: ClassVar[tuple[str, ...]] = ()
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__

    @classmethod
    def kind(cls) -> str:
        return uuids.kind_for(cls.class_name())

    @classmethod
    def infix(cls) -> str:
        return uuids.infix_for(cls.class_name())

    @classmethod
    def all_api_fields(cls) -> tuple[str, ...]:
        return cls.COMMON_FIELDS + cls.API_FIELDS

    def get(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None and name in self.HASH_FIELDS:
            return {}
        return value


class ArvadosModel(ArvadosShape, models.Model):
    """Common columns of every Arvados resource.

    Subclasses declare which attributes a client may send (`CLIENT_FIELDS`), which hold JSON
    objects (`HASH_FIELDS`), and the attributes a response shows (`API_FIELDS`, in order,
    after the common ones).
    """

    uuid = models.CharField(max_length=27, unique=True)
    owner_uuid = models.CharField(max_length=27, db_index=True)
    created_at = models.DateTimeField()
    modified_at = models.DateTimeField(db_index=True)
    modified_by_client_uuid = models.CharField(max_length=27, null=True, blank=True)
    modified_by_user_uuid = models.CharField(max_length=27, null=True, blank=True)

    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset()
    # Attributes clients may send but the server silently ignores (spec §1.5).
    IGNORED_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "created_at",
            "modified_at",
            "modified_by_client_uuid",
            "modified_by_user_uuid",
            "kind",
            "etag",
            "href",
        }
    )

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.uuid

    @classmethod
    def new_uuid(cls) -> str:
        return uuids.generate(cls.class_name())
