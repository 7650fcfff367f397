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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs import placement, rowsql
from jobs.exceptions import InvalidRequest
from jobs.follow import chunk_lines
from jobs.locks import try_advisory_lock
from jobs.models import ApiClientAuthorization, ExecutionState, Job, JobState, LogChunk, Node, User
from jobs.queue import RUN_ORDER, queued_jobs
from jobs.services.executions import executions_end_running, node_hostname
from jobs.services.objects import Actor
from jobs.services.tokens import system_user, token_create
from jobs.transitions import job_settle, job_transition
from jobs.uuids import system_user_uuid
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


def node_register(
    *,
    hostname: str,
    cpus: float,
    ram_bytes: int,
    gpus: int,
    labels: dict[str, str],
    slots: int,
    pid: int | None = None,
    resources: dict[str, float] | None = None,
) -> Node:
    """A new node row for a worker that is starting, alive from now.

    Every start is a new node, even on a host (or under a name) seen before: a worker
    restarted after a crash must not heartbeat for its predecessor, whose running jobs the
    sweeper then fails once the old node has been silent for CRUNCH_WORKER_TTL."""
    now = timezone.now()
    info = {
        "cpus": cpus,
        "ram_bytes": ram_bytes,
        "gpus": gpus,
        "labels": dict(labels),
        "slots": slots,
        "resources": dict(resources or {}),
        "state": "up",
        "pid": pid,
    }
    return Node.objects.create(
        uuid=Node.new_uuid(),
        owner_uuid=system_user().uuid,
        created_at=now,
        modified_at=now,
        hostname=hostname,
        first_ping_at=now,
        last_ping_at=now,
        info=info,
    )


def node_name(*, node_uuid: str, hostname: str | None = None) -> str:
    """`hostname (uuid)` of a node, for logs (its hostname read unless given)."""
    hostname = hostname or node_hostname(node_uuid=node_uuid)
    return f"{hostname} ({node_uuid})" if hostname else node_uuid


def node_heartbeat(*, node_uuid: str) -> None:
    Node.objects.filter(uuid=node_uuid).update(last_ping_at=timezone.now())


def node_down(*, node_uuid: str) -> None:
    node = Node.objects.filter(uuid=node_uuid).first()
    if node is not None:
        info = dict(node.info or {}, state="down")
        Node.objects.filter(pk=node.pk).update(info=info, last_ping_at=None)


def job_requirements(job: Job) -> placement.Requirements | str:
    """What the job asks of a node, or why it cannot be read (rows saved before constraints
    were checked at submit)."""
    try:
        return placement.Requirements.of(job.runtime_constraints)
    except InvalidRequest as exc:
        return f"no suitable node: {exc}"


_NODE_VIEWS: dict[str, placement.NodeView] = {}


def node_view(node_uuid: str) -> placement.NodeView | None:
    """What a node offers, as its worker registered it. Kept in the process once read: a
    node's resources and labels never change (a worker that starts again is a new node,
    with a new uuid), and a worker asks this at every claim."""
    view = _NODE_VIEWS.get(node_uuid)
    if view is None:
        node = Node.objects.filter(uuid=node_uuid).first()
        if node is None:
            return None
        if len(_NODE_VIEWS) >= 256:
            _NODE_VIEWS.clear()
        view = _NODE_VIEWS[node_uuid] = placement.NodeView.of(node)
    return view


def job_claim(*, worker: str, node_uuid: str | None = None) -> Job | None:
    """Claim the best Queued, unlocked job this node can run: it becomes Running, locked by
    the system user, recorded as running on `node_uuid`.

    Returns None when there is nothing to run (another worker won every race)."""
    view = node_view(node_uuid) if node_uuid else None
    for candidate in _claimable():
        if view is not None:
            req = job_requirements(candidate)
            if isinstance(req, str) or placement.node_problems(req, view):
                continue
        job = job_transition(
            job_uuid=candidate.uuid,
            frm=JobState.QUEUED,
            to=JobState.RUNNING,
            by=system_user_uuid(),
            guard={"is_locked_by_uuid__isnull": True},
            fields={
                "is_locked_by_uuid": system_user_uuid(),
                "worker_node_uuid": node_uuid,
                "scheduling_status": None,
            },
        )
        if job is not None:
            log.info("%s claimed %s", worker, job.uuid)
            notify(job.uuid)
            return job
    return None


