"""The choice among reuse candidates (`jobs.selection`) on the real database: the chosen job
is read whole together with the readability of its output and log."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Collection, Job
from jobs.selection import candidates, select_job
from tests.rows import make_collection, make_job

pytestmark = pytest.mark.django_db


def completed(reader: Any, *, outputs_of: Any = None) -> tuple[Job, Any]:
    """A completed job of `reader`'s, its output and log collections `outputs_of`'s (by
    default also `reader`'s), and its candidate."""
    output = make_collection(outputs_of or reader, {"out": b"x"})
    log = make_collection(outputs_of or reader, {"log": b"y"})
    job = make_job(
        reader,
        state="Complete",
        output=output.portable_data_hash,
        log=log.portable_data_hash,
        runtime_constraints={"min_cores_per_node": 2},
    )
    [candidate] = candidates(Job.objects.filter(pk=job.pk), user=reader)
    return job, candidate


def test_the_chosen_job_is_read_whole(active: Any) -> None:
    job, candidate = completed(active[0])
    chosen, reasons = select_job([candidate], user=active[0])
    assert chosen is not None and reasons[job.uuid].startswith("reused")
    stored = Job.objects.get(pk=job.pk)
    fields = [f.attname for f in Job._meta.concrete_fields]
    assert [getattr(chosen, f) for f in fields] == [getattr(stored, f) for f in fields]


def test_an_unreadable_or_trashed_output_is_refused(active: Any, spectator: Any) -> None:
    job, candidate = completed(active[0], outputs_of=spectator[0])
    chosen, reasons = select_job([candidate], user=active[0])
    assert chosen is None and "is not readable by you" in reasons[job.uuid]

    job, candidate = completed(active[0])
    Collection.objects.filter(portable_data_hash=job.output).update(is_trashed=True)
    chosen, reasons = select_job([candidate], user=active[0])
    assert chosen is None and "is not readable by you" in reasons[job.uuid]


def test_a_chosen_job_deleted_since_the_candidates_were_read(active: Any) -> None:
    job, candidate = completed(active[0])
    Job.objects.filter(pk=job.pk).delete()
    chosen, reasons = select_job([candidate], user=active[0])
    assert chosen is None and reasons[job.uuid].startswith("reused")
