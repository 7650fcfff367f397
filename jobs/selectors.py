"""Reads: objects by uuid, readable sets, lists with filters (services write, selectors read)."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q, QuerySet

from jobs import permissions, rowsql
from jobs.models import (
    ApiClientAuthorization,
    ArvadosModel,
    Collection,
    Execution,
    Group,
    Job,
    Link,
    Node,
    Repository,
    User,
)
from jobs.uuids import infix_of

MODELS: tuple[type[ArvadosModel], ...] = (
    User,
    Group,
    ApiClientAuthorization,
    Link,
    Collection,
    Repository,
    Node,
    Job,
)


def model_for_uuid(uuid: str) -> type[ArvadosModel] | None:
    infix = infix_of(uuid)
    for model in MODELS:
        if model.infix() == infix:
            return model
    return None


def object_by_uuid(uuid: str) -> ArvadosModel | None:
    model = model_for_uuid(uuid)
    if model is None:
        return None
    return model._default_manager.filter(uuid=uuid).first()


def restrict_readable(queryset: QuerySet, users: list[User]) -> QuerySet:
    """Objects any of `users` may read (several users: the request's reader tokens)."""
    combined = Q(pk__in=[])
    for user in users:
        if queryset.model is ApiClientAuthorization and not user.is_admin:
            # Tokens are visible to their own user only, whatever the links say.
            condition: Q | None = Q(user=user)
        else:
            condition = permissions.readable_q(queryset.model, user)
        if condition is None:
            return queryset
        combined |= condition
    return queryset.filter(combined)


def readable_queryset(model: type[models.Model], user: User) -> QuerySet:
    return restrict_readable(model._default_manager.all(), [user])


def readable_object(queryset: QuerySet, users: list[User], uuid: str) -> Any:
    """The object with this uuid if any of `users` may read it, else None.

    Fetches the row first and checks permission against the (cached) permission map, which
    is cheaper than joining the permission condition into the query.
    """
    if not isinstance(uuid, str) or uuid.isdigit() or "\x00" in uuid:
        return None
    obj = queryset.filter(uuid=uuid).first()
    if obj is None:
        return None
    for user in users:
        if isinstance(obj, ApiClientAuthorization):
            if user.is_admin or obj.user_id == user.pk:
                return obj
        elif permissions.can_read(user, obj):
            return obj
    return None


# How many rows `readable_pdhs` reads at once: a PDH can be shared by any number of
# collections (every job with an empty output has one holding the empty manifest).
PDH_ROWS = 64


def readable_pdhs(user: User, pdhs: set[str]) -> set[str]:
    """Which of `pdhs` `user` may read: those with at least one readable, untrashed
    collection (§6.1). One query of at most PDH_ROWS rows; only when that many came back
    without naming every PDH, one more per PDH still unnamed (a PDH shared by a hundred
    thousand collections costs a few rows, not a hundred thousand)."""
    if not pdhs:
        return set()
    # Written out, as `selection.candidates` is: a reuse hit asks this, and the ORM's
    # building and compiling cost more than the query.
    condition, params = readable_collection_sql(user)

    def pdhs_among(wanted: list[str], limit: int) -> list[str]:
        marks = ", ".join(["%s"] * len(wanted))
        rows = rowsql.fetch_all(
            f"SELECT portable_data_hash FROM {Collection._meta.db_table} "
            f"WHERE portable_data_hash IN ({marks}) AND {condition} LIMIT {int(limit)}",
            [*wanted, *params],
        )
        return [pdh for (pdh,) in rows]

    rows = pdhs_among(sorted(pdhs), PDH_ROWS)
    found = set(rows)
    if len(rows) < PDH_ROWS:
        return found
    return found | {p for p in pdhs - found if pdhs_among([p], 1)}


def readable_collection_sql(user: User) -> tuple[str, list[str]]:
    """The condition of the collections whose PDH `user` may read (§6.1: readable and not
    trashed), over the collections table's unqualified columns, with its parameters: the
    rule of `readable_pdhs`, for a query that asks it of a PDH itself."""
    readable = permissions.readable_sql(user)
    if readable is None:
        return "NOT is_trashed", []
    return f"NOT is_trashed AND {readable[0]}", readable[1]


def node_uuids_by_job(job_uuids: list[str]) -> dict[str, list[str]]:
    """The nodes whose `job_uuid` names each of `job_uuids` (uuid order), in one
    written-out query: every answer that shows a job asks it."""
    found: dict[str, list[str]] = {}
    if not job_uuids:
        return found
    marks = ", ".join(["%s"] * len(job_uuids))
    for job_uuid, uuid in rowsql.fetch_all(
        f"SELECT job_uuid, uuid FROM {Node._meta.db_table} "
        f"WHERE job_uuid IN ({marks}) ORDER BY uuid",
        job_uuids,
    ):
        found.setdefault(job_uuid, []).append(uuid)
    return found


def job_executions(*, job_uuid: str) -> QuerySet[Execution]:
    """A job's executions in the order they started: attempt, then replica."""
    return Execution.objects.filter(job_uuid=job_uuid).order_by("attempt", "replica", "id")


def project_named(user: User, name: str) -> Any:
    """The project `name` names for `user`: by uuid, else the oldest readable project with
    that name; None when there is none (a door's namespace)."""
    from jobs.models import Group

    if len(name) > 255:
        return None
    return readable_object(Group.objects.all(), [user], name) or (
        restrict_readable(Group.objects.filter(name=name, group_class="project"), [user])
        .order_by("created_at", "id")
        .first()
    )
