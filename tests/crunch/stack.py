"""A real Crunch for end-to-end tests: a `crunch serve` and a `crunch worker` process sharing a
fresh database, with scripts pushed over git HTTP to the hosted repository `alice/tools`.

Two kinds: the embedded stack (SQLite, a filesystem broker: what `make run` uses) and the
production one (PostgreSQL and Redis), which needs those servers. Test modules make a
module-scoped fixture of `running_stack()` parametrized by `STACK_KINDS`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.git_helpers import client_env, run_git
from tests.keep_server import free_port

ROOT = Path(__file__).resolve().parents[2]

STACK_KINDS = [
    "embedded",
    pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@dataclass
class Stack:
    url: str
    token: str
    env: dict[str, str]
    work_dir: Path  # CRUNCH_WORK_DIR: the worker's runs, one directory per job uuid
    logs: Path  # the processes' output, one file each
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    repo: str = ""

    def start_worker(
        self, name: str, env: Mapping[str, str | None] | None = None
    ) -> subprocess.Popen[bytes]:
        """One more `crunch worker` (concurrency 1) in its own session, so that a test can
        kill it with everything it started, like a lost machine. `env` changes the stack's
        environment for it (None removes a variable). Its output is appended to
        `logs/<name>.log`."""
        worker_env = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                worker_env.pop(key, None)
            else:
                worker_env[key] = value
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
            env=worker_env,
            start_new_session=True,
            stdout=(self.logs / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

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

    def reader_of(self, project_uuid: str, username: str = "reader") -> str:
        """A token of another user, `username`, who may only read `project_uuid`."""
        token = manage(self.env, "create_api_token", username)
        user = requests.get(
            f"{self.url}/arvados/v1/users/current",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
        link = {
            "link_class": "permission",
            "name": "can_read",
            "tail_uuid": user["uuid"],
            "head_uuid": project_uuid,
        }
        self.call("POST", "links", json={"link": link})
        return token

    def submit(self, script: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        job = {
            "repository": self.repo,
            "script": script,
            "script_version": "main",
            "script_parameters": params,
        }
        job |= extra.pop("job", {})
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

    def wait_for_log(self, uuid: str, timeout: float = 30) -> dict[str, Any]:
        """The job once its log collection is saved (a cancelled job's comes a bit later)."""
        deadline = time.monotonic() + timeout
        job = self.call("GET", f"jobs/{uuid}")
        while job["log"] is None:
            assert time.monotonic() < deadline, f"{uuid} has no log"
            time.sleep(0.2)
            job = self.call("GET", f"jobs/{uuid}")
        return job

    def log_text(self, job: dict[str, Any]) -> str:
        return self.file(job["log"], f"{job['uuid']}.log.txt").decode()

    def file(self, pdh: str, path: str) -> bytes:
        response = requests.get(
            f"{self.url}/arvados/v1/collections/{pdh}/files/{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.content

    def crunch(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The `crunch` command as alice runs it against this stack (`env` adds variables)."""
        env = (
            self.env | {"ARVADOS_API_HOST": self.url, "ARVADOS_API_TOKEN": self.token} | (env or {})
        )
        return subprocess.run(
            [sys.executable, "-m", "crunch.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()


def postgres_database(base_url: str) -> tuple[str, Any]:
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


@contextmanager
def running_stack(
    kind: str,
    work: Path,
    scripts: dict[str, str],
    *,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Stack]:
    """A stack of `kind` ("embedded" or "services") with `scripts` in `crunch_scripts/` of
    alice/tools on branch main; `extra_env` goes to every process; `workers` workers start
    with it (more with `Stack.start_worker`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
        and not k.startswith("ARVADOS_")
    }
    drop = None
    if kind == "services":
        from django.conf import settings

        base = os.environ["DATABASE_URL"] if settings.CRUNCH_DB_IS_POSTGRES else ""
        env["DATABASE_URL"], drop = postgres_database(base)
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
    env.update(extra_env or {})
    manage(env, "migrate", "-v0")
    token = manage(env, "create_api_token", "alice")
    logs = work / "logs"
    logs.mkdir()
    stack = Stack(
        url=f"http://127.0.0.1:{port}", token=token, env=env, work_dir=runs_dir, logs=logs
    )
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
    for number in range(workers):
        stack.start_worker(f"runs-{kind}-{port}-{number}")
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
        for name, text in scripts.items():
            path = source / "crunch_scripts" / name
            path.write_text(text)
            path.chmod(0o755)
        run_git(genv, "add", ".", cwd=source)
        run_git(genv, "commit", "-q", "-m", "scripts", cwd=source)
        push_url = repo["clone_urls"][0].replace("http://", f"http://x:{token}@")
        run_git(genv, "push", "-q", push_url, "main", cwd=source)
        yield stack
    finally:
        stop_all(stack.processes)
        if drop is not None:
            drop()
        shutil.rmtree(runs_dir, ignore_errors=True)


def stop_all(processes: list[subprocess.Popen[bytes]], grace: float = 2.0) -> None:
    """SIGTERM, then after `grace` seconds SIGKILL with everything each one started. (A Celery
    worker's warm shutdown spends seconds joining its pool's threads; a test's stack need not
    wait for that.)"""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                if os.getpgid(process.pid) == process.pid:
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: its pool too
                else:
                    process.kill()
            except ProcessLookupError:
                pass
            process.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its parent is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
