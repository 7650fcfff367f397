"""Reads for following a job's log (`log_tail_follow`): the job's state, its log chunks from a
sequence number on, where a tail of N bytes starts, and its place in the queue.

The order of reads is what makes a follower complete: it reads the job first and the chunks
second. Once a job is *sealed* (`JobView.sealed`) nothing writes to its log any more, so the
chunks read after seeing it sealed are the last ones, and the follower may end its stream.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from jobs import queue
from jobs.models import Job, JobState, LogChunk
from jobs.placement import live_nodes
from jobs.uuids import system_user_uuid

# A cancelled job that a worker was running is sealed once the worker records the end
# (`finished_at`); the worker stops the script within seconds. Past this, do not wait for a
# worker that may have died with the job.
CANCEL_GRACE = dt.timedelta(seconds=30)
READ_CHUNKS = 64  # chunks per read (each at most about 64 KiB)

JOB_FIELDS = (
    "id",
    "uuid",
    "state",
    "priority",
    "created_at",
    "started_at",
    "finished_at",
    "cancelled_at",
    "is_locked_by_uuid",
    "worker_node_uuid",
    "scheduling_status",
    "output",
    "log",
)


@dataclass(frozen=True)
class JobView:
    """What a follower needs of a job's row."""

    id: int
    uuid: str
    state: str
    priority: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    is_locked_by_uuid: str | None
    worker_node_uuid: str | None
    scheduling_status: str | None
    output: str | None
    log: str | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(**{name: getattr(job, name) for name in JOB_FIELDS})

    @property
    def sealed(self) -> bool:
        """True when no more log chunks will be written for this job."""
        if self.state in (JobState.COMPLETE, JobState.FAILED):
            return True  # runners and the sweeper write the log before the end state
        if self.state != JobState.CANCELLED:
            return False
        if self.finished_at is not None or self.started_at is None:
            return True
        if self.is_locked_by_uuid != system_user_uuid():
            return True  # run by an outside dispatcher: nothing of ours writes its log
        return self.cancelled_at is None or timezone.now() - self.cancelled_at > CANCEL_GRACE


def chunk_lines(text: str) -> str:
    """A chunk's text as lines of the log: every chunk ends a line. Runners store whole
    lines; a chunk without its final newline (a script's last line, as stored before runners
    ended it) still ends one, so that what follows it (crunch's own lines, the stream's end
    line) starts on a line of its own. Every reader of chunks joins them through this."""
    return text if text.endswith("\n") else text + "\n"


def job_view(uuid: str) -> JobView | None:
    row = Job.objects.filter(uuid=uuid).values(*JOB_FIELDS).first()
    return JobView(**row) if row is not None else None


def chunks_from(job_uuid: str, first_seq: int, *, sealed: bool) -> list[tuple[int, str]]:
    """Chunks `first_seq`, `first_seq + 1`, ... as (seq, text), up to READ_CHUNKS of them.

    Stops before a missing number while the job may still write it (a gap is a chunk whose
    transaction has not committed yet); once the job is sealed, gaps are skipped."""
    rows = list(
        LogChunk.objects.filter(job_uuid=job_uuid, seq__gte=first_seq)
        .order_by("seq")
        .values_list("seq", "text")[:READ_CHUNKS]
    )
    if sealed:
        return rows
    contiguous = []
    for expected, (seq, text) in enumerate(rows, start=first_seq):
        if seq != expected:
            break
        contiguous.append((seq, text))
    return contiguous


def last_seq(job_uuid: str) -> int:
    """The highest chunk number stored, -1 for an empty log."""
    seq = (
        LogChunk.objects.filter(job_uuid=job_uuid)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return -1 if seq is None else seq


def tail_start(job_uuid: str, buffer_size: int) -> tuple[int, int]:
    """Where the last `buffer_size` bytes of the log start, moved forward to the start of a
    line: (chunk number, character offset in that chunk). The whole log fits when it is
    shorter; `buffer_size` 0 starts after the last chunk (live lines only)."""
    if buffer_size <= 0:
        return last_seq(job_uuid) + 1, 0
    wanted = buffer_size
    rows = (
        LogChunk.objects.filter(job_uuid=job_uuid)
        .order_by("-seq")
        .values_list("seq", "text")
        .iterator(chunk_size=8)
    )
    first = 0
    for seq, text in rows:
        first = seq
        data = text.encode("utf-8")
        if len(data) < wanted:
            wanted -= len(data)
            continue
        cut = len(data) - wanted
        if cut == 0 or data[cut - 1] == 0x0A:
            start = cut
        else:
            newline = data.find(b"\n", cut)
            start = len(data) if newline < 0 else newline + 1
        if start >= len(data):
            return seq + 1, 0
        return seq, len(data[:start].decode("utf-8"))
    return first, 0


@dataclass(frozen=True)
class QueueStatus:
    position: int  # jobs ahead of this one, in the order workers take them (jobs.queue)
    size: int
    nodes_idle: int
    nodes_alloc: int
    cannot_run: str | None  # why no live node can run the job (the sweeper's verdict)


def queue_status(view: JobView) -> QueueStatus:
    ahead = queue.position(priority=view.priority, created_at=view.created_at, pk=view.id)
    live = set(live_nodes().values_list("uuid", flat=True))
    busy = set(
        Job.objects.filter(state=JobState.RUNNING, worker_node_uuid__in=live).values_list(
            "worker_node_uuid", flat=True
        )
    )
    return QueueStatus(
        position=ahead,
        size=queue.queued_jobs().count(),
        nodes_idle=len(live - busy),
        nodes_alloc=len(busy),
        cannot_run=view.scheduling_status,
    )
