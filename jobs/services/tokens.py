"""API tokens: creating them, and turning a presented secret into an authorization."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import rowsql
from jobs.models import ApiClientAuthorization, User
from jobs.uuids import BASE36


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _secret_of(presented: str) -> str:
    # Arvados v2 tokens are "v2/<authorization uuid>/<secret>"; the secret identifies them.
    if presented.startswith("v2/"):
        parts = presented.split("/")
        if len(parts) == 3:
            return parts[2]
    return presented


def user_get_or_create(*, username: str, admin: bool = False) -> User:
    """The user named `username`, created (active) if missing; `admin` promotes it."""
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        if user is None:
            now = timezone.now()
            uuid = User.new_uuid()
            user = User(
                username=username,
                uuid=uuid,
                owner_uuid=system_user().uuid,
                created_at=now,
                modified_at=now,
                is_active=True,
                is_admin=admin,
            )
            user.set_unusable_password()
            user.save()
        elif admin and not user.is_admin:
            user.is_admin = True
            user.modified_at = timezone.now()
            user.save()
    return user


def system_user() -> User:
    """The system user (`<prefix>-tpzed-000000000000000`), admin, created on first use."""
    from jobs.uuids import system_user_uuid

    uuid = system_user_uuid()
    user = User.objects.filter(uuid=uuid).first()
    if user is None:
        now = timezone.now()
        user, _ = User.objects.get_or_create(
            uuid=uuid,
            defaults={
                "username": "root",
                "owner_uuid": uuid,
                "created_at": now,
                "modified_at": now,
                "is_active": True,
                "is_admin": True,
                "first_name": "root",
                "password": "!",
            },
        )
    return user


def token_create(
    *,
    user: User,
    scopes: list[str] | None = None,
    expires_at: dt.datetime | None = None,
    owner_uuid: str | None = None,
    created_by_ip: str | None = None,
    default_owner_uuid: str | None = None,
) -> ApiClientAuthorization:
    """A new token for `user`; the returned object's `api_token` holds the secret, once."""
    secret = "".join(secrets.choice(BASE36) for _ in range(50))
    now = timezone.now()
    auth = ApiClientAuthorization.objects.create(
        uuid=ApiClientAuthorization.new_uuid(),
        owner_uuid=owner_uuid or user.uuid,
        created_at=now,
        modified_at=now,
        modified_by_user_uuid=user.uuid,
        token_hash=token_hash(secret),
        user=user,
        scopes=scopes if scopes is not None else ["all"],
        expires_at=expires_at,
        created_by_ip_address=created_by_ip,
        default_owner_uuid=default_owner_uuid,
    )
    auth.api_token = secret
    return auth


def token_authenticate(*, presented: str, ip_address: str | None) -> ApiClientAuthorization | None:
    """The live authorization for a presented token, or None.

    Records `last_used_at`/`last_used_by_ip_address`, at most once per
    CRUNCH_TOKEN_TOUCH_SECONDS so that reads do not all become writes.
    """
    if not presented or len(presented) > 512:
        return None
    auth = _authorization(token_hash(_secret_of(presented)))
    if auth is None:
        return None
    now = timezone.now()
    if auth.expires_at is not None and auth.expires_at <= now:
        return None
    touch = dt.timedelta(seconds=settings.CRUNCH_TOKEN_TOUCH_SECONDS)
    if (
        auth.last_used_at is None
        or now - auth.last_used_at >= touch
        or auth.last_used_by_ip_address != ip_address
    ):
        ApiClientAuthorization.objects.filter(pk=auth.pk).update(
            last_used_at=now, last_used_by_ip_address=ip_address
        )
        auth.last_used_at, auth.last_used_by_ip_address = now, ip_address
    return auth


def _authorization(hashed: str) -> ApiClientAuthorization | None:
    """The authorization with this token hash (unique), with its user, in one written-out
    read (`jobs.rowsql`): every authenticated request makes it."""
    tokens, users = rowsql.reader(ApiClientAuthorization), rowsql.reader(User)
    user_id = ApiClientAuthorization._meta.get_field("user").column
    row = rowsql.fetch_one(
        f"SELECT {tokens.columns('a')}, {users.columns('u')} "
        f"FROM {ApiClientAuthorization._meta.db_table} a "
        f"JOIN {User._meta.db_table} u ON u.{User._meta.pk.column} = a.{user_id} "
        "WHERE a.token_hash = %s",
        [hashed],
    )
    if row is None:
        return None
    auth = tokens.build(row[: len(tokens)])
    auth.user = users.build(row[len(tokens) :])
    return auth


def scopes_allow(*, scopes: list[str], method: str, path: str) -> bool:
    """Spec §1.2: "all", an exact "<METHOD> <path>", or a prefix scope ending in "/"."""
    methods = {method, "GET"} if method == "HEAD" else {method}
    for scope in scopes:
        if scope == "all":
            return True
        if not isinstance(scope, str):
            continue
        for m in methods:
            request_line = f"{m} {path}"
            if scope == request_line or (scope.endswith("/") and request_line.startswith(scope)):
                return True
    return False
