"""Running jobs: dispatch, claim, per-job tokens, log chunks, finish.

The database row is the truth; a dispatch message is only a hint carrying a job uuid, sent
after the transaction that queued the job commits. A worker that receives a hint claims the
best job it may run (priority desc, then oldest) with one conditional update, Queued and
unlocked → Running, so duplicate, late or lost messages cannot run a job twice or lose it
(a sweeper re-sends hints for jobs that wait too long).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs.follow import chunk_lines
from jobs.locks import try_advisory_lock
from jobs.models import ApiClientAuthorization, ExecutionState, Job, JobState, LogChunk, Node, User
from jobs.queue import queued_jobs
from jobs.services.executions import executions_end_running
from jobs.services.tokens import system_user, token_create
from jobs.transitions import job_settle, job_transition
from jobs.wakeups import notify

log = logging.getLogger("crunch.runs")

CLAIM_BATCH = 20


def dispatch_on_commit(job_uuid: str) -> None:
    """Send the dispatch hint for `job_uuid` once the current transaction commits."""
    transaction.on_commit(partial(_dispatch, job_uuid))


def _dispatch(job_uuid: str) -> None:
    path = settings.CRUNCH_DISPATCHER
    if not path:
        return
    try:
        import_string(path)(job_uuid)
    except Exception:
        # The job is safely Queued in the database; the sweeper re-sends lost hints.
        log.warning("could not dispatch %s; it stays queued", job_uuid, exc_info=True)


# --- nodes and placement ----------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    cores: int
    ram_mb: int
    labels: frozenset[str]

    @classmethod
    def of(cls, node: Node) -> Capabilities:
        info = node.info or {}
        return cls(
            int(info.get("cores", 0)), int(info.get("ram_mb", 0)), frozenset(info.get("labels", []))
        )


def placement_problem(job: Job, caps: Capabilities) -> str | None:
    """Why a node with `caps` cannot run `job` (runtime_constraints), or None if it can."""
    constraints = job.runtime_constraints or {}
    cores = constraints.get("min_cores_per_node")
    if isinstance(cores, int | float) and cores > caps.cores:
        return f"min_cores_per_node {cores} (a node has {caps.cores})"
    ram = constraints.get("min_ram_mb_per_node")
    if isinstance(ram, int | float) and ram > caps.ram_mb:
        return f"min_ram_mb_per_node {ram} (a node has {caps.ram_mb})"
    wanted = constraints.get("constraints")
    if isinstance(wanted, str):
        wanted = [wanted]
    if isinstance(wanted, list):
        missing = sorted(str(w) for w in wanted if str(w) not in caps.labels)
        if missing:
            return f"labels {', '.join(missing)}"
    return None


def node_register(*, hostname: str, caps: Capabilities, concurrency: int) -> Node:
    """A worker's node row (reused by host name), alive from now."""
    now = timezone.now()
    info = {
        "cores": caps.cores,
        "ram_mb": caps.ram_mb,
        "labels": sorted(caps.labels),
        "concurrency": concurrency,
        "state": "up",
    }
    node = Node.objects.filter(hostname=hostname).first()
    if node is None:
        system = system_user()
        node = Node.objects.create(
            uuid=Node.new_uuid(),
            owner_uuid=system.uuid,
            created_at=now,
            modified_at=now,
            hostname=hostname,
            first_ping_at=now,
            last_ping_at=now,
            info=info,
        )
    else:
        Node.objects.filter(pk=node.pk).update(
            info=info, last_ping_at=now, modified_at=now, job_uuid=None
        )
        node.refresh_from_db()
    return node


def node_heartbeat(*, node_uuid: str) -> None:
    Node.objects.filter(uuid=node_uuid).update(last_ping_at=timezone.now())


def node_down(*, node_uuid: str) -> None:
    node = Node.objects.filter(uuid=node_uuid).first()
    if node is not None:
        info = dict(node.info or {}, state="down")
        Node.objects.filter(pk=node.pk).update(info=info, last_ping_at=None)


