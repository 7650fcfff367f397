"""Jobs run for real: a `crunch serve` and a `crunch worker` process sharing a fresh database,
scripts pushed over git HTTP, results read back through the API.

Two stacks: the embedded one (SQLite, a filesystem broker: what `make run` uses) and the
production one (PostgreSQL and Redis), which needs those servers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.git_helpers import client_env, run_git
from tests.keep_server import free_port

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {
    "hello": """#!/bin/sh
echo "hello from $JOB_SCRIPT, name=$JOB_PARAMETER_NAME"
echo "to stderr" >&2
printf 'hello %s\\n' "$JOB_PARAMETER_NAME" > "$CRUNCH_OUTPUT/out.txt"
mkdir -p "$CRUNCH_OUTPUT/sub" && echo "$JOB_PARAMETERS" > "$CRUNCH_OUTPUT/sub/params.json"
""",
    "fail": """#!/bin/sh
echo "about to fail"
echo "something went wrong: $JOB_PARAMETER_WHY" >&2
exit 3
""",
    "random": """#!/bin/sh
head -c 16 /dev/urandom | od -An -tx1 > "$CRUNCH_OUTPUT/random.txt"
""",
    "sleepy": """#!/bin/sh
echo $$ > "$JOB_PARAMETER_PIDFILE"
sleep 300 &
echo $! >> "$JOB_PARAMETER_PIDFILE"
echo "sleeping"
wait
""",
    "reader": """#!/bin/sh
