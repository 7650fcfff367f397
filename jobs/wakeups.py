"""Wake-ups for log followers: hints, never the truth (DESIGN: logs are durable and gap-free).

Whoever changes what a follower shows (a new log chunk, a job's state or priority, a node's
placement verdict) calls `notify(job_uuid)`. Once the transaction commits, that publishes the
job's uuid on one Redis channel (`channel()`); a follower then re-reads the database, which
alone says what happened. A lost message costs a follower only the time until its next
periodic read, so publishing never blocks or fails a write: without `REDIS_URL` it does
nothing (followers poll), and while Redis is unreachable it stops trying for a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction

log = logging.getLogger("crunch.wakeups")

RETRY_AFTER_SECONDS = 5.0

_lock = threading.Lock()
_client: Any = None
_client_url = ""
_down_until = 0.0


def notify(job_uuid: str) -> None:
    """Wake the followers of `job_uuid` once the current transaction (if any) commits."""
    if settings.REDIS_URL:
        transaction.on_commit(partial(publish, job_uuid))


def channel() -> str:
    """`crunch:<db>:jobs`: Redis channels are shared by all its databases; this one is only
    for the Crunch whose REDIS_URL names database <db>."""
    from urllib.parse import urlsplit

    database = urlsplit(settings.REDIS_URL).path.strip("/") or "0"
    return f"crunch:{database}:jobs"


def publish(job_uuid: str) -> None:
    global _down_until
    if time.monotonic() < _down_until:
        return
    client = _redis()
    if client is None:
        return
    try:
        client.publish(channel(), job_uuid)
    except Exception as exc:  # redis raises several types; a hint must never fail a write
        _down_until = time.monotonic() + RETRY_AFTER_SECONDS
        log.info("log wake-ups paused for %ss: Redis: %s", RETRY_AFTER_SECONDS, exc)


def _redis() -> Any:
    global _client, _client_url
    url = settings.REDIS_URL
    if not url:
        return None
    with _lock:
        if _client is None or _client_url != url:
            import redis

            _client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
            _client_url = url
        return _client
