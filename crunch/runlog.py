"""A run's log: chunks written in order while it runs (`LogWriter`), and the whole log
stored as a collection when it ends (`store_log`, also used by the sweeper for a job whose
runner is gone)."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import time
from pathlib import Path

from crunch.client import ApiClient, ClientError
from crunch.keepcli import BLOCK_SIZE, CommandError, upload_bytes, upload_manifest
from jobs.exceptions import CrunchError
from jobs.models import Job
from jobs.services import runs
from jobs.services.objects import Actor
from jobs.spec import what_runs

log = logging.getLogger("crunch.runner")

LOG_FLUSH_SECONDS = 0.05  # followers see a line about this soon after it is written
LOG_FLUSH_BYTES = 64 * 1024


class LogWriter:
    """Ordered, batched log chunks: flushed every LOG_FLUSH_SECONDS or LOG_FLUSH_BYTES."""

    def __init__(self, job_uuid: str) -> None:
        self.job_uuid = job_uuid
        self.seq: int | None = None  # known at the first flush
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        """Buffer text (from any thread); `tick` and `flush`, on the runner's thread, store
        it, so the database is used from one thread only."""
        with self.lock:
            self.pending.append(text)
            self.pending_bytes += len(text)

    def note(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H:%M:%S")
        self.write(f"{stamp} crunch: {message}\n")

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def tick(self) -> None:
        """Store what waited LOG_FLUSH_SECONDS, or LOG_FLUSH_BYTES of it (called often while
        the script runs)."""
        with self.lock:
            if self.pending and (
                self.pending_bytes >= LOG_FLUSH_BYTES
                or time.monotonic() - self.last_flush >= LOG_FLUSH_SECONDS
            ):
                self._flush()

    def next_seq(self) -> int:
        """The number the next chunk gets: after what is stored already (the sweeper's notes
        while the job was queued), looked up once, on the runner's thread."""
        if self.seq is None:
            self.seq = runs.job_log_next_seq(job_uuid=self.job_uuid)
        return self.seq

    def _flush(self) -> None:
        if self.pending:
            seq = self.next_seq()
            runs.job_log_append(job_uuid=self.job_uuid, seq=seq, text="".join(self.pending))
            self.seq = seq + 1
        self.pending, self.pending_bytes = [], 0
        self.last_flush = time.monotonic()


def store_log(client: ApiClient, job: Job, actor: Actor) -> str | None:
    """Store a job's log chunks as its log collection (`<uuid>.log.txt`) as `actor` (the
    run's token's user, `runs.job_token_create`); its PDH, or None when it could not be
    stored (said in the worker's log). The runner does this when a run ends, the sweeper for
    a job whose runner is gone."""
    try:
        name = f"{job.uuid}.log.txt"
        data = runs.job_log_text(job_uuid=job.uuid).encode("utf-8")
        if len(data) <= BLOCK_SIZE:
            manifest_text = upload_bytes(client, name, data)
        else:  # a big log: read back from a file, block by block, on upload threads
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name
                path.write_bytes(data)
                del data
                manifest_text = upload_manifest(client, [str(path)])
        return runs.job_collection_create(
            actor=actor,
            manifest_text=manifest_text,
            name=f"Log of job {job.uuid}: {what_runs(job)}"[:255],
            owner_uuid=job.owner_uuid,
        )
    except (ClientError, CommandError, OSError, CrunchError) as exc:
        log.warning("could not save the log of %s: %s", job.uuid, exc)
        return None
