"""Settings for the workers `bench/dispatch.py` starts: the product's, plus a result backend
that only the no-op task uses, and opt-in what-if experiments.

The baseline of that benchmark is a round trip of `crunch.ping` (send, run on a worker, answer
back), which needs a result backend; the product configures none. Here the workers get Redis
(`CRUNCH_BENCH_RESULT_BACKEND`) as their backend, and `crunch.run_job` keeps a disabled one,
so a job's run is exactly the product's: nothing is stored for it, no extra Redis write sits
between one job and the next. The benchmark checks that no run_job result was stored.

`CRUNCH_BENCH_WHAT_IF` (comma-separated, default empty: the product as it is) measures a
suggested change before anyone makes it, in these worker processes only:
- `db-reuse`: `CELERY_DB_REUSE_MAX`, so Celery's Django fix-up stops closing the database
  connection (and, with Django's pool under prefork, the whole pool) around every task;
- `small-buffers`: `crunch.keepcli.BLOCK_SIZE` = 1 MiB, a stand-in for sizing the upload
  buffer to the data instead of allocating 64 MiB per put (same bytes stored for small files);
- `fast-poll`: the runner's wait loop sleeps at most 5 ms instead of 50 ms per turn (the
  cancel check still runs once a second).
Nothing in the product imports this module.
"""

import os

from celery.signals import worker_init, worker_process_init

from api.settings import *  # noqa: F403

CELERY_RESULT_BACKEND = os.environ["CRUNCH_BENCH_RESULT_BACKEND"]

WHAT_IF = frozenset(filter(None, os.environ.get("CRUNCH_BENCH_WHAT_IF", "").split(",")))
_KNOWN = {"db-reuse", "small-buffers", "fast-poll"}
if WHAT_IF - _KNOWN:
    raise ValueError(f"CRUNCH_BENCH_WHAT_IF: unknown {sorted(WHAT_IF - _KNOWN)}")
if "db-reuse" in WHAT_IF:
    CELERY_DB_REUSE_MAX = 1_000_000


@worker_init.connect
def _only_ping_stores_results(sender: object, **_: object) -> None:
    # Runs in the worker's main process before the pool forks; the children build their task
    # tracers (which capture `task.backend`) after that.
    from celery.backends.base import DisabledBackend

    app = sender.app  # type: ignore[attr-defined]
    app.tasks["crunch.run_job"].backend = DisabledBackend(app)


@worker_process_init.connect
def _what_if(**_: object) -> None:
    # In each pool child, after Celery's Django fix-up has set Django up.
    if "small-buffers" in WHAT_IF:
        import crunch.keepcli as keepcli

        keepcli.BLOCK_SIZE = 1 << 20
    if "fast-poll" in WHAT_IF:
        import time
        import types

        import crunch.runner as runner

        runner.time = types.SimpleNamespace(  # type: ignore[assignment]
            monotonic=time.monotonic, sleep=lambda seconds: time.sleep(min(seconds, 0.005))
        )
