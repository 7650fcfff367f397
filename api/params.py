"""Parsing request parameters: JSON-in-strings, booleans, list parameters (spec §1.6–§1.8).

Parameters arrive in the query string, a form body or a JSON body; structured values may be
real JSON or JSON text. Everything here raises `InvalidRequest` with the spec's message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import QueryDict

from jobs.exceptions import InvalidRequest
from jobs.filters import column_types


def merged_params(query: QueryDict, data: Any) -> dict[str, Any]:
    """Query parameters, then body parameters (the body wins on a clash)."""
    params: dict[str, Any] = {k: query.get(k) for k in query}
    if isinstance(data, QueryDict):
        params.update({k: data.get(k) for k in data})
    elif isinstance(data, dict):
        params.update(data)
    elif data not in (None, b"", ""):
        raise InvalidRequest("The request body must be a JSON object")
    params.pop("alt", None)
    if _has_nul(params):
        # No Arvados text may contain NUL, and PostgreSQL refuses it in text and jsonb alike.
        raise InvalidRequest("Parameters must not contain NUL (\\u0000) characters")
    return params


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


def parse_json_param(value: Any, name: str, kind: type) -> Any:
    """A structured parameter given as real JSON or as JSON text."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError):
            decoded = None
        if isinstance(decoded, kind):
            if _has_nul(decoded):
                raise InvalidRequest(f"{name} must not contain NUL (\\u0000) characters")
            return decoded
    noun = "an array" if kind is list else "an object"
    raise InvalidRequest(f'Could not parse "{name}" param as {noun}')


def parse_bool(value: Any, name: str, default: bool) -> bool:
    """Declared boolean parameters (§1.7): true/false, "true"/"false", 1/0, "1"/"0"."""
    if value is None:
        return default
    if value is True or (type(value) is int and value == 1) or value in ("true", "1"):
        return True
    if value is False or (type(value) is int and value == 0) or value in ("false", "0"):
        return False
    raise InvalidRequest(f"{name} parameter must be a boolean, true or false")


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"Invalid value for {name} parameter")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
        return int(value)
    raise InvalidRequest(f"Invalid value for {name} parameter")


_ORDER_ENTRY_RE = re.compile(
    r"^\s*([a-z][_a-z0-9]+(?:\.[a-z][_a-z0-9]+)?)(?:\s+(asc|desc))?\s*$", re.IGNORECASE
)
UNIQUE_COLUMNS = ("uuid", "id")


@dataclass
class ListParams:
    filters: list[Any] = field(default_factory=list)
    where: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # Django order_by terms
    select: list[str] | None = None
    limit: int = 100
    offset: int = 0
    count: bool = True
    distinct: bool = False


def parse_select(raw: Any, api_fields: tuple[str, ...]) -> list[str] | None:
    if raw is None:
        return None
    selected = parse_json_param(raw, "select", list)
    if not selected:
        raise InvalidRequest("Attribute selection list cannot be empty")
    names = [s for s in selected if s not in ("href", "kind", "etag")]
    invalid = [s for s in names if not isinstance(s, str) or s not in api_fields]
    if invalid:
        raise InvalidRequest(f"Invalid attribute(s): {json.dumps(invalid)}")
    return list(dict.fromkeys(names))


def parse_order(raw: Any, model: Any, selected: list[str] | None) -> list[str]:
    """Client order entries, then `modified_at desc, uuid asc`; cut after a unique column."""
    entries: list[Any]
    if raw is None or raw == "":
        entries = []
    elif isinstance(raw, list):
        entries = raw
    elif isinstance(raw, str) and raw.lstrip().startswith("["):
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = []
        entries = decoded if isinstance(decoded, list) else []
    elif isinstance(raw, str):
        entries = raw.split(",")
    else:
        entries = []
    columns = column_types(model)
    table = model._meta.db_table
    terms: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, str):
            continue
        match = _ORDER_ENTRY_RE.match(entry)
        if not match:
            continue  # invalid entries are dropped silently
        column, direction = match.group(1), (match.group(2) or "asc").lower()
        if "." in column:
            prefix, column = column.split(".", 1)
            if prefix != table:
                continue
        if column not in columns:
            continue
        if selected is not None and column not in selected and column not in UNIQUE_COLUMNS:
            continue
        terms.append((column, direction))
    terms += [("modified_at", "desc"), ("uuid", "asc")]
    order: list[str] = []
    seen: set[str] = set()
    for column, direction in terms:
        if column in seen:
            continue
        seen.add(column)
        order.append(f"-{column}" if direction == "desc" else column)
        if column in UNIQUE_COLUMNS:
            break
    return order


def parse_list_params(
    params: dict[str, Any], model: Any, api_fields: tuple[str, ...]
) -> ListParams:
    result = ListParams()
    if params.get("filters") not in (None, ""):
        result.filters = parse_json_param(params["filters"], "filters", list)
    if params.get("where") not in (None, ""):
        result.where = parse_json_param(params["where"], "where", dict)
    result.select = parse_select(params.get("select"), api_fields)
    result.order = parse_order(params.get("order"), model, result.select)
    if params.get("limit") is not None:
        result.limit = min(
            _non_negative_int(params["limit"], "limit"), settings.CRUNCH_MAX_ITEMS_PER_RESPONSE
        )
    if params.get("offset") is not None:
        result.offset = _non_negative_int(params["offset"], "offset")
    count = params.get("count")
    if count in (None, "", "exact"):
        result.count = True
    elif count == "none":
        result.count = False
    else:
        raise InvalidRequest("count parameter must be 'exact' or 'none'")
    result.distinct = parse_bool(params.get("distinct"), "distinct", False)
    return result
