"""Objects in their Arvados shape (spec §1.5): href, kind, etag, common fields, attributes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from jobs.models import ArvadosModel
from jobs.uuids import to_base36


def format_time(value: dt.datetime) -> str:
    """UTC with nine fraction digits: `2016-10-28T19:20:09.320771000Z`."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_time(value)
    return value


def etag_of(values: dict[str, Any]) -> str:
    digest = hashlib.md5(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    return to_base36(int(digest, 16))


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
