"""A job's states, the edges between them and what each state implies: the one place that
knows them. Every change of a job's `state` is one of these edges.

States (spec §2.10)::

    Queued     waiting for a worker (or a client's lock)
    Running    claimed by a worker (locked by the system user) or locked by a client
    Complete   the run succeeded                          final
    Failed     the run failed, or its worker vanished     final
    Cancelled  a user cancelled it                        final

Edges, and who takes them::

    Queued  -> Running    claim (a worker: unlocked -> locked by the system user), or
                          lock (a client: unlocked -> locked by the caller)
    Queued  -> Complete | Failed
                          a client recording work done elsewhere (the Arvados PUT path)
    Queued  -> Cancelled  cancel
    Running -> Complete | Failed
                          finish (the runner holding the lock), or a client holding the lock
    Running -> Failed     sweep: the worker stopped heartbeating (the row is locked by the
                          system user; the sweeper acts for the lost holder)
    Running -> Cancelled  cancel
    Complete, Failed, Cancelled: final, no edge out

Only the holder of a job's lock (or the system user) may move a locked job, with two
exceptions that need no lock: cancel (anyone who may write the job) and the sweeper's
Running -> Failed of a job whose worker is gone.

Each state implies the legacy flags `running`/`success` and one timestamp (`STATE_EFFECTS`),
set once: a timestamp already recorded is kept.

`job_transition` is the compare-and-set every edge goes through: one conditional UPDATE
(`uuid`, `state in frm`, the guard), which returns the job as updated, or None when the row
was no longer in `frm` (another worker claimed it first, the job was cancelled meanwhile):
losing that race is normal and quiet. Asking for an edge the table does not have is a bug
or a bad request, and loud: `InvalidTransition` (422 through the API).

Cancel raced with completion: a job cancelled while its run was finishing stays Cancelled.
The runner's finish loses the compare-and-set (the job is no longer Running) and
`job_settle` records only the end of the run on the cancelled row: `finished_at` (kept if
set) and the partial log, never a new state, success flag or output. The same holds for a
job the sweeper failed while its runner was, after all, still alive.

The Arvados PUT path (`jobs.services.jobs.JobService`) validates a client's state change
against the same table and applies the same effects, inside its own write with its
permission and lock rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from django.db import connections, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.db.models.sql.subqueries import UpdateQuery
from django.utils import timezone

from jobs import rowsql
from jobs.exceptions import InvalidTransition
from jobs.metrics import observe_transition
from jobs.models.jobs import FINAL_STATES, Job, JobState

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.QUEUED: frozenset(
        {JobState.RUNNING, JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED}),
    JobState.COMPLETE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class Effect(NamedTuple):
    """What a state implies: the legacy flags and the timestamp that records reaching it."""

    running: bool
    success: bool | None
    stamp: str | None


STATE_EFFECTS: dict[str, Effect] = {
    JobState.QUEUED: Effect(False, None, None),
    JobState.RUNNING: Effect(True, None, "started_at"),
    JobState.COMPLETE: Effect(False, True, "finished_at"),
    JobState.FAILED: Effect(False, False, "finished_at"),
    JobState.CANCELLED: Effect(False, False, "cancelled_at"),
}


def is_allowed(frm: str | None, to: str) -> bool:
    """Whether `frm -> to` is an edge of the table."""
    return to in ALLOWED_TRANSITIONS.get(frm or "", frozenset())


def check_edges(job_uuid: str, frm: Iterable[str], to: str) -> None:
    """Raise InvalidTransition unless `to` is an edge from every state of `frm`."""
    for state in sorted(frm):
        if not is_allowed(state, to):
            raise InvalidTransition(job_uuid, frm=state, to=to)


def job_transition(
    *,
    job_uuid: str,
    frm: str | Iterable[str],
    to: str,
    by: str | None,
    guard: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
) -> Job | None:
    """Move the job from one of `frm` to `to` with one conditional UPDATE.

    `by` becomes `modified_by_user_uuid` (None leaves it); `guard` adds conditions on the row
    (`{"is_locked_by_uuid__isnull": True}`); `fields` are set along with the state (the lock
    holder, the output). The flags and the timestamp of `to` follow `STATE_EFFECTS`.

    Returns the updated job, or None when the row was not in `frm` (or failed the guard):
    someone else changed it first. Raises InvalidTransition when `to` is not an edge from
    every state of `frm`. Wake-ups (`notify`) are the caller's."""
    states = {frm} if isinstance(frm, str) else set(frm)
    if not states:
        raise ValueError("job_transition needs at least one state to move from")
    check_edges(job_uuid, states, to)
    effect = STATE_EFFECTS[to]
    now = timezone.now()
    values: dict[str, Any] = {
        "state": to,
        "running": effect.running,
        "success": effect.success,
        "modified_at": now,
    }
    if effect.stamp:
        values[effect.stamp] = Coalesce(F(effect.stamp), Value(now))
    if by is not None:
        values["modified_by_user_uuid"] = by
    values |= fields or {}
    job = _update_job(job_uuid, {"state__in": states, **(guard or {})}, values)
    if job is None:
        return None
    observe_transition(job, to)
    return job


def _update_job(job_uuid: str, conditions: dict[str, Any], values: dict[str, Any]) -> Job | None:
    """UPDATE the job if it meets `conditions`; the job as updated, or None when it did not.
    Where the database returns updated rows (PostgreSQL, SQLite 3.35 and later), that is one
    statement, `UPDATE ... RETURNING`, instead of the UPDATE and a read: every claim and
    every finish makes one trip to the database fewer."""
    queryset = Job.objects.filter(uuid=job_uuid, **conditions)
    connection = connections[queryset.db]
    if not connection.features.can_return_columns_from_insert:
        if queryset.update(**values) != 1:
            return None
        return Job.objects.get(uuid=job_uuid)
    query: UpdateQuery = queryset.query.chain(UpdateQuery)  # type: ignore[assignment]
    query.add_update_values(values)
    query.clear_select_clause()
    sql, params = query.get_compiler(queryset.db).as_sql()
    jobs = rowsql.reader(Job)
    with transaction.mark_for_rollback_on_error(using=queryset.db):
        rows = rowsql.fetch_all(f"{sql} RETURNING {jobs.columns()}", params)
    return jobs.build(rows[0]) if len(rows) == 1 else None


def job_settle(
    *, job_uuid: str, by: str | None, fields: dict[str, Any] | None = None
) -> Job | None:
    """Record the end of a run on a job that already reached a final state (it was cancelled,
    or swept, while the run was ending): `finished_at` once, and `fields` (its log), never
    its state or flags. Returns the job, or None when it is not in a final state."""
    now = timezone.now()
    values: dict[str, Any] = {
        "finished_at": Coalesce(F("finished_at"), Value(now)),
        "modified_at": now,
    }
    if by is not None:
        values["modified_by_user_uuid"] = by
    values |= fields or {}
    return _update_job(job_uuid, {"state__in": FINAL_STATES}, values)
