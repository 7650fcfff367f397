"""Arvados list filters (spec §1.8) compiled into ORM conditions.

`filters` is a list of `[attribute, operator, operand]`; `where` is the legacy object form.
Every operator is one row of `OPERATORS`; adding one means adding a row. Errors are
`InvalidRequest` with the messages of the spec, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.db import models
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils.dateparse import parse_date, parse_datetime

import jobs.lookups  # noqa: F401  (registers the sql_like/sql_ilike lookups)
from jobs.exceptions import InvalidRequest
from jobs.uuids import INFIX_BY_KIND

TEXT, INTEGER, DATETIME, BOOLEAN, HASH = "text", "integer", "datetime", "boolean", "hash"

_TRUE = {"1", "t", "true", "y", "yes"}
_FALSE = {"0", "f", "false", "n", "no"}


def describe(value: Any) -> str:
    """A value as it appears in an error message: JSON, as the client sent it."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def column_types(model: type[models.Model]) -> dict[str, str]:
    """Filterable columns of `model` and their kind, from the model's API attributes."""
    cached = getattr(model, "_crunch_column_types", None)
    if cached is not None:
        return cached
    wanted = set(getattr(model, "COMMON_FIELDS", ())) | set(getattr(model, "API_FIELDS", ()))
    wanted.add("id")
    wanted -= set(getattr(model, "FILTER_EXCLUDE", ()))
    types: dict[str, str] = {}
    for field in model._meta.concrete_fields:
        if field.name not in wanted:
            continue
        if isinstance(field, models.JSONField):
            types[field.name] = HASH
        elif isinstance(field, models.BooleanField):
            types[field.name] = BOOLEAN
        elif isinstance(field, models.DateTimeField):
            types[field.name] = DATETIME
        elif isinstance(field, models.IntegerField | models.BigIntegerField | models.AutoField):
            types[field.name] = INTEGER
        elif isinstance(field, models.CharField | models.TextField):
            types[field.name] = TEXT
    model._crunch_column_types = types  # type: ignore[attr-defined]
    return types


# ---------------------------------------------------------------------------------------
# Operand conversion


def _convert(value: Any, kind: str, attr: str, op: str) -> Any:
    """Convert one operand to the column's Python type, or raise a 422."""
    if kind in (TEXT, HASH):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # Quirk 2: numbers are accepted
        raise InvalidRequest(
            f"Invalid operand type '{type_name(value)}' for '{op}' operator in filters"
        )
    if kind == INTEGER:
        if isinstance(value, bool):
            raise InvalidRequest(f"Invalid operand type 'boolean' for '{op}' operator in filters")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
            return int(value)
        raise InvalidRequest(f"Invalid operand {describe(value)} for integer attribute '{attr}'")
    if kind == DATETIME:
        if isinstance(value, str):
            parsed = parse_time(value)
            if parsed is not None:
                return parsed
        raise InvalidRequest(f"Invalid operand {describe(value)} for datetime attribute '{attr}'")
    if kind == BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
        raise InvalidRequest(f"Invalid operand {describe(value)} for boolean attribute '{attr}'")
    raise InvalidRequest(f"Invalid attribute '{attr}' in filter")


def parse_time(text: str) -> dt.datetime | None:
    """Any common date/time text (ISO 8601, `2014-01-01 01:23:45`, `2014-01-01`), as UTC."""
    text = text.strip()
    try:
        parsed = parse_datetime(text)
    except ValueError:
        return None
    if parsed is None:
        try:
            day = parse_date(text)
        except ValueError:
            return None
        if day is None:
            return None
        parsed = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


# ---------------------------------------------------------------------------------------
# The operator table


@dataclass(frozen=True)
class Operator:
    build: Callable[[str, str, Any, str], Q]  # (column, kind, operand, op name) -> Q
    kinds: frozenset[str]  # column kinds it applies to
    any_only: bool = False


COMPARISON_KINDS = frozenset({TEXT, HASH, INTEGER, DATETIME, BOOLEAN})
TEXT_KINDS = frozenset({TEXT, HASH})


def _col(column: str, kind: str) -> str:
    # Hash columns are compared as their stored JSON text.
    return f"{column}__crunchtext" if kind == HASH else column


def _eq(column: str, kind: str, operand: Any, op: str) -> Q:
    if operand is None:
        return Q(**{f"{column}__isnull": True})
    return Q(**{_col(column, kind): _convert(operand, kind, column, op)})


def _ne(column: str, kind: str, operand: Any, op: str) -> Q:
    # Quirk 3 (kept): rows where the column is NULL also match.
    if operand is None:
        return Q(**{f"{column}__isnull": False})
    value = _convert(operand, kind, column, op)
    return ~Q(**{_col(column, kind): value}) | Q(**{f"{column}__isnull": True})


