"""What the jobs admin shows, read once per page: the queue in the dispatcher's order, a
job's log tail, durations and owner names, and what a requeue submits."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.backends.base.operations import BaseDatabaseOperations

from jobs.follow import JobView, chunk_lines
from jobs.models import (
    Group,
    Job,
    JobState,
    LogChunk,
    Node,
    User,
)
from jobs.models.jobs import DESCRIPTION_MAX
from jobs.placement import NodeView, live_nodes
from jobs.queue import RUN_ORDER, queued_jobs

# The dispatcher's order: it claims the highest priority first, then the oldest (jobs.queue).
QUEUE_ORDER = RUN_ORDER
QUEUE_SHOWN = 500  # rows per table on the queue page; the summary counts them all
QUEUE_REFRESH_SECONDS = 5
LOG_TAIL_LINES = 50
LOG_POLL_SECONDS = 2
FILES_SHOWN = 20
# The priority column's range (what the job service accepts), refused already in the forms.
PRIORITY_MIN, PRIORITY_MAX = BaseDatabaseOperations.integer_field_ranges["IntegerField"]
REQUEUE_STATES = frozenset({JobState.FAILED, JobState.CANCELLED})
WAITING = "waiting for a worker"


def human_duration(delta: dt.timedelta | None) -> str:
    """`3m 05s`, `2h 07m`, `4d 3h`; `-` for no duration."""
    if delta is None:
        return "-"
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def owner_names(uuids: Iterable[str | None]) -> dict[str, str]:
    """Display names by uuid: users by username, groups by name."""
    wanted = {u for u in uuids if u}
    names: dict[str, str] = dict(
        User.objects.filter(uuid__in=wanted).values_list("uuid", "username")
    )
    names.update(Group.objects.filter(uuid__in=wanted - names.keys()).values_list("uuid", "name"))
    return names


def queue_wait(job: Job, now: dt.datetime) -> dt.timedelta | None:
    """How long the job waited before it started (so far, while it is queued)."""
    end = job.started_at or job.cancelled_at or job.finished_at
    if end is None and job.state == JobState.QUEUED:
        end = now
    return end - job.created_at if end is not None and job.created_at is not None else None


def run_duration(job: Job, now: dt.datetime) -> dt.timedelta | None:
    """How long the job ran (so far, while it is running)."""
    if job.started_at is None:
        return None
    end = job.finished_at or job.cancelled_at
    if end is None and job.state == JobState.RUNNING:
        end = now
    return end - job.started_at if end is not None else None


@dataclass
class QueueRow:
    position: int
    job: Job
    owner: str
    waiting: str
    placement: str
    placeable: bool


@dataclass
class RunningRow:
    job: Job
    owner: str
    running_for: str
    node: Node | None
    node_alive: bool


def queue_snapshot(now: dt.datetime) -> dict[str, Any]:
    """What the queue page shows: queued jobs in the dispatcher's order with their position,
    waiting time and placement status; running jobs with their node; live nodes busy/idle."""
    queue_size = queued_jobs().count()
    queued = list(queued_jobs()[:QUEUE_SHOWN])
    running_jobs = Job.objects.filter(state=JobState.RUNNING)
    running_count = running_jobs.count()
    running = list(running_jobs.order_by("started_at", "id")[:QUEUE_SHOWN])

    live = list(live_nodes(now).order_by("hostname"))
    live_uuids = {n.uuid for n in live}
    busy_uuids = {j.worker_node_uuid for j in running if j.worker_node_uuid} | {
        n.uuid for n in live if n.job_uuid
    }
    running_nodes = {
        n.uuid: n
        for n in Node.objects.filter(uuid__in={j.worker_node_uuid for j in running} - {None})
    }
    names = owner_names([j.owner_uuid for j in queued] + [j.owner_uuid for j in running])

    queued_rows = []
    for position, job in enumerate(queued, start=1):
        placement = job.scheduling_status or (
            WAITING if live else f"{WAITING} (no worker is alive)"
        )
        queued_rows.append(
            QueueRow(
                position=position,
                job=job,
                owner=names.get(job.owner_uuid, job.owner_uuid),
                waiting=human_duration(queue_wait(job, now)),
                placement=placement,
                placeable=not job.scheduling_status,
            )
        )
    running_rows = [
        RunningRow(
            job=job,
            owner=names.get(job.owner_uuid, job.owner_uuid),
            running_for=human_duration(run_duration(job, now)),
            node=running_nodes.get(job.worker_node_uuid or ""),
            node_alive=job.worker_node_uuid in live_uuids,
        )
        for job in running
    ]
    busy = len(live_uuids & busy_uuids)
    return {
        "now": now,
        "queue_size": queue_size,
        "queued_rows": queued_rows,
        "queued_more": queue_size - len(queued_rows),
        "unplaceable": Job.objects.filter(
            state=JobState.QUEUED, scheduling_status__isnull=False
        ).count(),
        "running_count": running_count,
        "running_rows": running_rows,
        "running_more": running_count - len(running_rows),
        "nodes_live": len(live),
        "nodes_busy": busy,
        "nodes_idle": len(live) - busy,
        "slots_total": sum(NodeView.of(n).slots for n in live),
        "slots_used": sum(1 for j in running if j.worker_node_uuid in live_uuids),
        "worker_ttl": settings.CRUNCH_WORKER_TTL,
    }


def log_tail(job: Job, lines: int = LOG_TAIL_LINES) -> dict[str, Any]:
    """The last `lines` lines of a job's log from its stored chunks, and whether more can
    come (`ended`: the log is complete)."""
    chunks = list(
        LogChunk.objects.filter(job_uuid=job.uuid)
        .order_by("-seq")
        .values_list("seq", "text")[:lines]
    )
    text = "".join(chunk_lines(chunk) for _, chunk in reversed(chunks))
    return {
        "uuid": job.uuid,
        "state": job.state,
        "ended": JobView.of(job).sealed,
        "seq": chunks[0][0] if chunks else None,
        "lines": text.splitlines()[-lines:],
    }


def requeue_attrs(job: Job, *, by: User) -> dict[str, Any]:
    """A new job with the same inputs as `job`: the same exact commit, parameters and
    constraints, owned by the same owner. Its description says where it came from."""
    note = f"Requeue of {job.uuid} ({job.state}) by {by.username}."
    description = f"{note}\n\n{job.description}" if job.description else note
    return {
        "owner_uuid": job.owner_uuid,
        "repository": job.repository,
        "script": job.script,
        "script_version": job.script_version,
        "supplied_script_version": job.supplied_script_version,
        "command": copy.deepcopy(job.command),
        "working_dir": job.working_dir,
        "environment": copy.deepcopy(job.environment),
        "labels": copy.deepcopy(job.labels),
        "meta": copy.deepcopy(job.meta),
        "script_parameters": copy.deepcopy(job.script_parameters)
        if job.script_parameters is not None
        else {},
        "runtime_constraints": copy.deepcopy(job.runtime_constraints),
        "nondeterministic": job.nondeterministic,
        "priority": job.priority,
        "description": description[:DESCRIPTION_MAX],
    }
