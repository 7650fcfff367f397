"""Which earlier job a submission reuses: the selection rules of spec §3.5–§3.7, door-neutral.

Given the candidates (jobs with the same identity that the caller may read, in
`CANDIDATE_ORDER`), `select` picks the oldest fully readable Complete job as long as every
Complete candidate with an output and a log agrees on the output; else the caller's own
Running, then Queued job; else none, and says why for each job. `reuse_record` writes down
each reuse. The Arvados API (jobs/reuse.py, with its `in git` filters) and the neutral
`job_submit` (jobs/submit.py) both use these rules, so reuse means the same from every door.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.utils import timezone

from jobs import permissions, rowsql, savings
from jobs.models import Collection, Job, JobReuse, JobState, User
from jobs.selectors import readable_collection_sql, readable_pdhs
from jobs.services.objects import Actor

# §3.5 item 6: Running, Queued, then Complete ("R" > "Q" > "C"), oldest first; the id
# settles jobs created within the same microsecond.
CANDIDATE_ORDER = ("-state", "created_at", "id")

# Which jobs are candidates, besides their identity and readability, over the jobs table's
# unqualified columns: §3.5's states (Complete, or the caller's own Queued or Running job),
# and only jobs that may ever be handed back: not nondeterministic, output not invalidated.
# Written out: as ORM conditions, building and compiling them took longer than the query.
CANDIDATE_CONDITION = (
    "(state = %s OR (owner_uuid = %s AND state IN (%s, %s)))"
    " AND nondeterministic IS NOT TRUE AND invalidated_at IS NULL"
)


REFUSED = object()
REUSED = "reused"


@dataclass(frozen=True, slots=True)
class Candidate:
    """What selection reads of a candidate job. A hit hands back one job of what can be
    dozens of candidates, so candidates are read as these few values (not as whole jobs,
    whose parameters and constraints would all be decoded) and the chosen one is then read
    in full (`chosen_job`)."""

    pk: int
    uuid: str
    state: str
    output: str | None
    log: str | None
    owner_uuid: str | None
    script_version: str | None
    arvados_sdk_version: str | None


CANDIDATE_FIELDS = tuple(f.name for f in dataclasses.fields(Candidate))


def candidates(queryset: Any, *, user: User) -> list[Candidate]:
    """The jobs of `queryset` (one identity's, over the jobs table alone) that `user` may
    reuse, in `CANDIDATE_ORDER`, in one query: `CANDIDATE_CONDITION`, readable by `user`."""
    sql = CANDIDATE_CONDITION
    params: list[Any] = [JobState.COMPLETE, user.uuid, JobState.QUEUED, JobState.RUNNING]
    readable = permissions.readable_sql(user)
    if readable is not None:
        sql = f"{sql} AND {readable[0]}"
        params += readable[1]
    # Only the identity's conditions (the submission's filters) go through the ORM, and
    # only as far as their WHERE clause: the rest of the query is written out, because the
    # ORM took longer to build and compile it than the database took to answer.
    query = queryset.query
    if len(query.alias_map) > 1 or query.distinct or query.extra:
        raise ValueError("candidates are read from the jobs table alone")
    try:
        where, where_params = query.get_compiler(using=queryset.db).compile(query.where)
    except EmptyResultSet:
        return []
    except FullResultSet:
        where, where_params = "1 = 1", ()
    rows = rowsql.fetch_all(
        f"SELECT {_CANDIDATE_COLUMNS} FROM {Job._meta.db_table} "
        f"WHERE ({where}) AND {sql} ORDER BY {_CANDIDATE_ORDER_SQL}",
        [*where_params, *params],
    )
    return [Candidate(*values) for values in rows]


_CANDIDATE_COLUMNS = rowsql.column_sql(Job, CANDIDATE_FIELDS)
_CANDIDATE_ORDER_SQL = rowsql.order_sql(Job, CANDIDATE_ORDER)


def chosen_job(candidate: Candidate | None) -> Job | None:
    """The whole job of a candidate, or None (also when it is gone since it was read).
    Written out (`jobs.rowsql`): building and compiling the ORM's query took as long as
    running it."""
    if candidate is None:
        return None
    jobs = rowsql.reader(Job)
    row = rowsql.fetch_one(
        f"SELECT {jobs.columns()} FROM {Job._meta.db_table} WHERE id = %s", [candidate.pk]
    )
    return jobs.build(row) if row is not None else None


def select_job(jobs: Sequence[Candidate], *, user: User) -> tuple[Job | None, dict[str, str]]:
    """`select`, and the whole job it chose (None when none was, or when the chosen job was
    deleted since the candidates were read).

    Without CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER only the oldest completed job's output and
    log are ever checked for readability (the others must only agree with its output), and
    that job is the one chosen unless it is refused: it is read whole in the same query as
    the readability of its output and log (`_with_readability`), so a hit makes one trip
    to the database for both."""
    complete = [j for j in jobs if j.state == JobState.COMPLETE and j.output and j.log]
    if settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER or not complete:
        readable = readable_pdhs(user, {p for j in complete for p in (j.output, j.log) if p})
        chosen, reasons = select(jobs, readable=readable)
        return chosen_job(chosen), reasons
    first = complete[0]
    read = _with_readability(first, user=user)
    job: Job | None
    if read is None:  # gone since the candidates were read: ask about its outputs alone
        job, readable = None, readable_pdhs(user, {p for p in (first.output, first.log) if p})
    else:
        job, readable = read
    chosen, reasons = select(jobs, readable=readable)
    return (job if chosen is first else chosen_job(chosen)), reasons


def _with_readability(candidate: Candidate, *, user: User) -> tuple[Job, set[str]] | None:
    """The whole job of `candidate` and which of its output and log `user` may read
    (`readable_pdhs`' rule), in one query; None when the job is gone."""
    jobs = rowsql.reader(Job)
    condition, params = readable_collection_sql(user)
    # Unqualified, the condition's columns are the collection's (the innermost table).
    exists = (
        f"EXISTS (SELECT 1 FROM {Collection._meta.db_table} "
        f"WHERE portable_data_hash = %s AND {condition})"
    )
    row = rowsql.fetch_one(
        f"SELECT {jobs.columns('j')}, {exists}, {exists} FROM {Job._meta.db_table} j "
        "WHERE j.id = %s",
        [candidate.output, *params, candidate.log, *params, candidate.pk],
    )
    if row is None:
        return None
    output_readable, log_readable = row[len(jobs) :]
    found = {
        pdh
        for pdh, ok in ((candidate.output, output_readable), (candidate.log, log_readable))
        if ok and pdh
    }
    return jobs.build(row[: len(jobs)]), found


def select(
    jobs: Sequence[Candidate], *, readable: set[str]
) -> tuple[Candidate | None, dict[str, str]]:
    """§3.6 / §3.7 over candidates in order, given which of their outputs and logs the
    caller may read (`select_job`); returns the choice and a reason per job.

    The reason of the job returned starts with "reused"; no other reason does.
    """
    reasons: dict[str, str] = {}
    incomplete: Candidate | None = None
    chosen: Any = None  # a Candidate, REFUSED or None
    provisional: Candidate | None = None  # the job chosen before a refusal, if any
    reference: Candidate | None = None  # the completed job whose output the others must match
    refusal: str | None = None  # why no completed job is reused
    differ_ok = settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER

    for job in jobs:
        if job.state != JobState.COMPLETE:
            if incomplete is None:
                incomplete = job
                reasons[job.uuid] = f"your own {job.state} job: reused only if no completed job is"
            else:
                reasons[job.uuid] = (
                    f"your own {job.state} job, but your {incomplete.state} job "
                    f"{incomplete.uuid} comes first"
                )
            continue
        if refusal is not None:
            reasons[job.uuid] = f"not considered: {refusal}"
            continue
        if job.output is None:
            reasons[job.uuid] = "completed without an output"
            continue
        if job.log is None:
            reasons[job.uuid] = "completed without a log"
            continue
        if differ_ok:
            if job.output not in readable:
                reasons[job.uuid] = f"its output {job.output} is not readable by you"
            elif job.log not in readable:
                reasons[job.uuid] = f"its log {job.log} is not readable by you"
            else:
                reasons[job.uuid] = (
                    f"{REUSED}: the oldest completed job with a readable output and log "
                    "(outputs may differ: CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER)"
                )
                return job, reasons
            continue
        if reference is not None:
            if job.output != reference.output:
                chosen = REFUSED
                refusal = (
                    f"completed jobs disagree on the output: {reference.uuid} has "
                    f"{reference.output}, {job.uuid} has {job.output}"
                )
                reasons[job.uuid] = (
                    f"its output {job.output} disagrees with {reference.output}, the output "
                    f"of {reference.uuid}: no completed job is reused"
                )
            elif chosen is reference:
                reasons[job.uuid] = f"same output as {reference.uuid}, which is older"
            else:
                reasons[job.uuid] = (
                    f"same output as {reference.uuid}, whose log is not readable by you: "
                    "only the oldest completed job with an output and a log can be reused"
                )
            continue
        if job.output not in readable:
            chosen = REFUSED
            refusal = (
                f"the output {job.output} of {job.uuid}, the oldest completed job with an "
                "output and a log, is not readable by you"
            )
            reasons[job.uuid] = (
                f"its output {job.output} is not readable by you: no completed job is reused"
            )
            continue
        reference = job
        if job.log not in readable:
            reasons[job.uuid] = (
                f"its log {job.log} is not readable by you (later completed jobs must still "
                f"have its output {job.output})"
            )
            continue
        chosen = provisional = job
        reasons[job.uuid] = f"{REUSED}: the oldest completed job with a readable output and log"
    if provisional is not None and refusal is not None:
        reasons[provisional.uuid] = (
            f"not reused although its output and log are readable: {refusal}"
        )
    result: Candidate | None = chosen if isinstance(chosen, Candidate) else incomplete
    if result is not None and result.state != JobState.COMPLETE:
        reasons[result.uuid] = f"{REUSED}: your own {result.state} job" + (
            f" (no completed job is reused: {refusal})"
            if refusal
            else " (no completed job qualifies)"
        )
    return result, reasons


EXPLAIN_LIMIT = 50


def state_reason(job: Job, user: User) -> str | None:
    """Why `job`'s state keeps it out of the candidates (§3.5 item 2), or None."""
    if job.invalidated_at is not None:
        return (
            f"its output was marked bad by {job.invalidated_by_user_uuid} "
            f"({job.invalidated_reason}): it is never reused"
        )
    if job.state == JobState.COMPLETE:
        return None
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        if job.owner_uuid == user.uuid:
            return None
        return (
            f"it is another user's {job.state} job: only Complete jobs, or your own Queued "
            "or Running ones, are reused"
        )
    return (
        f"its state is {job.state}: only Complete jobs, or your own Queued or Running ones, "
        "are reused"
    )


@dataclass
class Submission:
    job: Job
    reused: bool
    explanation: dict[str, Any] | None = None

    @classmethod
    def without_reuse(cls, job: Job, *, explain: bool) -> Submission:
        """A job created with no search for an earlier one."""
        reason = {"reused": False, "reason": "find_or_create not requested"}
        return cls(job, False, reason if explain else None)


def reuse_record(
    *,
    job: Job,
    actor: Actor,
    attrs: dict[str, Any],
    filters: list[Any] | None,
    door: str,
    project_uuid: str | None,
) -> None:
    """Write down that `job` was handed back for a submission through `door` for
    `project_uuid`, with the compute it saved: the only writes on the reuse path. Nothing
    about the job itself changes when it is reused, so this row is the only trace of it (the
    operator's "reused" filter, the job's reuse events, lineage and the reuse summary)."""
    supplied = attrs.get("script_version")
    saved = savings.core_seconds(job)
    project = project_uuid or actor.user.uuid
    record = JobReuse(
        job_uuid=job.uuid,
        reused_by_user_uuid=actor.user.uuid,
        reused_by_client_uuid=actor.client_uuid,
        created_at=timezone.now(),
        supplied_script_version=supplied[:255] if isinstance(supplied, str) else None,
        filters=filters or None,
        door=door,
        project_uuid=project,
        saved_core_seconds=saved,
    )
    savings.tally(
        user_uuid=actor.user.uuid,
        project_uuid=project,
        door=door,
        hit=True,
        saved=saved,
        record=record,
    )
