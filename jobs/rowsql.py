"""Rows read and inserted with written-out SQL, for the few statements every request, every
reuse hit or every claim makes (the token, the chosen job, the record of a reuse, the
queued jobs a worker may claim).

For such a read, Django spends longer building and compiling the query, and matching the
cursor's columns to fields (`Model.objects.raw`), than the database spends answering it: a
job row by id took 1.0 ms through `raw()` and 0.5 ms here, a token with its user 1.5 ms
through the ORM and 0.6 ms here, the first jobs of the queue 1.6 and 0.7 ms. What the ORM
does per row is kept: each field's database converters (JSON decoding; SQLite's datetimes
and booleans), then `Model.from_db`, so the instances are the ones a queryset would make
(signals, deferred fields and `_state` alike). An insert prepares each value as the ORM's
insert does (`pre_save`, then `get_db_prep_save`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


class RowSql(Generic[M]):
    """Rows of `model`, whole or of some fields: `columns(alias)` for a SELECT (or RETURNING)
    list, `build(values)` to turn those columns of a fetched row into an instance,
    `insert(obj)` for a new row's INSERT."""

    def __init__(self, model: type[M], fields: tuple[str, ...] | None = None) -> None:
        self.model = model
        self.fields: list[Field[Any, Any]] = [
            f for f in model._meta.concrete_fields if fields is None or f.attname in fields
        ]
        self.attnames = [f.attname for f in self.fields]
        self._converters: dict[str, list[tuple[int, Field[Any, Any], list[Converter]]]] = {}
        self._columns: dict[str | None, str] = {}
        self._insert: str | None = None

    @property
    def whole(self) -> bool:
        return len(self.fields) == len(self.model._meta.concrete_fields)

    def __len__(self) -> int:
        return len(self.fields)

    def columns(self, alias: str | None = None) -> str:
        """The list of every concrete column (a SELECT's or a RETURNING's), of the table
        aliased `alias` (ours, never user text) or unqualified."""
        found = self._columns.get(alias)
        if found is None:
            quote = connection.ops.quote_name
            prefix = f"{alias}." if alias else ""
            found = self._columns[alias] = ", ".join(
                f"{prefix}{quote(str(f.column))}" for f in self.fields
            )
        return found

    def insert(self, obj: M) -> tuple[str, list[Any]]:
        """The INSERT of `obj`, a new row, with every concrete field but the primary key."""
        if not self.whole:
            raise ValueError("an insert writes every field: use the model's whole reader")
        fields = [f for f in self.fields if not f.primary_key]
        if self._insert is None:
            quote = connection.ops.quote_name
            self._insert = (
                f"INSERT INTO {quote(self.model._meta.db_table)} "
                f"({', '.join(quote(str(f.column)) for f in fields)}) "
                f"VALUES ({', '.join(['%s'] * len(fields))})"
            )
        params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
        return self._insert, params

    def _converters_for(
        self, db: BaseDatabaseWrapper
    ) -> list[tuple[int, Field[Any, Any], list[Converter]]]:
        # As the ORM's compiler gathers them, once per database connection alias: a model's
        # fields and a backend's converters do not change while the process runs.
        found = self._converters.get(db.alias)
        if found is None:
            found = []
            table = self.model._meta.db_table
            for index, field in enumerate(self.fields):
                column = field.get_col(table)
                converters = db.ops.get_db_converters(column) + field.get_db_converters(db)
                if converters:
                    found.append((index, field, converters))
            self._converters[db.alias] = found
        return found

    def build(self, values: Sequence[Any], db: BaseDatabaseWrapper | None = None) -> M:
        """The instance of one row's values (in `columns` order), read through `db` (the
        default database's connection unless given)."""
        db = db or connection
        row = list(values)
        for index, field, converters in self._converters_for(db):
            value = row[index]
            for convert in converters:
                value = convert(value, field, db)
            row[index] = value
        return self.model.from_db(db.alias, self.attnames, row)


@functools.cache
def reader(model: type[M], fields: tuple[str, ...] | None = None) -> RowSql[M]:
    """The one reader of `model`'s rows, whole or of the `fields` named (their attnames);
    instances built from some fields defer the others, as `QuerySet.only` does."""
    return RowSql(model, fields)


def _column(model: type[Model], name: str) -> str:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    return connection.ops.quote_name(str(getattr(field, "column")))  # noqa: B009


def column_sql(model: type[Model], names: Sequence[str]) -> str:
    """The unqualified columns of `model`'s fields `names` ("pk" the primary key), in that
    order, for a SELECT list."""
    return ", ".join(_column(model, name) for name in names)


def order_sql(model: type[Model], order: Sequence[str]) -> str:
    """An ORDER BY list (without the keywords) of the ORM's `order_by` terms over `model`'s
    unqualified columns ("-name" descending)."""
    return ", ".join(
        f"{_column(model, term[1:])} DESC" if term.startswith("-") else _column(model, term)
        for term in order
    )


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """The first row `sql` returns, or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every row `sql` returns."""
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return [tuple(row) for row in cursor.fetchall()]
