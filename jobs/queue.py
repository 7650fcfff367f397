"""The queue (selectors): queued jobs in the order workers claim them, and a job's place in it.

Run order: the highest priority first, then the oldest; the row id settles jobs created
within the same microsecond. Every reader of the queue uses it: the claim
(`jobs.services.runs.job_claim`, whose query is written out with `rowsql.order_sql`), the
sweeper, the admin queue page, a followed log's status
line (`jobs.follow.queue_status`) and the `jobs/queue` API. The index `jobs_queue_order`
serves it.

A position counts the queued jobs ahead of a job in that order (0: the next one to run).
How it is shown is each reader's choice: the admin numbers its rows from 1, the log stream
says how many jobs are ahead.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Q, QuerySet

from jobs.models import Job, JobState

RUN_ORDER = ("-priority", "created_at", "id")


def queued_jobs(queryset: QuerySet[Job] | None = None) -> QuerySet[Job]:
    """The queued jobs (of `queryset`, by default all jobs) in run order."""
    base = Job.objects.all() if queryset is None else queryset
    return base.filter(state=JobState.QUEUED).order_by(*RUN_ORDER)


def ahead_of(*, priority: int, created_at: dt.datetime, pk: int) -> Q:
    """The condition of the jobs that come before (priority, created_at, pk) in run order."""
    return (
        Q(priority__gt=priority)
        | Q(priority=priority, created_at__lt=created_at)
        | Q(priority=priority, created_at=created_at, id__lt=pk)
    )


def position(*, priority: int, created_at: dt.datetime, pk: int) -> int:
    """How many queued jobs come before this one in run order (0: it runs next)."""
    return (
        queued_jobs()
        .filter(ahead_of(priority=priority, created_at=created_at, pk=pk))
        .order_by()
        .count()
    )
