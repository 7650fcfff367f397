"""A worker's own node: registration, heartbeat, and the sweeper, in the worker's main
process (a thread), so that long jobs in the pool's children cannot starve them.

- `worker_init` (before the pool forks): register a new node for this worker, with its
  CPUs, RAM, GPUs (CRUNCH_WORKER_GPUS) and labels (CRUNCH_WORKER_LABELS plus the automatic
  ones, see `jobs.placement`); children inherit the node's uuid and record it on the jobs
  they claim. Also consume the worker's own queue (`node_queue`). Then close the database
  connection pool, so that no pooled connection (a socket) is shared by the parent and its
  children.
- `worker_process_init` (in each child): forget a pool inherited from the parent without
  closing its connections, which are the parent's (a child forked again later, after the
  heartbeat thread opened a pool, inherits one).
- `worker_ready`: one hint per slot to its own queue, so a new node looks for work at
  once; then every CRUNCH_WORKER_HEARTBEAT seconds, heartbeat; every
  CRUNCH_SWEEP_SECONDS, sweep (under a lock, so one sweeper acts at a time): fail jobs whose
  worker went silent, explain jobs no node can run, re-send hints nobody picked up.
- `worker_shutdown`: mark the node down.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
import threading
import time

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

log = logging.getLogger("crunch.sweeper")

NODE_UUID: str | None = None
_QUEUE: str | None = None  # this worker's own queue
_SLOTS = 1
_stop = threading.Event()


def _ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def close_pools() -> None:
    """Close this process's database connections and connection pools (before a fork)."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
        close_pool = getattr(conn, "close_pool", None)
        if close_pool is not None:
            close_pool()


def node_queue(hostname: str) -> str:
    """The broker queue of the worker named `hostname`, for hints meant for it alone."""
    return "crunch.node." + re.sub(r"[^A-Za-z0-9@._-]", "_", hostname)


@worker_init.connect
def _register(sender: object = None, **_: object) -> None:
    global NODE_UUID, _QUEUE, _SLOTS
    from django.conf import settings

    from jobs.placement import node_labels
    from jobs.services.runs import node_register

    hostname = getattr(sender, "hostname", None) or os.uname().nodename
    concurrency = int(getattr(sender, "concurrency", 1) or 1)
    cpus, ram = _cpus(), _ram_bytes()
    labels = node_labels(
        configured=settings.CRUNCH_WORKER_LABELS,
        arch=platform.machine(),
        os_name=platform.system().lower(),
        hostname=socket.gethostname(),
        cpus=cpus,
        ram_bytes=ram,
        gpus=settings.CRUNCH_WORKER_GPUS,
    )
    node = node_register(
        hostname=hostname,
        cpus=cpus,
        ram_bytes=ram,
        gpus=settings.CRUNCH_WORKER_GPUS,
        labels=labels,
        slots=concurrency,
        pid=os.getpid(),
        resources=settings.CRUNCH_WORKER_RESOURCES,
    )
    NODE_UUID = node.uuid
    app = getattr(sender, "app", None)
    if app is not None:  # hints other nodes pass on to this one (crunch.tasks.run_job)
        _QUEUE, _SLOTS = node_queue(hostname), concurrency
        app.amqp.queues.select_add(_QUEUE)
    log.info("registered as node %s (%s)", node.uuid, hostname)
    close_pools()  # children must not share the parent's connections


@worker_process_init.connect
def _forget_inherited_pools(**_: object) -> None:
    # Closing would tell the server to end the parent's sessions: drop them unclosed (psycopg
    # does not close a connection another process opened when it is garbage-collected).
    try:
        from django.db.backends.postgresql.base import DatabaseWrapper
    except ImportError:  # no psycopg: no pools
        return
    pools = getattr(DatabaseWrapper, "_connection_pools", None)  # Django >= 5.1
    if isinstance(pools, dict):
        pools.clear()


@worker_ready.connect
def _start(**_: object) -> None:
    threading.Thread(target=_loop, name="crunch-heartbeat", daemon=True).start()
    if _QUEUE is not None:
        # A new node looks for work at once: queued jobs only it can run have had their
        # hints dropped by nodes that could not run them.
        from crunch.tasks import run_job

        for _slot in range(_SLOTS):
            try:
                run_job.apply_async(args=[""], queue=_QUEUE)
            except Exception:
                log.warning("could not look for work at start", exc_info=True)
                break


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

    from django.conf import settings

    from crunch.client import ApiClient, ClientConfig
    from crunch.runlog import store_log
    from jobs.models import Job
    from jobs.services import runs

    job = Job.objects.get(uuid=job_uuid)
    actor = runs.job_token_create(job=job, lifetime=dt.timedelta(minutes=10))
    assert actor.auth is not None and actor.auth.api_token is not None
    token = actor.auth.api_token
    try:
        client = ApiClient(ClientConfig(base_url=settings.CRUNCH_API_URL, token=token))
        log_pdh = store_log(client, job, actor)
        if log_pdh is not None:
            runs.job_set_log(job_uuid=job_uuid, log_pdh=log_pdh)
    finally:
        runs.job_token_revoke(token_uuid_or_secret=token)
