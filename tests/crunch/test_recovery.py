"""Losing nothing, with real processes: a worker killed with SIGKILL mid-run, Redis stopped
while jobs are queued, and priority order with one busy worker.

Each test builds its own stack (a `crunch serve`, workers, and for the production variant
PostgreSQL plus a private `redis-server` it can stop and start), with short heartbeat and
sweep intervals so recovery happens within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.crunch.stack import Stack, manage, postgres_database
from tests.git_helpers import client_env, run_git
from tests.keep_server import free_port

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {
    "hello": '#!/bin/sh\necho "$JOB_PARAMETER_NAME" > "$CRUNCH_OUTPUT/out.txt"\n',
    "sleepy": '#!/bin/sh\necho $$ > "$JOB_PARAMETER_PIDFILE"\necho sleeping\nexec sleep 300\n',
    "pause": "#!/bin/sh\nsleep 3\n",
}
FAST = {
    "CRUNCH_WORKER_HEARTBEAT": "1",
    "CRUNCH_WORKER_TTL": "4",
    "CRUNCH_SWEEP_SECONDS": "1",
    "CRUNCH_REQUEUE_SECONDS": "3",
}


class RecoveryStack(Stack):
    logs: Path
    workers: list[subprocess.Popen[bytes]]
    redis: subprocess.Popen[bytes] | None
    redis_port: int

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crunch.cli",
                "worker",
                "--concurrency",
                "1",
                "--hostname",
                f"{name}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=(self.logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.workers.append(process)
        return process

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=(self.logs / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        import redis

        while True:
            try:
                redis.Redis(port=self.redis_port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.terminate()
        self.redis.wait(timeout=20)
        self.redis = None


@pytest.fixture(
    params=["embedded", pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def recovery(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecoveryStack]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("ARVADOS_")
    }
    drop = None
    runs_dir = Path(tempfile.mkdtemp(prefix="crunch-recovery-"))
    stack = RecoveryStack(url="", token="", env=env, work_dir=runs_dir)
    stack.logs = tmp_path / "logs"
    stack.logs.mkdir()
    stack.workers, stack.redis, stack.redis_port = [], None, free_port()
    runs_dir.chmod(0o755)
    server = None
    try:
        if request.param == "services":
            if shutil.which("redis-server") is None:
                pytest.skip("needs redis-server to run a private Redis")
            env["DATABASE_URL"], drop = postgres_database(os.environ["DATABASE_URL"])
            stack.start_redis()
            env["REDIS_URL"] = f"redis://127.0.0.1:{stack.redis_port}/0"
        port = free_port()
        env.update(
            FAST,
            CRUNCH_DATA_DIR=str(tmp_path / "data"),
            CRUNCH_WORK_DIR=str(runs_dir),
            CRUNCH_DISPATCHER="crunch.dispatch.send",
            CRUNCH_API_URL=f"http://127.0.0.1:{port}",
        )
        manage(env, "migrate", "-v0")
        stack.token = manage(env, "create_api_token", "alice")
        stack.url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crunch.cli",
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=(stack.logs / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{stack.url}/arvados/v1/users/current", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (stack.logs / "serve.log").read_text()
                time.sleep(0.3)
        repo = stack.call("POST", "repositories", json={"repository": {"name": "alice/tools"}})
        stack.repo = "alice/tools"
        source = tmp_path / "source"
        genv = client_env(tmp_path / "home")
        run_git(genv, "init", "-q", "-b", "main", str(source))
        (source / "crunch_scripts").mkdir()
        for name, text in SCRIPTS.items():
            path = source / "crunch_scripts" / name
            path.write_text(text)
            path.chmod(0o755)
        run_git(genv, "add", ".", cwd=source)
        run_git(genv, "commit", "-q", "-m", "scripts", cwd=source)
        run_git(
            genv,
            "push",
            "-q",
            repo["clone_urls"][0].replace("http://", f"http://x:{stack.token}@"),
            "main",
            cwd=source,
        )
        yield stack
    finally:
        for process in [*stack.workers, *([server] if server else [])]:
            if process.poll() is None:
                process.terminate()
        for process in [*stack.workers, *([server] if server else [])]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if stack.redis is not None:
            stack.stop_redis()
        if drop is not None:
            drop()
        shutil.rmtree(runs_dir, ignore_errors=True)


def test_a_worker_killed_mid_run_leaves_no_job_running(recovery: RecoveryStack) -> None:
    first = recovery.start_worker("first")
    shared = Path(tempfile.mkdtemp(prefix="crunch-pids-"))
    shared.chmod(0o777)
    try:
        job = recovery.submit("sleepy", {"pidfile": str(shared / "pid")})
        recovery.wait(job["uuid"], states=("Running",))
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, like a lost machine
        first.wait()
        recovery.workers.remove(first)
        recovery.start_worker("second")
        failed = recovery.wait(job["uuid"], states=("Failed",), timeout=60)
        deadline = time.monotonic() + 30
        while not failed["log"]:
            assert time.monotonic() < deadline, "no log collection"
            time.sleep(0.3)
            failed = recovery.call("GET", f"jobs/{job['uuid']}")
        text = (
            recovery.file(failed["log"], f"{job['uuid']}.log.txt").decode() if failed["log"] else ""
        )
        assert "stopped heartbeating" in text, text
        # and the queue goes on
        after = recovery.wait(recovery.submit("hello", {"name": "after"})["uuid"])
        assert after["state"] == "Complete"
        assert recovery.file(after["output"], "out.txt") == b"after\n"
    finally:
        pidfile = shared / "pid"
        if pidfile.exists():
            for pid in pidfile.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        shutil.rmtree(shared, ignore_errors=True)


def test_priority_order_holds_with_one_busy_worker(recovery: RecoveryStack) -> None:
    recovery.start_worker("only")
    busy = recovery.submit("pause", {})
    recovery.wait(busy["uuid"], states=("Running",))
    low = recovery.submit("hello", {"name": "low"})
    recovery.call("PUT", f"jobs/{low['uuid']}", json={"job": {"priority": 1}})
    high = recovery.submit("hello", {"name": "high"})
    recovery.call("PUT", f"jobs/{high['uuid']}", json={"job": {"priority": 9}})
    middle = recovery.submit("hello", {"name": "middle"})
    recovery.call("PUT", f"jobs/{middle['uuid']}", json={"job": {"priority": 5}})
    done = [recovery.wait(j["uuid"]) for j in (low, high, middle)]
    assert all(j["state"] == "Complete" for j in done)
    started = sorted(done, key=lambda j: j["started_at"])
    assert [j["uuid"] for j in started] == [high["uuid"], middle["uuid"], low["uuid"]]


def test_stopping_redis_loses_no_queued_job(recovery: RecoveryStack) -> None:
    if recovery.redis is None:
        pytest.skip("the embedded stack has no Redis to stop")
    recovery.start_worker("steady")
    warm = recovery.wait(recovery.submit("hello", {"name": "warm"})["uuid"])
    assert warm["state"] == "Complete"
    recovery.stop_redis()
    queued = [recovery.submit("hello", {"name": f"while-down-{i}"}) for i in range(3)]
    assert all(j["state"] == "Queued" for j in queued)
    time.sleep(2)
    recovery.start_redis()
    for job in queued:
        done = recovery.wait(job["uuid"], timeout=120)
        assert done["state"] == "Complete", done
        name = recovery.file(done["output"], "out.txt").decode().strip()
        assert name.startswith("while-down-")
