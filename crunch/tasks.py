"""Celery tasks: the interface between the broker and `jobs` services.

Tasks take string ids only and reload rows; business rules stay in `jobs`.
"""

from __future__ import annotations

import logging
import socket

from crunch.celery import app

log = logging.getLogger("crunch.tasks")


@app.task(name="crunch.ping")
def ping() -> str:
    """Liveness check: answers with the worker's host name."""
    return socket.gethostname()


# How often one hint may be passed on from node to node (a bound, should nodes come and go).
MAX_FORWARDS = 3


@app.task(name="crunch.run_job")
def run_job(job_uuid: str, forwarded: int = 0) -> str | None:
    """A hint that `job_uuid` is queued: claim the best queued job this node can run, and
    run it.

    The claimed job may be another one (a higher priority came first); the hint for the
    rest stays in the broker, and each hint runs at most one job. A node that can run none
    passes the hint to the queue of a live node that can run a job it cannot (its own
    queue, `crunch.node.<name>`), rather than wait for the sweeper to re-send hints."""
    from crunch import sweeper
    from crunch.runner import Runner
    from jobs.services.runs import job_claim

    job = job_claim(worker=socket.gethostname(), node_uuid=sweeper.NODE_UUID)
    if job is None:
        if forwarded < MAX_FORWARDS:
            forward_hint(job_uuid, forwarded=forwarded)
        return None
    Runner(job).run()
    return job.uuid


def forward_hint(job_uuid: str, *, forwarded: int) -> None:
    """Pass a hint this node cannot use to the queue of a node that can run a job this one
    cannot (`jobs.services.runs.hint_target`). Only on Redis: a pool process cannot publish
    on the filesystem broker of `make run` (one machine), where the sweeper re-sends hints.
    A hint that cannot be passed on is no loss either: the sweeper re-sends it later."""
    from django.conf import settings

    from crunch import sweeper
    from jobs.services.runs import hint_target

    if not settings.REDIS_URL:
        return
    target = hint_target(job_uuid=job_uuid, node_uuid=sweeper.NODE_UUID)
    if target is None:
        return
    uuid, hostname = target
    try:
        run_job.apply_async(
            args=[uuid], kwargs={"forwarded": forwarded + 1}, queue=sweeper.node_queue(hostname)
        )
    except Exception:
        log.warning("could not pass the hint for %s on to %s", uuid, hostname, exc_info=True)
