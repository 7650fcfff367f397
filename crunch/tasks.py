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
