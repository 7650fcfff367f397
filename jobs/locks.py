"""Advisory locks: the one place that turns a lock's name into a key and picks the mechanism
for the database in use.

- `advisory_lock(name)`: wait for the lock, then run the block in a transaction that holds
  it. On PostgreSQL a transaction-scoped advisory lock (`pg_advisory_xact_lock`), taken
  first in the transaction and released by its commit or rollback, so every process agrees.
  On SQLite (the embedded default: one API process, writes serialised anyway) one lock of
  this process, held around the whole transaction, commit included: released before the
  commit, it would let the next holder look before the first one's writes are visible.
  Used by `jobs.reuse.identity_lock`.
- `try_advisory_lock(name)`: yields True in at most one process at a time, False at once
  elsewhere. On PostgreSQL `pg_try_advisory_xact_lock` in a transaction around the block; on
  SQLite (one machine) an exclusive `flock` on `CRUNCH_DATA_DIR/locks/<name>.lock`, with no
  transaction (each write of the block commits on its own, as it would without the lock).
  Used by `jobs.services.runs.exclusive` (the sweeper).

A name is any text: the key is the first 8 bytes of its SHA-256, signed (PostgreSQL's
bigint). Names of file locks are fixed words (`_FILE_NAME_RE`), never user text.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

_PROCESS_LOCK = threading.Lock()
_FILE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")


def lock_key(name: str) -> int:
    """The advisory lock number of `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _postgresql() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def advisory_lock(name: str) -> Iterator[None]:
    """Wait for the lock `name`; the block runs in a transaction that holds it."""
    if _postgresql():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(name)])
            yield
    else:
        with _PROCESS_LOCK, transaction.atomic():
            yield


@contextmanager
def try_advisory_lock(name: str) -> Iterator[bool]:
    """True in at most one process at a time, False at once elsewhere (see the module)."""
    if _postgresql():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_key(name)])
            yield bool(cursor.fetchone()[0])
        return
    if not _FILE_NAME_RE.fullmatch(name):
        raise ValueError(f"not a name for a lock file: {name!r}")
    folder = Path(settings.CRUNCH_DATA_DIR) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
