"""Celery tasks: the interface between the broker and `jobs` services.

Tasks take string ids only and reload rows; business rules stay in `jobs`.
"""

from __future__ import annotations

import socket

from crunch.celery import app


@app.task(name="crunch.ping")
def ping() -> str:
    """Liveness check: answers with the worker's host name."""
    return socket.gethostname()


@app.task(name="crunch.run_job")
def run_job(job_uuid: str) -> str | None:
    """A hint that `job_uuid` is queued: claim the best queued job and run it.

    The claimed job may be another one (a higher priority came first); the hint for the
    rest stays in the broker, and each hint runs at most one job."""
    from crunch import sweeper
    from crunch.runner import Runner
    from jobs.services.runs import job_claim

    job = job_claim(worker=socket.gethostname(), node_uuid=sweeper.NODE_UUID)
    if job is None:
        return None
    Runner(job).run()
    return job.uuid