def job_claim(*, worker: str, node_uuid: str | None = None) -> Job | None:
    """Claim the best Queued, unlocked job this node can run: it becomes Running, locked by
    the system user, recorded as running on `node_uuid`.

    Returns None when there is nothing to run (another worker won every race)."""
    system = system_user()
    node = Node.objects.filter(uuid=node_uuid).first() if node_uuid else None
    caps = Capabilities.of(node) if node is not None else None
    candidates = (
        queued_jobs()
        .filter(is_locked_by_uuid__isnull=True)
        .only("pk", "uuid", "runtime_constraints")[:CLAIM_BATCH]
    )
    for candidate in candidates:
        if caps is not None and placement_problem(candidate, caps) is not None:
            continue
        job = job_transition(
            job_uuid=candidate.uuid,
            frm=JobState.QUEUED,
            to=JobState.RUNNING,
            by=system.uuid,
            guard={"is_locked_by_uuid__isnull": True},
            fields={"is_locked_by_uuid": system.uuid, "worker_node_uuid": node_uuid},
        )
        if job is not None:
            log.info("%s claimed %s", worker, job.uuid)
            notify(job.uuid)
            return job
    return None


def job_token_create(*, job: Job, lifetime: dt.timedelta) -> str:
    """A token for the job's script and runner, acting as the job's submitter; it expires
    (and is revoked when the job ends)."""
    # The submitter (spec §7.1: the last modifier), else the owner when that is a user.
    user = (
        User.objects.filter(uuid=job.modified_by_user_uuid).exclude(uuid=system_user().uuid).first()
        or User.objects.filter(uuid=job.owner_uuid).first()
        or system_user()
    )
    auth = token_create(user=user, expires_at=timezone.now() + lifetime, owner_uuid=user.uuid)
    ApiClientAuthorization.objects.filter(pk=auth.pk).update(default_owner_uuid=job.owner_uuid)
    assert auth.api_token is not None
    return auth.api_token


def job_token_revoke(*, token_uuid_or_secret: str) -> None:
    from jobs.services.tokens import token_hash

    ApiClientAuthorization.objects.filter(token_hash=token_hash(token_uuid_or_secret)).update(
        expires_at=timezone.now()
    )


def job_log_append(*, job_uuid: str, seq: int, text: str) -> LogChunk:
    """Store one chunk of a job's log; `seq` numbers them from 0 without gaps."""
    chunk = LogChunk.objects.create(
        job_uuid=job_uuid, seq=seq, text=text, created_at=timezone.now()
    )
    notify(job_uuid)
    return chunk


