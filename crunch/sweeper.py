"""A worker's own node: registration, heartbeat, and the sweeper, in the worker's main
process (a thread), so that long jobs in the pool's children cannot starve them.

- `worker_init` (before the pool forks): register this worker as a node, with its cores,
  RAM and labels (CRUNCH_WORKER_LABELS); children inherit the node's uuid and record it on
  the jobs they claim.
- `worker_ready`: every CRUNCH_WORKER_HEARTBEAT seconds, heartbeat; every
  CRUNCH_SWEEP_SECONDS, sweep (under a lock, so one sweeper acts at a time): fail jobs whose
  worker went silent, explain jobs no node can run, re-send hints nobody picked up.
- `worker_shutdown`: mark the node down.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery.signals import worker_init, worker_ready, worker_shutdown

log = logging.getLogger("crunch.sweeper")

NODE_UUID: str | None = None
_stop = threading.Event()


def _ram_mb() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _labels() -> frozenset[str]:
    raw = os.environ.get("CRUNCH_WORKER_LABELS", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


@worker_init.connect
def _register(sender: object = None, **_: object) -> None:
    global NODE_UUID
    from django.db import connections

    from jobs.services.runs import Capabilities, node_register

    hostname = getattr(sender, "hostname", None) or os.uname().nodename
    concurrency = int(getattr(sender, "concurrency", 1) or 1)
    caps = Capabilities(cores=os.cpu_count() or 1, ram_mb=_ram_mb(), labels=_labels())
    node = node_register(hostname=hostname, caps=caps, concurrency=concurrency)
    NODE_UUID = node.uuid
    log.info("registered as node %s (%s)", node.uuid, hostname)
    connections.close_all()  # children must not share the parent's connection


@worker_ready.connect
def _start(**_: object) -> None:
    threading.Thread(target=_loop, name="crunch-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _shutdown(**_: object) -> None:
    _stop.set()
    if NODE_UUID:
        from jobs.services.runs import node_down

        try:
            node_down(node_uuid=NODE_UUID)
        except Exception:
            log.warning("could not mark node %s down", NODE_UUID, exc_info=True)


def _loop() -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from jobs.services.runs import node_heartbeat, sweep

    last_sweep = 0.0
    while not _stop.wait(timeout=0 if last_sweep == 0 else settings.CRUNCH_WORKER_HEARTBEAT):
        try:
            close_old_connections()
            if NODE_UUID:
                node_heartbeat(node_uuid=NODE_UUID)
            if time.monotonic() - last_sweep >= settings.CRUNCH_SWEEP_SECONDS:
                last_sweep = time.monotonic()
                report = sweep()
                if report and (report.failed or report.resent or report.unplaceable):
                    log.info(
                        "sweep: failed %s, re-sent %s, cannot place %s",
                        report.failed,
                        report.resent,
                        report.unplaceable,
                    )
                for job_uuid in report.failed if report else []:
                    save_log(job_uuid)
        except Exception:
            # The database or broker may be away for a while; try again next beat.
            log.warning("heartbeat/sweep failed", exc_info=True)
            last_sweep = last_sweep or 1.0


def save_log(job_uuid: str) -> None:
    """Store a job's log chunks as its log collection (for jobs whose runner is gone)."""
    import datetime as dt
    import tempfile
    from pathlib import Path

    from django.conf import settings

    from crunch.client import ApiClient, ClientConfig, ClientError
    from crunch.keepcli import CommandError, put_paths
    from jobs.models import Job
    from jobs.services import runs
    from jobs.spec import what_runs

    job = Job.objects.get(uuid=job_uuid)
    token = runs.job_token_create(job=job, lifetime=dt.timedelta(minutes=10))
    try:
        client = ApiClient(ClientConfig(base_url=settings.CRUNCH_API_URL, token=token))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{job_uuid}.log.txt"
            path.write_text(runs.job_log_text(job_uuid=job_uuid))
            collection = put_paths(
                client,
                [str(path)],
                name=f"Log of job {job_uuid}: {what_runs(job)}"[:255],
                owner_uuid=job.owner_uuid,
            )
        runs.job_set_log(job_uuid=job_uuid, log_pdh=str(collection["portable_data_hash"]))
    except (ClientError, CommandError, OSError) as exc:
        log.warning("could not save the log of %s: %s", job_uuid, exc)
    finally:
        runs.job_token_revoke(token_uuid_or_secret=token)