def _compare(lookup: str) -> Callable[[str, str, Any, str], Q]:
    def build(column: str, kind: str, operand: Any, op: str) -> Q:
        if operand is None or isinstance(operand, list | dict):
            raise InvalidRequest(
                f"Invalid operand type '{type_name(operand)}' for '{op}' operator in filters"
            )
        return Q(**{f"{_col(column, kind)}__{lookup}": _convert(operand, kind, column, op)})

    return build


def _pattern(lookup: str) -> Callable[[str, str, Any, str], Q]:
    def build(column: str, kind: str, operand: Any, op: str) -> Q:
        if not isinstance(operand, str):
            raise InvalidRequest(
                f"Invalid operand type '{type_name(operand)}' for '{op}' operator in filters"
            )
        return Q(**{f"{_col(column, kind)}__{lookup}": operand})

    return build


def _split_list(column: str, kind: str, operand: Any, op: str) -> tuple[list[Any], bool]:
    if not isinstance(operand, list):
        raise InvalidRequest(
            f"Invalid operand type '{type_name(operand)}' for '{op}' operator in filters"
        )
    has_null = any(v is None for v in operand)
    values = [_convert(v, kind, column, op) for v in operand if v is not None]
    return values, has_null


def _in(column: str, kind: str, operand: Any, op: str) -> Q:
    values, has_null = _split_list(column, kind, operand, op)
    q = Q(**{f"{_col(column, kind)}__in": values})  # an empty list matches nothing
    if has_null:
        q |= Q(**{f"{column}__isnull": True})
    return q


def _not_in(column: str, kind: str, operand: Any, op: str) -> Q:
    values, has_null = _split_list(column, kind, operand, op)
    if not values and not has_null:
        # Quirk 4, resolved: an empty "not in" list excludes nothing, so it matches every row.
        return Q()
    q = ~Q(**{f"{_col(column, kind)}__in": values}) if values else Q()
    if has_null:
        return q & Q(**{f"{column}__isnull": False})
    return q | Q(**{f"{column}__isnull": True})  # Quirk 3 (kept): NULL rows match


def _is_a(column: str, kind: str, operand: Any, op: str) -> Q:
    kinds = operand if isinstance(operand, list) else [operand]
    q = Q(pk__in=[])
    for k in kinds:
        if not isinstance(k, str):
            raise InvalidRequest(
                f"Invalid operand type '{type_name(k)}' for '{op}' operator in filters"
            )
        infix = INFIX_BY_KIND.get(k)
        if infix is None:
            continue  # unknown kinds match nothing
        pattern = f"{settings.CRUNCH_UUID_PREFIX}-{infix}-" + "_" * 15
        q |= Q(**{f"{column}__sql_like": pattern})
    return q


def _fulltext(column: str, kind: str, operand: Any, op: str) -> Q:
    if not isinstance(operand, str):
        raise InvalidRequest(
            f"Invalid operand type '{type_name(operand)}' for '{op}' operator in filters"
        )
    words = operand.split()
    q = Q()
    for word in words:
        q &= Q(**{f"{_col(column, kind)}__icontains": word})
    return q


OPERATORS: dict[str, Operator] = {
    "=": Operator(_eq, COMPARISON_KINDS),
    "!=": Operator(_ne, COMPARISON_KINDS),
    "<": Operator(_compare("lt"), COMPARISON_KINDS - {BOOLEAN}),
    "<=": Operator(_compare("lte"), COMPARISON_KINDS - {BOOLEAN}),
    ">": Operator(_compare("gt"), COMPARISON_KINDS - {BOOLEAN}),
    ">=": Operator(_compare("gte"), COMPARISON_KINDS - {BOOLEAN}),
    "like": Operator(_pattern("sql_like"), TEXT_KINDS),
    "ilike": Operator(_pattern("sql_ilike"), TEXT_KINDS),
    "in": Operator(_in, TEXT_KINDS),
    "not in": Operator(_not_in, TEXT_KINDS),
    "is_a": Operator(_is_a, frozenset({TEXT})),
    "@@": Operator(_fulltext, TEXT_KINDS, any_only=True),
}


def _any_columns(types: dict[str, str], operator: Operator) -> list[str]:
    return [c for c, k in types.items() if k == TEXT and k in operator.kinds]


