"""The Celery application. Messages carry only job uuids; the database row is the truth.

Broker: Redis (REDIS_URL) in production; without it, Kombu's filesystem transport under
CRUNCH_DATA_DIR/broker, which needs no server and works across processes (for `make run`).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")

app = Celery("crunch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("crunch.tasks", "crunch.sweeper")


@app.on_configure.connect
def _configure(sender: Celery, **_: object) -> None:
    from django.conf import settings

    if not settings.REDIS_URL:
        folder = settings.CELERY_BROKER_FILESYSTEM_DIR
        for sub in ("in", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        sender.conf.broker_transport_options = {
            "data_folder_in": str(folder / "in"),
            "data_folder_out": str(folder / "in"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
            # A directory listing is cheap: look often, so a job starts within 0.1 s of
            # being queued (the default second also slowed a worker's shutdown).
            "polling_interval": 0.1,
        }
    sender.conf.task_acks_late = True
    sender.conf.worker_prefetch_multiplier = 1
    sender.conf.task_reject_on_worker_lost = True
    sender.conf.broker_connection_retry_on_startup = True


# Worker-process signal handlers (node registration, heartbeat, sweeper): connected when the
# app loads, before the worker sends `worker_init`.
import crunch.sweeper  # noqa: E402, F401