_CLAIMABLE_FIELDS = ("id", "uuid", "runtime_constraints")


def _claimable() -> list[Job]:
    """The first CLAIM_BATCH unlocked queued jobs in run order, with what a claim reads of
    them. Written out (`jobs.rowsql`): a worker asks at every hint, and the ORM took longer
    to build the query than the database took to answer it (1.6 against 0.7 ms)."""
    jobs = rowsql.reader(Job, _CLAIMABLE_FIELDS)
    rows = rowsql.fetch_all(
        f"SELECT {jobs.columns()} FROM {Job._meta.db_table} "
        f"WHERE state = %s AND is_locked_by_uuid IS NULL "
        f"ORDER BY {rowsql.order_sql(Job, RUN_ORDER)} LIMIT %s",
        [JobState.QUEUED, CLAIM_BATCH],
    )
    return [jobs.build(row) for row in rows]


def hint_target(*, job_uuid: str, node_uuid: str | None) -> tuple[str, str] | None:
    """Where to pass a hint this node could not use (it claimed nothing): a queued job it
    cannot run but another live node can (the hinted job first, else the first in queue
    order), and the host name of the least busy such node. None when there is none."""
    if node_uuid is None:
        return None
    live = placement.live_node_views()
    me = next((n for n in live if n.uuid == node_uuid), None)
    others = [n for n in live if n.uuid != node_uuid]
    if me is None or not others:
        return None
    queued = Job.objects.filter(state=JobState.QUEUED, is_locked_by_uuid__isnull=True)
    fields = ("pk", "uuid", "runtime_constraints")
    candidates = [
        *queued.filter(uuid=job_uuid).only(*fields),
        *queued.exclude(uuid=job_uuid).order_by(*RUN_ORDER).only(*fields)[:CLAIM_BATCH],
    ]
    busy = Counter(
        Job.objects.filter(
            state=JobState.RUNNING, worker_node_uuid__in=[n.uuid for n in others]
        ).values_list("worker_node_uuid", flat=True)
    )
    for job in candidates:
        req = job_requirements(job)
        if isinstance(req, str) or not placement.node_problems(req, me):
            continue  # nobody can, or this node can (it claims it with its next hint)
        suitable = placement.verdict(req, others).suitable
        if suitable:
            best = min(suitable, key=lambda n: (busy[n.uuid] / max(n.slots, 1), n.hostname))
            return job.uuid, best.hostname
    return None


def job_collection_create(*, actor: Actor, manifest_text: str, name: str, owner_uuid: str) -> str:
    """Record a collection a run made (its output, its log) as the run's token's user
    (`job_token_create`), through the same service, checks and signature verification as
    `POST /arvados/v1/collections`; its PDH. The blocks were stored through Keep already: a
    worker writes its blocks through the API (the store may be elsewhere) and its records,
    like its claim and its log chunks, in the database it shares with the API."""
    from jobs.models import Collection
    from jobs.services.resources import service_for

    collection = service_for(Collection).create(
        actor=actor,
        attrs={"manifest_text": manifest_text, "name": name, "owner_uuid": owner_uuid},
    )
    return str(collection.portable_data_hash)


