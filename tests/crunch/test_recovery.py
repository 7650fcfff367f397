"""Losing nothing, with real processes: a worker killed with SIGKILL mid-run, Redis stopped
while jobs are queued, and priority order with one busy worker.

Each test builds its own stack (a `crunch serve`, workers, and for the production variant
PostgreSQL plus a private `redis-server` it can stop and start), with short heartbeat and
sweep intervals so recovery happens within seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.crunch.stack import STACK_KINDS, Stack, manage, running_stack
from tests.keep_server import free_port

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {
    "hello": '#!/bin/sh\necho "$JOB_PARAMETER_NAME" > "$CRUNCH_OUTPUT/out.txt"\n',
    "sleepy": '#!/bin/sh\necho $$ > "$JOB_PARAMETER_PIDFILE"\necho sleeping\nexec sleep 300\n',
    "pause": "#!/bin/sh\nsleep 3\n",
    "drip": '#!/bin/sh\nfor i in $(seq 0 79); do echo "line $i"; sleep 0.05; done\n',
}
FAST = {
    "CRUNCH_WORKER_HEARTBEAT": "1",
    "CRUNCH_WORKER_TTL": "4",
    "CRUNCH_SWEEP_SECONDS": "1",
    "CRUNCH_REQUEUE_SECONDS": "3",
}


class PrivateRedis:
    """A `redis-server` of the test's own, which it can stop and start."""

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
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
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@dataclass
class Recovery:
    stack: Stack
    redis: PrivateRedis | None


@pytest.fixture(params=STACK_KINDS)
def recovery(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Recovery]:
    """A stack with fast heartbeats and sweeps and no worker yet; the production kind gets a
    private Redis."""
    with recovery_stack(request.param, tmp_path) as made:
        yield made


@pytest.fixture(params=[STACK_KINDS[1]])
def with_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Recovery]:
    """The production kind only, with its private Redis (the embedded one has none)."""
    with recovery_stack(request.param, tmp_path) as made:
        yield made


@contextmanager
def recovery_stack(kind: str, tmp_path: Path) -> Iterator[Recovery]:
    redis = None
    extra = dict(FAST)
    if kind == "services":
        if shutil.which("redis-server") is None:
            pytest.skip("needs redis-server to run a private Redis")
        redis = PrivateRedis(tmp_path)
        redis.start()
        extra["REDIS_URL"] = redis.url
    try:
        with running_stack(kind, tmp_path, SCRIPTS, extra_env=extra, workers=0) as stack:
            yield Recovery(stack, redis)
    finally:
        if redis is not None:
            redis.stop()


NODE_NOTE = re.compile(r" crunch: on node (\S+) \(([a-z0-9]{5}-7ekkf-[a-z0-9]{15})\)\n")


def test_a_worker_killed_and_restarted_on_the_same_host_fails_its_lost_job(
    recovery: Recovery,
) -> None:
    """As systemd would: SIGKILL to the worker's control group (the worker, its pool and the
    script), then a new worker under the same name. The new worker is a new node; the old
    node goes silent, so its job fails with the reason, and the queue goes on."""
    stack = recovery.stack
    admin = manage(stack.env, "create_api_token", "root", "--admin")
    first = stack.start_worker("first")
    shared = Path(tempfile.mkdtemp(prefix="crunch-pids-"))
    shared.chmod(0o777)
    pidfile = shared / "pid"
    try:
        job = stack.submit("sleepy", {"pidfile": str(pidfile)})
        stack.wait(job["uuid"], states=("Running",))
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "the script did not start"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool
        kill_pids(pidfile)  # and the script, in its own process group
        first.wait()
        stack.processes.remove(first)
        stack.start_worker("first")
        failed = stack.wait(job["uuid"], states=("Failed",), timeout=60)
        text = stack.log_text(stack.wait_for_log(failed["uuid"]))
        assert "stopped heartbeating" in text, text
        (lost,) = stack.call("GET", f"jobs/{job['uuid']}/executions")["items"]
        assert (lost["state"], lost["exit_code"]) == ("Lost", None), lost
        assert "first@" in lost["hostname"] and lost["finished_at"]
        assert "stopped heartbeating" in lost["reason"], lost
        old_name, old_node = NODE_NOTE.findall(text)[0]
        assert f"its worker {old_name} stopped heartbeating" in text
        # and the queue goes on, on the new worker's node
        after = stack.wait(stack.submit("hello", {"name": "after"})["uuid"])
        after_log = stack.log_text(stack.wait_for_log(after["uuid"]))
        assert after["state"] == "Complete", after_log
        assert stack.file(after["output"], "out.txt") == b"after\n"
        new_name, new_node = NODE_NOTE.findall(after_log)[0]
        assert (new_name, new_node != old_node) == (old_name, True)
        # one host name, two nodes; the silent one is down
        nodes = requests.get(
            f"{stack.url}/arvados/v1/nodes",
            params={"filters": f'[["hostname","=","{old_name}"]]', "order": "created_at"},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        ).json()["items"]
        assert [n["uuid"] for n in nodes] == [old_node, new_node]
        assert [n["info"]["state"] for n in nodes] == ["down", "up"]
        assert (
            "server closed the connection unexpectedly"
            not in (stack.logs / "first.log").read_text()
        )
    finally:
        kill_pids(pidfile)
        shutil.rmtree(shared, ignore_errors=True)


