"""`jobs.queue`: one run order for every reader of the queue. The claim takes jobs in the
order `queued_jobs` lists them; a job's position counts the jobs listed before it; the
`jobs/queue` API, a followed log's status line and the admin queue page agree with it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from jobs import follow, queue
from jobs.admin import queue_snapshot
from jobs.models import Job
from jobs.services import runs
from tests.rows import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def jobs(active: tuple[Any, str]) -> list[Job]:
    """Queued jobs whose run order needs every term: priority, age, then the row id (three
    created in the same microsecond); and jobs that are not queued."""
    owner = active[0]
    same = timezone.now() - dt.timedelta(minutes=5)
    made = [
        make_job(owner, priority=1, created_at=same),
        make_job(owner, priority=1, age=dt.timedelta(minutes=9)),
        make_job(owner, priority=1, created_at=same),
        make_job(owner, priority=5, age=dt.timedelta(minutes=1)),
        make_job(owner, priority=1, created_at=same),
        make_job(owner, priority=0, age=dt.timedelta(hours=1)),
    ]
    make_job(owner, state="Running", priority=9)
    make_job(owner, state="Complete", priority=9)
    by_pk = sorted(made[i].pk for i in (0, 2, 4))
    expected = [made[3], made[1], *(Job.objects.get(pk=pk) for pk in by_pk), made[5]]
    return expected


def test_queued_jobs_are_in_run_order(jobs: list[Job]) -> None:
    assert [j.uuid for j in queue.queued_jobs()] == [j.uuid for j in jobs]


def test_position_counts_the_jobs_ahead(jobs: list[Job]) -> None:
    for index, job in enumerate(jobs):
        where = queue.position(priority=job.priority, created_at=job.created_at, pk=job.pk)
        assert where == index
        assert follow.queue_status(follow.JobView.of(job)).position == index  # from 0
        assert follow.queue_status(follow.JobView.of(job)).size == len(jobs)


def test_the_api_and_the_admin_list_the_queue_in_run_order(
    jobs: list[Job], api: Any, active: tuple[Any, str]
) -> None:
    listed = api.ok("GET", "jobs/queue", token=active[1])["items"]
    assert [j["uuid"] for j in listed] == [j.uuid for j in jobs]
    assert api.ok("GET", "jobs/queue_size", token=active[1]) == {"queue_size": len(jobs)}
    rows = queue_snapshot(timezone.now())["queued_rows"]
    assert [(r.position, r.job.uuid) for r in rows] == [
        (n, j.uuid)
        for n, j in enumerate(jobs, start=1)  # the admin numbers from 1
    ]


def test_workers_claim_in_run_order(jobs: list[Job]) -> None:
    claimed = [runs.job_claim(worker="w") for _ in jobs]
    assert [j.uuid if j else None for j in claimed] == [j.uuid for j in jobs]
    assert runs.job_claim(worker="w") is None
    assert not queue.queued_jobs().exists()
