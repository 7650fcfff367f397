"""Rows written straight to the database, for tests of what shows them whatever state they
are in (the admin, the log stream, permissions): jobs, their log chunks and collections."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from django.utils import timezone

from jobs import manifests
from jobs.models import Collection, Job, LogChunk
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


def make_collection(owner: Any, files: dict[str, bytes], *, name: str | None = None) -> Collection:
    """A collection record of `files` (its blocks are not stored: what uses it shows or
    checks the record, it does not read the data)."""
    lines = []
    for path, content in files.items():
        md5 = hashlib.md5(content).hexdigest()
        lines.append(f". {md5}+{len(content)} 0:{len(content)}:{path}\n")
    manifest = "".join(lines)
    now = timezone.now()
    return Collection.objects.create(
        uuid=Collection.new_uuid(),
        owner_uuid=owner.uuid,
        created_at=now,
        modified_at=now,
        name=name,
        manifest_text=manifest,
        portable_data_hash=manifests.portable_data_hash(manifest),
        file_count=len(files),
        file_size_total=sum(len(c) for c in files.values()),
    )