def kill_pids(pidfile: Path) -> None:
    if pidfile.exists():
        for pid in pidfile.read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_priority_order_holds_with_one_busy_worker(recovery: Recovery) -> None:
    stack = recovery.stack
    stack.start_worker("only")
    busy = stack.submit("pause", {})
    stack.wait(busy["uuid"], states=("Running",))
    low = stack.submit("hello", {"name": "low"})
    stack.call("PUT", f"jobs/{low['uuid']}", json={"job": {"priority": 1}})
    high = stack.submit("hello", {"name": "high"})
    stack.call("PUT", f"jobs/{high['uuid']}", json={"job": {"priority": 9}})
    middle = stack.submit("hello", {"name": "middle"})
    stack.call("PUT", f"jobs/{middle['uuid']}", json={"job": {"priority": 5}})
    done = [stack.wait(j["uuid"]) for j in (low, high, middle)]
    assert all(j["state"] == "Complete" for j in done)
    started = sorted(done, key=lambda j: j["started_at"])
    assert [j["uuid"] for j in started] == [high["uuid"], middle["uuid"], low["uuid"]]


def test_stopping_redis_loses_no_queued_job_and_no_followed_line(with_redis: Recovery) -> None:
    """Jobs queued while Redis is down run once it is back; a follower of a running job gets
    every line meanwhile (Redis only wakes followers: without it they poll the log)."""
    stack, redis = with_redis.stack, with_redis.redis
    assert redis is not None
    stack.start_worker("steady")
    warm = stack.wait(stack.submit("hello", {"name": "warm"})["uuid"])
    assert warm["state"] == "Complete"
    drip = stack.submit("drip", {})
    stack.wait(drip["uuid"], states=("Running",))
    response = requests.get(
        f"{stack.url}/arvados/v1/jobs/{drip['uuid']}/log_tail_follow?since=0",
        headers={"Authorization": f"Bearer {stack.token}", "Accept": "text/plain"},
        stream=True,
        timeout=120,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(response.iter_lines(decode_unicode=True)), daemon=True
    )
    reader.start()
    time.sleep(0.5)
    redis.stop()
    queued = [stack.submit("hello", {"name": f"while-down-{i}"}) for i in range(3)]
    assert all(j["state"] == "Queued" for j in queued)
    time.sleep(2)
    redis.start()
    for job in queued:
        done = stack.wait(job["uuid"], timeout=120)
        assert done["state"] == "Complete", done
        name = stack.file(done["output"], "out.txt").decode().strip()
        assert name.startswith("while-down-")
    reader.join(120)
    assert not reader.is_alive()
    numbered = [int(line.split()[1]) for line in lines if line.startswith("line ")]
    assert numbered == list(range(80))
    assert f"job {drip['uuid']} Complete finished_at" in lines[-1], lines[-3:]
