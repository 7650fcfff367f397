"""What operators scrape (`GET /metrics`, api/metrics.py): the metrics processes record, and
the ones read from the database when scraped.

Recorded where they happen, in whichever process that is, through `prometheus_client` in
multiprocess mode (each process writes its own files under PROMETHEUS_MULTIPROC_DIR, which
settings point at CRUNCH_DATA_DIR/metrics; the scrape adds them up):

- `crunch_job_queue_wait_seconds` (histogram, by door): created -> Running, when a job starts;
- `crunch_job_run_seconds` (histogram, by door and final state): Running -> the end;
- `crunch_log_followers` (gauge, summed over live processes): open log streams.

Read from the database at each scrape (`DatabaseCollector`), so that they are right whatever
process did the work: jobs by state and door, live nodes and their slots, and reuse hits,
misses and core-seconds saved (from the reuse tallies, jobs/savings.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.db.models import Count, Sum
from prometheus_client import Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from jobs.models import Job, JobState, ReuseTally
from jobs.placement import live_node_views

# Seconds: from a trivial job's few hundred milliseconds to a day.
BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))

QUEUE_WAIT = Histogram(
    "crunch_job_queue_wait_seconds",
    "Time from a job's creation to its start",
    ["door"],
    buckets=BUCKETS,
)
RUN_TIME = Histogram(
    "crunch_job_run_seconds",
    "Time from a job's start to its end",
    ["door", "state"],
    buckets=BUCKETS,
)
LOG_FOLLOWERS = Gauge(
    "crunch_log_followers",
    "Open log streams (log_tail_follow and the doors' log streams)",
    multiprocess_mode="livesum",
)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def observe_transition(job: Job, to: str) -> None:
    """Record a job's state change (called by jobs.transitions after each edge)."""
    door = job.door or "arvados"
    if to == JobState.RUNNING:
        wait = _seconds(job.created_at, job.started_at)
        if wait is not None:
            QUEUE_WAIT.labels(door=door).observe(wait)
    elif to in (JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED):
        run = _seconds(job.started_at, job.finished_at)
        if run is not None:
            RUN_TIME.labels(door=door, state=to).observe(run)


class DatabaseCollector:
    """The metrics that the database knows, read at scrape time."""

    def describe(self) -> list[Metric]:
        return []  # read at collect time only (no query when registered)

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("crunch_jobs", "Jobs by state and door", labels=["state", "door"])
        for state, door, n in (
            Job.objects.values("state", "door").annotate(n=Count("id")).order_by()
        ).values_list("state", "door", "n"):
            jobs.add_metric([state or "", door or ""], n)
        yield jobs

        views = live_node_views()
        yield GaugeMetricFamily("crunch_nodes_live", "Workers heard from recently", len(views))
        yield GaugeMetricFamily(
            "crunch_node_slots", "Job slots on live workers", sum(v.slots for v in views)
        )

        hits = CounterMetricFamily(
            "crunch_reuse_hits", "Submissions handed an earlier job", labels=["door"]
        )
        misses = CounterMetricFamily(
            "crunch_reuse_misses", "Submissions that asked for reuse and ran", labels=["door"]
        )
        saved = CounterMetricFamily(
            "crunch_reuse_saved_core_seconds",
            "Core-seconds of compute that reuse avoided",
            labels=["door"],
        )
        for door, hit, count, seconds in (
            ReuseTally.objects.values("door", "hit")
            .annotate(n=Sum("count"), s=Sum("saved_core_seconds"))
            .order_by()
            .values_list("door", "hit", "n", "s")
        ):
            if hit:
                hits.add_metric([door], count or 0)
                saved.add_metric([door], seconds or 0.0)
            else:
                misses.add_metric([door], count or 0)
        yield hits
        yield misses
        yield saved