def job_log_next_seq(*, job_uuid: str) -> int:
    """The number the job's next log chunk gets (chunks may exist before a run starts: the
    sweeper's notes about a job no node could run yet)."""
    last = (
        LogChunk.objects.filter(job_uuid=job_uuid)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return 0 if last is None else last + 1


def job_log_note(*, job_uuid: str, message: str) -> None:
    """Append a line from the system (not a runner) after the job's last chunk."""
    stamp = timezone.now().strftime("%Y-%m-%d_%H:%M:%S")
    for _ in range(5):
        try:
            with transaction.atomic():
                job_log_append(
                    job_uuid=job_uuid,
                    seq=job_log_next_seq(job_uuid=job_uuid),
                    text=f"{stamp} crunch: {message}\n",
                )
            return
        except IntegrityError:
            continue  # a runner wrote a chunk meanwhile: take the next number


def job_set_log(*, job_uuid: str, log_pdh: str) -> None:
    """Record the log collection of a job that has ended."""
    Job.objects.filter(uuid=job_uuid).update(log=log_pdh, modified_at=timezone.now())
    notify(job_uuid)


def job_log_text(*, job_uuid: str) -> str:
    return "".join(
        map(
            chunk_lines,
            LogChunk.objects.filter(job_uuid=job_uuid)
            .order_by("seq")
            .values_list("text", flat=True),
        )
    )


def job_state(*, job_uuid: str) -> str | None:
    return Job.objects.filter(uuid=job_uuid).values_list("state", flat=True).first()


def job_finish(
    *,
    job_uuid: str,
    success: bool,
    output: str | None,
    log_pdh: str | None,
    tasks_summary: dict[str, int] | None = None,
) -> Job:
    """Record the end of a run: Running → Complete or Failed with its output and log. A job
    cancelled (or swept) meanwhile keeps its state and gets `finished_at` and the (partial)
    log (`jobs.transitions`: cancel raced with completion)."""
    system = system_user()
    ended: dict[str, Any] = {}
    if log_pdh:
        ended["log"] = log_pdh
    if tasks_summary is not None:
        ended["tasks_summary"] = tasks_summary
    job = job_transition(
        job_uuid=job_uuid,
        frm=JobState.RUNNING,
        to=JobState.COMPLETE if success else JobState.FAILED,
        by=system.uuid,
        fields=ended | ({"output": output} if success else {}),
    )
    if job is None:
        job = job_settle(job_uuid=job_uuid, by=system.uuid, fields=ended)
    if job is None:  # still Queued: not a run's end (the claim was undone by hand)
        job = Job.objects.get(uuid=job_uuid)
    notify(job.uuid)
    return job


# --- the sweeper ----------------------------------------------------------------------------


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """Yields True in at most one process at a time (False elsewhere): the try-lock of
    `jobs.locks` (a PostgreSQL advisory lock for the transaction, a file lock on SQLite)."""
    with try_advisory_lock(name) as mine:
        yield mine


@dataclass
class SweepReport:
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    unplaceable: list[str] = field(default_factory=list)


def sweep() -> SweepReport | None:
    """One pass: fail Running jobs whose worker stopped heartbeating, explain queued jobs no
    live node can run, and re-send hints for queued jobs nobody claimed. None when another
    process holds the sweep lock."""
    with exclusive("crunch-sweep") as mine:
        if not mine:
            return None
        report = SweepReport()
        now = timezone.now()
        ttl = dt.timedelta(seconds=settings.CRUNCH_WORKER_TTL)
        nodes = {n.uuid: n for n in Node.objects.all()}
        system = system_user()
        for job in Job.objects.filter(state=JobState.RUNNING, is_locked_by_uuid=system.uuid):
            node = nodes.get(job.worker_node_uuid or "")
            seen = node.last_ping_at if node is not None else None
            if seen is not None and seen >= now - ttl:
                continue
            if seen is None and job.started_at and job.started_at >= now - ttl:
                continue  # just claimed; give the node time to be seen
            who = node.hostname if node is not None else "an unknown worker"
            when = seen.strftime("%Y-%m-%d %H:%M:%S UTC") if seen else "never"
            # Failed, not re-run: the script may already have had side effects.
            job_log_note(
                job_uuid=job.uuid,
                message=f"the job failed: its worker {who} stopped heartbeating (last seen {when})",
            )
            failed = job_transition(
                job_uuid=job.uuid,
                frm=JobState.RUNNING,
                to=JobState.FAILED,
                by=system.uuid,
                guard={"is_locked_by_uuid": system.uuid, "worker_node_uuid": job.worker_node_uuid},
            )
            if failed is None:
                continue  # it ended meanwhile (its runner was alive after all, or a cancel)
            executions_end_running(
                job_uuid=job.uuid,
                state=ExecutionState.LOST,
                reason=f"its worker {who} stopped heartbeating (last seen {when})",
            )
            notify(job.uuid)
            report.failed.append(job.uuid)

        live = [
            Capabilities.of(n)
            for n in nodes.values()
            if n.last_ping_at is not None and n.last_ping_at >= now - ttl
        ]
        requeue_before = now - dt.timedelta(seconds=settings.CRUNCH_REQUEUE_SECONDS)
        capacity = sum(
            int((n.info or {}).get("concurrency", 1))
            for n in nodes.values()
            if n.last_ping_at is not None and n.last_ping_at >= now - ttl
        )
        queued = queued_jobs()
        for job in queued[:1000]:
            status = None
            if live:
                problems = [placement_problem(job, caps) for caps in live]
                if all(problems):
                    status = f"no registered node can run this job: it needs {problems[0]}"
            if status != job.scheduling_status:
                Job.objects.filter(pk=job.pk).update(scheduling_status=status)
                notify(job.uuid)
                if status:
                    job_log_note(job_uuid=job.uuid, message=status)
                    report.unplaceable.append(job.uuid)
            if (
                status is None
                and live
                and job.created_at < requeue_before
                and len(report.resent) < capacity
            ):
                _dispatch(job.uuid)
                report.resent.append(job.uuid)
        return report
