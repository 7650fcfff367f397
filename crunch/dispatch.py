"""The dispatcher named by CRUNCH_DISPATCHER: a hint to the workers that a job is queued."""

from __future__ import annotations


def send(job_uuid: str) -> None:
    from crunch.tasks import run_job

    run_job.apply_async(args=[job_uuid])
