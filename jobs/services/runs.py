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
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs.models import ApiClientAuthorization, Job, JobState, LogChunk, User
from jobs.services.tokens import system_user, token_create

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


def job_claim(*, worker: str) -> Job | None:
    """Claim the best Queued, unlocked job: it becomes Running, locked by the system user.

    Returns None when there is nothing to run (another worker won every race)."""
    system = system_user()
    candidates = (
        Job.objects.filter(state=JobState.QUEUED, is_locked_by_uuid__isnull=True)
        .order_by("-priority", "created_at", "id")
        .values_list("pk", flat=True)[:CLAIM_BATCH]
    )
    for pk in candidates:
        now = timezone.now()
        claimed = Job.objects.filter(
            pk=pk, state=JobState.QUEUED, is_locked_by_uuid__isnull=True
        ).update(
            state=JobState.RUNNING,
            running=True,
            success=None,
            started_at=now,
            is_locked_by_uuid=system.uuid,
            modified_at=now,
            modified_by_user_uuid=system.uuid,
        )
        if claimed == 1:
            job = Job.objects.get(pk=pk)
            log.info("%s claimed %s", worker, job.uuid)
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
    return LogChunk.objects.create(job_uuid=job_uuid, seq=seq, text=text, created_at=timezone.now())


def job_log_text(*, job_uuid: str) -> str:
    return "".join(
        LogChunk.objects.filter(job_uuid=job_uuid).order_by("seq").values_list("text", flat=True)
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
    """Record the end of a run: Complete or Failed with its output and log. A job cancelled
    meanwhile stays Cancelled and keeps its (partial) log; it gets `finished_at`."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(uuid=job_uuid)
        now = timezone.now()
        job.log = log_pdh or job.log
        if tasks_summary is not None:
            job.tasks_summary = tasks_summary
        if job.state == JobState.RUNNING:
            job.state = JobState.COMPLETE if success else JobState.FAILED
            job.success = success
            job.output = output if success else job.output
            job.running = False
            job.finished_at = job.finished_at or now
        elif job.state == JobState.CANCELLED:
            job.finished_at = job.finished_at or now
        job.modified_at = now
        job.modified_by_user_uuid = system_user().uuid
        job.save()
    return job
