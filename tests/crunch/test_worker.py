"""`crunch worker` is a real Celery worker process: it connects to the broker and runs tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.keep_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def api(env: dict[str, str], log: Path) -> Iterator[dict[str, str]]:
    """A `crunch serve` for the worker to reach at start-up; yields the worker's env."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crunch.cli", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield env | {"CRUNCH_API_URL": f"http://127.0.0.1:{port}"}
    finally:
        stop(proc)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crunch.cli",
            "worker",
            "--concurrency",
            "1",
            "--hostname",
            f"test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.redis
def test_worker_answers_over_redis(tmp_path):
    from crunch.celery import app

    env = os.environ | {"CRUNCH_DATA_DIR": str(tmp_path)}
    log = tmp_path / "worker.log"
    with api(env, tmp_path / "serve.log") as worker_env:
        answers_over_redis(app, start_worker(worker_env, log), log)


def answers_over_redis(app: Any, proc: subprocess.Popen, log: Path) -> None:
    try:
        deadline = time.monotonic() + 60
        replies = []
        while time.monotonic() < deadline and not replies:
            assert proc.poll() is None, log.read_text()
            replies = [
                r
                for r in app.control.ping(timeout=1.0)
                if any(name.startswith(f"test-{os.getpid()}@") for name in r)
            ]
        assert replies, log.read_text()
    finally:
        stop(proc)


def test_worker_runs_a_task_without_redis(tmp_path):
    """The `make run` mode: no Redis, a filesystem broker shared by processes."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["CRUNCH_DATA_DIR"] = str(tmp_path)
    log = tmp_path / "worker.log"
    with api(env, tmp_path / "serve.log") as worker_env:
        runs_a_task(env, start_worker(worker_env, log), log)


def runs_a_task(env: dict[str, str], proc: subprocess.Popen, log: Path) -> None:
    try:
        sender = subprocess.run(
            [
                sys.executable,
                "-c",
                "from crunch.celery import app; print(app.send_task('crunch.ping').id)",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        task_id = sender.stdout.strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if f"Task crunch.ping[{task_id}] succeeded" in text:
                break
            assert proc.poll() is None, text
            time.sleep(0.3)
        else:
            pytest.fail(f"the worker did not run the task:\n{log.read_text()}")
    finally:
        stop(proc)
