"""The `keep_services` records: where clients send and fetch blocks.

Crunch serves blocks from the API server itself, so there is exactly one Keep service and it
is not stored: it is the API's own external URL (`CRUNCH_EXTERNAL_URL`, else the host a
client reached). It is a `proxy` in Arvados terms (one endpoint in front of the storage), so
the SDK sends every block to it once and trusts its replica count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from django.conf import settings

from jobs import uuids
from jobs.exceptions import InvalidRequest
from jobs.models.base import ArvadosShape


@dataclass(frozen=True)
class KeepService(ArvadosShape):
    uuid: str
    owner_uuid: str
    service_host: str
    service_port: int
    service_ssl_flag: bool
    service_type: str = "proxy"
    read_only: bool = False
    created_at: dt.datetime | None = None
    modified_at: dt.datetime | None = None
    modified_by_client_uuid: str | None = None
    modified_by_user_uuid: str | None = None

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "service_host",
        "service_port",
        "service_ssl_flag",
        "service_type",
        "read_only",
    )


def keep_service_uuid() -> str:
    return f"{settings.CRUNCH_UUID_PREFIX}-{KeepService.infix()}-000000000000000"


def keep_services_accessible(*, base_url: str) -> list[KeepService]:
    """The Keep services a client that reached the API at `base_url` should use."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"Cannot serve Keep at {base_url!r}")
    ssl = parts.scheme == "https"
    return [
        KeepService(
            uuid=keep_service_uuid(),
            owner_uuid=uuids.system_user_uuid(),
            service_host=parts.hostname,
            service_port=parts.port or (443 if ssl else 80),
            service_ssl_flag=ssl,
        )
    ]
