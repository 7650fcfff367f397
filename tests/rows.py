"""Rows written straight to the database, for tests of what shows them whatever state they
are in (the admin, the log stream): jobs and their log chunks."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from jobs.models import Job, LogChunk
from jobs.services.jobs import parameters_digest


def make_job(
    owner: Any,
    *,
    state: str = "Queued",
    age: dt.timedelta = dt.timedelta(minutes=1),
    repository: str = "active/foo",
    script: str = "hash",
    parameters: dict[str, Any] | None = None,
    **extra: Any,
) -> Job:
    """A job row created `age` ago."""
    created = extra.pop("created_at", None) or timezone.now() - age
    parameters = {} if parameters is None else parameters
    return Job.objects.create(
        uuid=Job.new_uuid(),
        owner_uuid=owner.uuid,
        created_at=created,
        modified_at=created,
        repository=repository,
        script=script,
        script_version=extra.pop("script_version", "a" * 40),
        supplied_script_version=extra.pop("supplied_script_version", "main"),
        script_parameters=parameters,
        script_parameters_digest=parameters_digest(parameters),
        state=state,
        running=state == "Running",
        success={"Complete": True, "Failed": False, "Cancelled": False}.get(state),
        **extra,
    )


def add_chunks(job: Job, texts: list[str], *, start: int = 0) -> None:
    """The job's log chunks `start`, `start + 1`, ...: one for each text."""
    for offset, text in enumerate(texts):
        LogChunk.objects.create(
            job_uuid=job.uuid, seq=start + offset, text=text, created_at=timezone.now()
        )
