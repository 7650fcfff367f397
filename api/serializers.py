"""Objects in their Arvados shape (spec §1.5): href, kind, etag, common fields, attributes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import orjson

from jobs.models import ArvadosModel
from jobs.uuids import to_base36


def format_time(value: dt.datetime) -> str:
    """UTC with nine fraction digits: `2016-10-28T19:20:09.320771000Z`."""
    utc = value.astimezone(dt.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "000Z"


def plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_time(value)
    return value


def etag_of(values: dict[str, Any]) -> str:
    """A digest of the values: changes when they do."""
    try:
        text = orjson.dumps(values, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # what orjson refuses (integers beyond 64 bits)
        text = json.dumps(values, sort_keys=True, default=str).encode()
    return to_base36(int.from_bytes(hashlib.md5(text).digest(), "big"))


Extra = Callable[[Any], dict[str, Any]]


def serialize(
    obj: ArvadosModel,
    *,
    resource: str,
    fields: list[str] | None = None,
    extra: Extra | None = None,
) -> dict[str, Any]:
    """The response object. `fields` narrows it (`select`); `extra` adds computed attributes."""
    computed = extra(obj) if extra else {}
    values: dict[str, Any] = {}
    for name in obj.all_api_fields():
        if name in computed:
            values[name] = computed[name]
        else:
            values[name] = plain(obj.get(name))
    out: dict[str, Any] = {
        "href": f"/{resource}/{obj.uuid}",
        "kind": obj.kind(),
        "etag": etag_of(values),
    }
    if fields is None:
        out.update(values)
    else:
        out = {"kind": out["kind"]}
        for name in fields:
            out[name] = values.get(name)
    return out