cat "$TASK_KEEPMOUNT/$JOB_PARAMETER_INPUT/out.txt" > "$CRUNCH_OUTPUT/copy.txt"
touch "$TASK_KEEPMOUNT/$JOB_PARAMETER_INPUT/new" 2>/dev/null && echo writable || echo read-only
""",
}


@dataclass
class Stack:
    url: str
    token: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    repo: str = ""

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = requests.request(
            method,
            f"{self.url}/arvados/v1/{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            **kw,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, script: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        job = {
            "repository": self.repo,
            "script": script,
            "script_version": "main",
            "script_parameters": params,
        }
        return self.call("POST", "jobs", json={"job": job, **extra})

    def wait(
        self,
        uuid: str,
        states: tuple[str, ...] = ("Complete", "Failed", "Cancelled"),
        timeout: float = 90,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"jobs/{uuid}")
            if job["state"] in states:
                return job
            for process in self.processes:
                assert process.poll() is None, "a Crunch process died"
            assert time.monotonic() < deadline, f"{uuid} still {job['state']}"
            time.sleep(0.2)

    def file(self, pdh: str, path: str) -> bytes:
        response = requests.get(
            f"{self.url}/arvados/v1/collections/{pdh}/files/{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.content


def _manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()


def _postgres_database(base_url: str) -> tuple[str, Any]:
    """A fresh database next to the one DATABASE_URL names; returns its URL and a dropper."""
    import psycopg

    parts = urlsplit(base_url)
    name = f"crunch_runs_{secrets.token_hex(4)}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


@pytest.fixture(
    scope="module",
    params=["embedded", pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])],
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"stack-{request.param}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("ARVADOS_")
    }
    drop = None
    if request.param == "services":
        from django.conf import settings

        base = os.environ["DATABASE_URL"] if settings.CRUNCH_DB_IS_POSTGRES else ""
        env["DATABASE_URL"], drop = _postgres_database(base)
        redis_url = urlunsplit(urlsplit(os.environ["REDIS_URL"])._replace(path="/7"))
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        env["REDIS_URL"] = redis_url
    port = free_port()
    # Scripts may run as an unprivileged user: their directories must be reachable by it.
    runs_dir = Path(tempfile.mkdtemp(prefix="crunch-runs-"))
    runs_dir.chmod(0o755)
    env.update(
        CRUNCH_DATA_DIR=str(work / "data"),
        CRUNCH_WORK_DIR=str(runs_dir),
        CRUNCH_DISPATCHER="crunch.dispatch.send",
        CRUNCH_API_URL=f"http://127.0.0.1:{port}",
    )
    _manage(env, "migrate", "-v0")
    token = _manage(env, "create_api_token", "alice")
    logs = work / "logs"
    logs.mkdir()
    stack = Stack(url=f"http://127.0.0.1:{port}", token=token, env=env)
    stack.processes.append(
        subprocess.Popen(
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
            stdout=(logs / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    stack.processes.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crunch.cli",
                "worker",
                "--concurrency",
                "1",
                "--hostname",
                f"runs-{request.param}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=(logs / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(
                    f"{stack.url}/arvados/v1/users/current",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (logs / "serve.log").read_text()
                time.sleep(0.3)
        repo = stack.call("POST", "repositories", json={"repository": {"name": "alice/tools"}})
        stack.repo = "alice/tools"
        source = work / "source"
        genv = client_env(work / "home")
        run_git(genv, "init", "-q", "-b", "main", str(source))
        (source / "crunch_scripts").mkdir()
        for name, text in SCRIPTS.items():
            path = source / "crunch_scripts" / name
            path.write_text(text)
            path.chmod(0o755)
        run_git(genv, "add", ".", cwd=source)
        run_git(genv, "commit", "-q", "-m", "scripts", cwd=source)
        push_url = repo["clone_urls"][0].replace("http://", f"http://x:{token}@")
        run_git(genv, "push", "-q", push_url, "main", cwd=source)
        yield stack
    finally:
        for process in stack.processes:
            process.send_signal(signal.SIGTERM)
        for process in stack.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if drop is not None:
            drop()
        shutil.rmtree(runs_dir, ignore_errors=True)


def test_a_job_runs_and_its_output_is_the_right_bytes(stack: Stack) -> None:
    job = stack.wait(stack.submit("hello", {"name": "world", "n": 3})["uuid"])
    assert job["state"] == "Complete", job
    assert (job["success"], job["running"]) == (True, False)
    assert job["started_at"] and job["finished_at"] and job["output"] and job["log"]
    assert stack.file(job["output"], "out.txt") == b"hello world\n"
    assert json.loads(stack.file(job["output"], "sub/params.json")) == {"name": "world", "n": 3}
    log_text = stack.file(job["log"], f"{job['uuid']}.log.txt").decode()
    assert "hello from hello, name=world" in log_text and "to stderr" in log_text
    # the same submission with find_or_create is reused
    again = stack.submit("hello", {"name": "world", "n": 3}, find_or_create=True)
    assert again["uuid"] == job["uuid"]


def test_a_failing_script_ends_failed_with_its_stderr(stack: Stack) -> None:
    job = stack.wait(stack.submit("fail", {"why": "bad input"})["uuid"])
    assert job["state"] == "Failed" and job["success"] is False and job["output"] is None
    log_text = stack.file(job["log"], f"{job['uuid']}.log.txt").decode()
    assert "something went wrong: bad input" in log_text
    assert "the script failed with exit code 3" in log_text


def test_disagreeing_outputs_are_not_reused(stack: Stack) -> None:
    first = stack.wait(stack.submit("random", {})["uuid"])
    second = stack.wait(stack.submit("random", {})["uuid"])
    assert first["output"] != second["output"]
    third = stack.submit("random", {}, find_or_create=True)
    assert third["uuid"] not in (first["uuid"], second["uuid"])
    stack.wait(third["uuid"])


def test_inputs_are_mounted_read_only_by_pdh(stack: Stack) -> None:
    made = stack.wait(stack.submit("hello", {"name": "input"})["uuid"])
    job = stack.wait(stack.submit("reader", {"input": made["output"]})["uuid"])
    assert job["state"] == "Complete"
    assert stack.file(job["output"], "copy.txt") == b"hello input\n"
    assert "read-only" in stack.file(job["log"], f"{job['uuid']}.log.txt").decode()


def test_cancel_kills_the_process_group(stack: Stack) -> None:
    shared = Path(tempfile.mkdtemp(prefix="crunch-pids-"))
    shared.chmod(0o777)  # the script may run as an unprivileged user
    pidfile = shared / "pids"
    job = stack.submit("sleepy", {"pidfile": str(pidfile)})
    stack.wait(job["uuid"], states=("Running",))
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and len(pidfile.read_text().split()) == 2):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pids = [int(p) for p in pidfile.read_text().split()]
    stack.call("POST", f"jobs/{job['uuid']}/cancel")
    started = time.monotonic()
    done = stack.wait(job["uuid"], states=("Cancelled",))
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() - started < 5, "the script outlived its cancellation by 5 s"
        time.sleep(0.1)
    # the partial log is kept
    deadline = time.monotonic() + 30
    while done["log"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
        done = stack.call("GET", f"jobs/{job['uuid']}")
    assert "sleeping" in stack.file(done["log"], f"{job['uuid']}.log.txt").decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its parent is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
