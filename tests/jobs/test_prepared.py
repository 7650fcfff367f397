"""Prepared statements after another process changes a column's type (jobs/prepared.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import NotSupportedError, connection, transaction

from jobs import prepared

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TABLE = "crunch_prepared_check"
SELECT = f"SELECT id, name FROM {TABLE} WHERE id = %s"


def other_process() -> psycopg.Connection[Any]:
    """A connection of its own, as a migration run elsewhere would have."""
    s = connection.settings_dict
    return psycopg.connect(
        dbname=s["NAME"],
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        autocommit=True,
    )


@pytest.fixture
def table() -> Iterator[psycopg.Connection[Any]]:
    other = other_process()
    other.execute(f"CREATE TABLE {TABLE} (id integer, name varchar(10))")
    other.execute(f"INSERT INTO {TABLE} VALUES (1, 'crunch')")
    try:
        yield other
    finally:
        connection.close()  # its prepared statements go with it
        other.execute(f"DROP TABLE IF EXISTS {TABLE}")
        other.close()


def select_until_prepared() -> None:
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    with connection.cursor() as cursor:
        for _ in range(threshold + 1):
            cursor.execute(SELECT, [1])
            assert cursor.fetchall() == [(1, "crunch")]
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{TABLE}%"]
        )
        assert cursor.fetchone() == (1,)


def test_a_column_type_changed_elsewhere_is_healed_on_the_spot(table: Any) -> None:
    select_until_prepared()
    table.execute(f"ALTER TABLE {TABLE} ALTER COLUMN name TYPE varchar(20)")
    with connection.cursor() as cursor:
        cursor.execute(SELECT, [1])
        assert cursor.fetchall() == [(1, "crunch")]
        cursor.execute(SELECT, [1])  # and the statements after it
        assert cursor.fetchall() == [(1, "crunch")]


def test_without_the_wrapper_the_connection_stays_broken(table: Any) -> None:
    """What the wrapper is for: psycopg alone fails the same statement again and again."""
    select_until_prepared()
    connection.execute_wrappers.remove(prepared.heal_stale_plans)
    try:
        table.execute(f"ALTER TABLE {TABLE} ALTER COLUMN name TYPE varchar(20)")
        with connection.cursor() as cursor:
            for _ in range(2):
                with pytest.raises(NotSupportedError, match=prepared.STALE_PLAN):
                    cursor.execute(SELECT, [1])
    finally:
        connection.execute_wrappers.append(prepared.heal_stale_plans)


def test_inside_a_transaction_the_error_stands_and_the_rollback_heals(table: Any) -> None:
    select_until_prepared()
    table.execute(f"ALTER TABLE {TABLE} ALTER COLUMN name TYPE varchar(20)")
    with pytest.raises(NotSupportedError, match=prepared.STALE_PLAN):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(SELECT, [1])
    with connection.cursor() as cursor:
        cursor.execute(SELECT, [1])
        assert cursor.fetchall() == [(1, "crunch")]


def test_the_wrapper_is_on_each_connection_once() -> None:
    connection.close()
    connection.ensure_connection()
    connection.close()
    connection.ensure_connection()
    assert connection.execute_wrappers.count(prepared.heal_stale_plans) == 1
