"""Prepared statements (PostgreSQL, `CRUNCH_DB_PREPARE_THRESHOLD`) across a schema change.

A statement prepared on a pooled connection keeps the result type it was planned with.
When a migration changes the type of a column it reads (a longer `max_length` is an
`ALTER COLUMN ... TYPE`) while processes are running, PostgreSQL refuses to run it again
("cached plan must not change result type"), on that connection, until it is deallocated.

`heal_stale_plans`, an execute wrapper on every PostgreSQL connection, deallocates the
connection's prepared statements when that happens and runs the statement once more: it
failed while being planned, so nothing of it ran. Inside a transaction the transaction is
already aborted, so the error stands; its rollback makes psycopg forget every prepared
statement of the connection, so the next statement is planned afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

STALE_PLAN = "cached plan must not change result type"
FEATURE_NOT_SUPPORTED = "0A000"


def is_stale_plan(exc: BaseException) -> bool:
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) == FEATURE_NOT_SUPPORTED and STALE_PLAN in str(cause)


def heal_stale_plans(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    try:
        return execute(sql, params, many, context)
    except DatabaseError as exc:
        if not is_stale_plan(exc) or context["connection"].in_atomic_block:
            raise
        # Through psycopg's own cursor: on seeing DEALLOCATE ALL succeed, psycopg forgets
        # the statements it had prepared, and prepares them again as they are used.
        connection = context["connection"]
        with connection.wrap_database_errors:
            context["cursor"].cursor.execute("DEALLOCATE ALL")
        return execute(sql, params, many, context)


def install(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """On each new PostgreSQL connection (`connection_created`), once per wrapper object:
    Django keeps one per thread and calls this whenever it takes a connection."""
    if connection.vendor == "postgresql" and heal_stale_plans not in connection.execute_wrappers:
        connection.execute_wrappers.append(heal_stale_plans)


def connect() -> None:
    connection_created.connect(install, dispatch_uid="jobs.prepared.install")
