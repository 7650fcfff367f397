"""Users, groups and API tokens."""

from __future__ import annotations

from typing import ClassVar

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from jobs.models.base import ArvadosModel


class CrunchUserManager(UserManager["User"]):
    pass


class User(AbstractUser, ArvadosModel):
    """A person or robot that owns objects. `is_admin` may read and write everything.

    Django admin access follows `is_admin` (kept in step with `is_staff`/`is_superuser`).
    """

    is_admin = models.BooleanField(default=False)
    identity_url = models.CharField(max_length=255, null=True, blank=True)
    prefs = models.JSONField(null=True, blank=True)
    default_owner_uuid = models.CharField(max_length=27, null=True, blank=True)

    objects: ClassVar[CrunchUserManager] = CrunchUserManager()

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "email",
        "username",
        "full_name",
        "first_name",
        "last_name",
        "identity_url",
        "is_active",
        "is_admin",
        "is_invited",
        "prefs",
        "default_owner_uuid",
        "writable_by",
    )
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "email",
            "username",
            "first_name",
            "last_name",
            "identity_url",
            "is_active",
            "is_admin",
            "prefs",
            "default_owner_uuid",
            "owner_uuid",
            "uuid",
        }
    )
    # Only admins may change these.
    ADMIN_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"is_active", "is_admin", "username", "identity_url", "owner_uuid"}
    )
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset({"prefs"})

    class Meta:
        db_table = "users"

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.is_staff = self.is_superuser = self.is_admin
        super().save(*args, **kwargs)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def is_invited(self) -> bool:
        return self.is_active

    @property
    def writable_by(self) -> list[str]:
        return [self.owner_uuid, self.uuid]


class Group(ArvadosModel):
    """A set of users (role) or a project. Permission links to a group grant its members."""

    name = models.CharField(max_length=255)
    group_class = models.CharField(max_length=255, null=True, blank=True)
    description = models.TextField(null=True, blank=True)
    properties = models.JSONField(null=True, blank=True)

    API_FIELDS: ClassVar[tuple[str, ...]] = ("name", "group_class", "description", "properties")
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"name", "group_class", "description", "properties", "owner_uuid", "uuid"}
    )
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset({"properties"})

    class Meta:
        db_table = "groups"


class ApiClientAuthorization(ArvadosModel):
    """An API token. Only a SHA-256 of the secret is stored; the secret is shown once."""

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="tokens")
    expires_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=list)
    default_owner_uuid = models.CharField(max_length=27, null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_by_ip_address = models.CharField(max_length=255, null=True, blank=True)
    created_by_ip_address = models.CharField(max_length=255, null=True, blank=True)
    api_client_uuid = models.CharField(max_length=27, null=True, blank=True)

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "user_id",
        "api_client_id",
        "api_token",
        "created_by_ip_address",
        "default_owner_uuid",
        "expires_at",
        "last_used_at",
        "last_used_by_ip_address",
        "scopes",
    )
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"owner_uuid", "expires_at", "scopes", "default_owner_uuid", "uuid"}
    )

    # Set by the service that creates the token, for the one response that may show it.
    api_token: str | None = None

    class Meta:
        db_table = "api_client_authorizations"

    @property
    def api_client_id(self) -> int:
        return 0
