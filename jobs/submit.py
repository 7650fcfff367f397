"""Submitting a door-neutral job spec: create a job, or reuse an identical earlier one.

`job_submit(actor=, spec=, reuse=)` is what every front door calls with a `JobSpec`
(jobs/spec.py). The spec goes through the job write path once (validation, permissions,
refs resolved to commits, image names to image collections), which yields its `reuse_key`.
With `reuse`, candidates are the jobs with that key, and the selection rules are those of
the Arvados API (spec §3: Complete jobs whose outputs agree, else the caller's own Running
or Queued job; never a nondeterministic one), so a job is reused across doors alike. A hit
is one indexed read of the candidates' few values, one of the chosen job with the
readability of its output and log, and one statement recording the reuse; a miss takes the
key's lock, searches again, and creates.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from jobs import savings
from jobs import spec as specs
from jobs.locks import advisory_lock
from jobs.models import Job
from jobs.selection import (
    EXPLAIN_LIMIT,
    REUSED,
    Candidate,
    Submission,
    candidates,
    reuse_record,
    select_job,
    state_reason,
)
from jobs.selectors import restrict_readable
from jobs.services.jobs import SERVICE
from jobs.services.objects import Actor


def reuse_candidates(*, user: Any, key: str) -> list[Candidate]:
    """Jobs with the identity `key` that `user` may reuse, in the order of spec §3.5."""
    return candidates(Job.objects.filter(reuse_key=key), user=user)


def job_submit(
    *, actor: Actor, spec: specs.JobSpec, reuse: bool = False, explain: bool = False
) -> Submission:
    """Create the job `spec` describes, or with `reuse` hand back an identical earlier one."""
    job = SERVICE.prepare_new(actor=actor, attrs=spec.attrs())
    for name, value in spec.server_attrs().items():
        setattr(job, name, value)
    return submit_prepared(actor=actor, job=job, reuse=reuse, explain=explain)


def job_submit_attrs(
    *, actor: Actor, attrs: dict[str, Any], reuse: bool = False, explain: bool = False
) -> Submission:
    """`job_submit` for a door whose requests are already job attributes (the Arvados API's
    command jobs)."""
    job = SERVICE.prepare_new(actor=actor, attrs=attrs)
    return submit_prepared(actor=actor, job=job, reuse=reuse, explain=explain)


def submit_prepared(*, actor: Actor, job: Job, reuse: bool, explain: bool) -> Submission:
    """The second half of `job_submit`, for a job already through `prepare_new`."""
    if not reuse:
        return Submission.without_reuse(SERVICE.save_new(actor=actor, obj=job), explain=explain)
    user = actor.user
    key = job.reuse_key or ""
    if not explain:
        chosen, _ = select_job(reuse_candidates(user=user, key=key), user=user)
        if chosen is not None:
            record_hit(chosen, actor=actor, submitted=job)
            return Submission(chosen, True, None)
    # Identical concurrent submissions get one job: the second searches once the first's
    # job is committed.
    with advisory_lock(f"reuse-key\x00{key}"):
        chosen, decisions = select_job(reuse_candidates(user=user, key=key), user=user)
        explanation = (
            {
                "reused": chosen is not None,
                "reuse_key": key,
                "candidates": explain_identity(job=job, user=user, decisions=decisions),
            }
            if explain
            else None
        )
        if chosen is not None:
            record_hit(chosen, actor=actor, submitted=job)
            return Submission(chosen, True, explanation)
        created = SERVICE.save_new(actor=actor, obj=job)
        savings.record_miss(job=created, user_uuid=user.uuid)
        if explanation is not None:
            explanation["created"] = created.uuid
        return Submission(created, False, explanation)


def _program(identity: dict[str, Any]) -> Any:
    run = identity["run"]
    return run["argv"][:1] if "argv" in run else run.get("script")


def record_hit(chosen: Job, *, actor: Actor, submitted: Job) -> None:
    reuse_record(
        job=chosen,
        actor=actor,
        attrs={"script_version": submitted.script_version},
        filters=None,
        door=submitted.door,
        project_uuid=submitted.owner_uuid,
    )


def explain_identity(*, job: Job, user: Any, decisions: dict[str, str]) -> list[dict[str, Any]]:
    """Each job with the same identity, or the same command (or script) that differs in one
    part of it, with the first reason it was or was not reused; at most EXPLAIN_LIMIT."""
    mine = specs.identity_of(job)
    same = Q(reuse_key=job.reuse_key)
    if job.command is not None:
        near = Q(command__isnull=False, owner_uuid=user.uuid)
    else:
        near = Q(script=job.script, repository=job.repository)
    pool = list(Job.objects.filter(same | near).order_by("-created_at", "-id")[: EXPLAIN_LIMIT * 4])
    readable = set(
        restrict_readable(Job.objects.filter(uuid__in=[j.uuid for j in pool]), [user]).values_list(
            "uuid", flat=True
        )
    )
    explained = []
    for other in pool:
        if other.uuid not in readable:
            continue
        if other.reuse_key != job.reuse_key:
            theirs = specs.identity_of(other)
            if _program(theirs) != _program(mine):
                continue  # a different program altogether: not worth listing
            reason = "; ".join(specs.identity_differences(mine, theirs)) or "its identity differs"
            decision = "rejected"
        elif (refusal := state_reason(other, user)) is not None:
            reason, decision = refusal, "rejected"
        elif other.nondeterministic:
            reason = "it is marked nondeterministic: such jobs are never reused"
            decision = "rejected"
        else:
            reason = decisions.get(other.uuid, "not reached: an older job was reused first")
            decision = "reused" if reason.startswith(REUSED) else "passed over"
            if decision == "reused":
                reason = reason[len(REUSED) :].lstrip(": ")
        explained.append(
            {
                "uuid": other.uuid,
                "state": other.state,
                "output": other.output,
                "decision": decision,
                "reason": reason,
            }
        )
        if len(explained) >= EXPLAIN_LIMIT:
            break
    return explained