def job_token_create(*, job: Job, lifetime: dt.timedelta) -> Actor:
    """A token for the job's script and runner, acting as the job's submitter; it expires
    (and is revoked when the job ends). Returned as the actor the run writes its own records
    as (its output and log collections); the secret is `actor.auth.api_token`."""
    # The submitter (spec §7.1: the last modifier), else the owner when that is a user.
    submitter = job.modified_by_user_uuid
    user = (
        (
            User.objects.filter(uuid=submitter).first()
            if submitter not in (None, system_user_uuid())
            else None
        )
        or User.objects.filter(uuid=job.owner_uuid).first()
        or system_user()
    )
    auth = token_create(
        user=user,
        expires_at=timezone.now() + lifetime,
        owner_uuid=user.uuid,
        default_owner_uuid=job.owner_uuid,
    )
    return Actor(user=user, auth=auth)


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


def job_record_packages(*, job_uuid: str, packages: dict[str, str]) -> None:
    """Record what the job's Python requirements resolved to on its worker."""
    Job.objects.filter(uuid=job_uuid).update(resolved_packages=packages, modified_at=timezone.now())


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


def execution_log_text(*, execution: Any, following: Any | None, limit: int = 10000) -> str:
    """The part of a job's log one execution wrote: its chunks from its `log_seq` up to the
    next execution's (at most `limit` chunks)."""
    chunks = LogChunk.objects.filter(job_uuid=execution.job_uuid, seq__gte=execution.log_seq)
    if following is not None:
        chunks = chunks.filter(seq__lt=following.log_seq)
    texts = chunks.order_by("seq").values_list("text", flat=True)[:limit]
    return "".join(map(chunk_lines, texts))


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
    ended: dict[str, Any] = {}
    if log_pdh:
        ended["log"] = log_pdh
    if tasks_summary is not None:
        ended["tasks_summary"] = tasks_summary
    job = job_transition(
        job_uuid=job_uuid,
        frm=JobState.RUNNING,
        to=JobState.COMPLETE if success else JobState.FAILED,
        by=system_user_uuid(),
        fields=ended | ({"output": output} if success else {}),
    )
    if job is None:
        job = job_settle(job_uuid=job_uuid, by=system_user_uuid(), fields=ended)
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
    down: list[str] = field(default_factory=list)  # nodes found silent past the TTL
    instances: int = 0  # jobs made for job templates' schedules (a joining node, a restart)


def sweep() -> SweepReport | None:
    """One pass: fail Running jobs whose worker stopped heartbeating, mark silent nodes down,
    explain queued jobs no live node can run, and re-send hints for queued jobs nobody
    claimed. None when another process holds the sweep lock."""
    with exclusive("crunch-sweep") as mine:
        if not mine:
            return None
        report = SweepReport()
        now = timezone.now()
        ttl = dt.timedelta(seconds=settings.CRUNCH_WORKER_TTL)
        system = system_user_uuid()  # runners lock as the system user
        running = list(Job.objects.filter(state=JobState.RUNNING, is_locked_by_uuid=system))
        wanted = {j.worker_node_uuid for j in running if j.worker_node_uuid}
        nodes = {n.uuid: n for n in Node.objects.filter(uuid__in=wanted)}
        for job in running:
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
                by=system,
                guard={"is_locked_by_uuid": system, "worker_node_uuid": job.worker_node_uuid},
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

        for node in Node.objects.filter(last_ping_at__lt=now - ttl, info__state="up"):
            info = dict(node.info or {}, state="down")
            Node.objects.filter(pk=node.pk).update(info=info, modified_at=now)
            report.down.append(node.uuid)

        live = placement.live_node_views(now)
        requeue_before = now - dt.timedelta(seconds=settings.CRUNCH_REQUEUE_SECONDS)
        capacity = sum(n.slots for n in live)
        queued = queued_jobs()
        for job in queued[:1000]:
            status = None
            if live:  # with no live node, wait for one rather than judge
                req = job_requirements(job)
                status = req if isinstance(req, str) else placement.verdict(req, live).message
            if status != job.scheduling_status:
                # still queued: a runner may have begun (and begun its log) meanwhile
                if not Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
                    scheduling_status=status
                ):
                    continue
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
        from jobs.templates import templates_reconcile

        report.instances = templates_reconcile()
        return report