def compile_filter(model: type[models.Model], condition: Any) -> Q:
    """One `[attribute, operator, operand]` triple as a Q object."""
    if not isinstance(condition, list):
        raise InvalidRequest(
            f"Invalid element in filters array: {describe(condition)} is not an array"
        )
    if len(condition) != 3:
        raise InvalidRequest(
            f"Invalid element in filters array: {describe(condition)} is not a 3-element array"
        )
    attribute, op, operand = condition
    if not isinstance(op, str):
        raise InvalidRequest(f"Invalid operator {describe(op)} ({type_name(op)}) in filter")
    op_name = op.lower()
    operator = OPERATORS.get(op_name)
    if operator is None:
        raise InvalidRequest(f"Invalid operator '{op}'")
    types = column_types(model)

    if attribute == "any":
        columns = _any_columns(types, operator)
    elif operator.any_only:
        raise InvalidRequest(f"Operator '{op}' is only allowed with attribute 'any'")
    elif isinstance(attribute, str):
        columns = [attribute]
    elif isinstance(attribute, list) and attribute and all(isinstance(a, str) for a in attribute):
        columns = attribute
    else:
        raise InvalidRequest(f"Invalid attribute {describe(attribute)} in filter")

    if op_name == "@@" and isinstance(operand, list):
        raise InvalidRequest("Invalid operand type 'array' for '@@' operator in filters")

    parts: list[Q] = []
    for column in columns:
        kind = types.get(column)
        if kind is None:
            raise InvalidRequest(f"Invalid attribute '{column}' in filter")
        if kind == BOOLEAN and op_name not in ("=", "!="):
            raise InvalidRequest(f"Invalid operator '{op}' for boolean attribute '{column}'")
        if kind not in operator.kinds:
            raise InvalidRequest(f"Invalid attribute '{column}' in filter")
        parts.append(operator.build(column, kind, operand, op_name))
    if not parts:
        return Q(pk__in=[])
    if any(not part for part in parts):
        return Q()  # one column matches every row, so the OR does too
    combined = parts[0]
    for part in parts[1:]:
        combined |= part
    return combined


def compile_where(model: type[models.Model], where: dict[str, Any]) -> Q:
    """The legacy `where` object (spec §1.8). Keys that are not columns are ignored."""
    types = column_types(model)
    q = Q()
    for key, value in where.items():
        if key == "any":
            if isinstance(value, list) and len(value) == 2 and value[0] == "contains":
                needle = str(value[1])
                any_q = Q(pk__in=[])
                for column, column_kind in types.items():
                    if column_kind == TEXT and column != "owner_uuid":
                        any_q |= Q(**{f"{column}__icontains": needle})
                q &= any_q
            continue
        kind = types.get(key)
        if kind is None:
            continue
        column = _col(key, kind)
        if value is None:
            q &= Q(**{f"{key}__isnull": True})
        elif isinstance(value, list):
            if len(value) == 2 and value[0] == "contains" and kind in TEXT_KINDS:
                q &= Q(**{f"{column}__contains": str(value[1])})
            else:
                q &= Q(**{f"{column}__in": [_convert(v, kind, key, "in") for v in value]})
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, str) and kind in TEXT_KINDS:
                    q &= Q(**{f"{column}__sql_ilike": f"%{k}%{v}%"})
        else:
            q &= Q(**{column: _convert(value, kind, key, "=")})
    return q


def with_text_columns(queryset: QuerySet, model: type[models.Model]) -> QuerySet:
    """Annotate hash columns' JSON text so filters can compare it."""
    hashes = [c for c, k in column_types(model).items() if k == HASH]
    if not hashes:
        return queryset
    return queryset.annotate(**{f"{c}_crunchtext": Cast(c, TextField()) for c in hashes})


def apply_filters(
    queryset: QuerySet,
    model: type[models.Model],
    *,
    filters: list[Any] | None = None,
    where: dict[str, Any] | None = None,
) -> QuerySet:
    """Filters first, then `where`, all ANDed (spec §1.8, evaluation order)."""
    q = Q()
    for condition in filters or []:
        q &= compile_filter(model, condition)
    if where:
        q &= compile_where(model, where)
    if not q:
        return queryset
    uses_text = "__crunchtext" in str(q)
    if uses_text:
        queryset = with_text_columns(queryset, model)
        q = _rename_text(q)
    return queryset.filter(q)


def _rename_text(q: Q) -> Q:
    """`col__crunchtext[__lookup]` → the annotation `col_crunchtext[__lookup]`."""
    children: list[Any] = []
    for child in q.children:
        if isinstance(child, Q):
            children.append(_rename_text(child))
        else:
            key, value = cast(tuple[str, Any], child)
            children.append((key.replace("__crunchtext", "_crunchtext"), value))
    clone = Q()
    clone.connector, clone.negated, clone.children = q.connector, q.negated, children
    return clone
