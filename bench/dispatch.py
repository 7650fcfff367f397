"""Dispatch throughput and latency: 500 trivial jobs on 2 workers, against a no-op Celery task.

    .venv/bin/python bench/dispatch.py [--jobs 500] [--workers 2] [--submitters 4] [--rate R]
                                       [--pings 200] [--idle-jobs 20] [--floor 400]
                                       [--profile-jobs 30]
                                       [--command-jobs 500] [--cprofile FILE]
                                       [--what-if db-reuse,small-buffers,fast-poll]

What it does:

1. Creates a fresh PostgreSQL database (`--database-url`, default
   postgres://postgres@127.0.0.1:5432/crunch_bench_dispatch; its name must start with
   `crunch_bench`, because the benchmark drops it before and after) and flushes a dedicated
   Redis database (`--redis-url`, default redis://127.0.0.1:6379/12); migrates; creates a
   token for `benchuser`.
2. Starts the production processes with that environment: `crunch serve` (the dispatcher is
   `crunch.dispatch.send`, `CRUNCH_API_URL` points at the server; access log off) and
   `--workers` separate `crunch worker --concurrency 1` processes (default log level). The
   workers use `bench.dispatch_worker_settings`: the product's settings plus a Redis result
   backend for `crunch.ping` only (run_job stores nothing, as in the product; checked).
3. Creates the hosted repository `benchuser/bench` and pushes, over git HTTP, one commit with
   `crunch_scripts/noop` (`#!/bin/sh` and `true`). A few warm-up jobs run first (the first
   fetches the commit into the workers' git cache); they are not measured.
4. Baseline: `--pings` round trips of the no-op task `crunch.ping`, one at a time, workers idle:
   `send_task("crunch.ping")` until `.get()` returns in this process (publish to Redis, a
   worker receives and runs it, stores the result, this process hears of it). Measured before
   and after the jobs; the baseline is the median of both sets together.
5. The batch: `--jobs` jobs (distinct parameters, so none is reused) POSTed to
   /arvados/v1/jobs from `--submitters` threads at once, as fast as the API answers (or
   evenly spaced at `--rate` jobs/s); waits until all are finished and reads `created_at`,
   `started_at` and `finished_at` from the database (each answer's `created_at` is checked to
   be the same instant). All three are stamped by the server and the workers on this
   machine's clock.
   - jobs/s = jobs / (last finished_at - first created_at): the whole batch, from the first
     row inserted to the last job done;
   - delay = started_at - created_at per job; the ratio is its median over the ping median.
     Unpaced, it is mostly time in the queue (at most `--workers` jobs run at once), so it
     is split with the workers' log (Celery's `received` line, millisecond resolution):
     created_at -> task message received, and received -> started_at (the claim).
6. For information: `--idle-jobs` jobs one at a time (each submitted when the previous one
   finished): the same delay with nothing queued, i.e. the dispatch path alone; CPU seconds
   each process group used during the batch; how busy the workers were; PostgreSQL
   sessions opened; run_job tasks that found nothing to claim. And the stack's floor
   (`--floor`, 0 to skip), measured with the workers idle: the CPU of a no-op task (the
   workers and Redis), of the cheapest authenticated request (users/current: the API and
   PostgreSQL) and of starting `/bin/sh -c true`, added up beside what 100 jobs/s on this
   machine's CPUs allows a job and what a job of the batch cost: how much of a job's cost is
   the stack's before the job does anything.
7. Command jobs (`--command-jobs`, 0 to skip): the same batch as command jobs (the argv
   `true`, no source tree), measured the same way right after, and their rate over the
   script jobs' (target: at least 1).
8. Profile (`--profile-jobs`, 0 to skip): the workers are stopped; jobs are submitted through
   the API and each is claimed and run in this process with `jobs.services.runs.job_claim`
   and `crunch.runner.Runner`, the same code the task runs, with its phases timed (wrappers
   installed here; no product file changes); then reference costs that size suggestions.

`--what-if` measures suggested changes before they are made, applied in the bench's workers
and profile only (see bench/dispatch_worker_settings.py); the output then says so.

Targets: at least 100 jobs/s; with an idle queue a median create -> Running at most 3 times
the ping's round trip (the `--idle-jobs` measurement; the batch's delay, mostly time queued,
is printed for information); and each worker's resident memory (main process and pool)
after its last job at most 10% above that after its 100th (`--jobs 2200`: about 1,000 jobs
per worker). It reports; it does not assert: the exit status is 0
whether or not targets are met (non-zero only if the benchmark itself could not run, e.g. a
job failed or a process died). Processes it started are stopped (by process group), the
database dropped and the Redis database flushed on every exit path, Ctrl-C and SIGTERM
included.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as `python bench/dispatch.py`, sys.path[0] is bench/, where bench/api.py would shadow
# the `api` package; put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crunch_bench_dispatch"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
TARGET_JOBS_PER_SECOND = 100.0
TARGET_RATIO = 3.0
SCRIPT = "noop"
SCRIPT_TEXT = "#!/bin/sh\ntrue\n"
REPOSITORY = "benchuser/bench"
WORKER_SETTINGS = "bench.dispatch_worker_settings"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE = "(machine busy, all CPUs)"


class BenchError(Exception):
    """The benchmark itself could not run."""


# --- statistics -----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.1f}"


# --- the stack ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """Everything the benchmark creates; `close()` undoes it, whatever state it is in."""

    database_url: str
    redis_url: str
    work: Path
    keep_logs: bool
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    database_created: bool = False
    url: str = ""
    token: str = ""

    # database and Redis

    def _admin_url(self) -> str:
        return urlunsplit(urlsplit(self.database_url)._replace(path="/postgres"))

    def _db_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")

    def create_database(self) -> None:
        import psycopg
        from psycopg import sql

        name = self._db_name()
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.database_created = True

    def drop_database(self) -> None:
        import psycopg
        from psycopg import sql

        if not self.database_created:
            return
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self._db_name())
                )
            )
        self.database_created = False

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    # processes

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "crunch.cli", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group: stopping it reaches the Celery pool child and any
                # script or git process too, by group id.
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise BenchError(
                    f"{proc.name} exited with status {proc.popen.returncode}:\n" + tail(proc.log)
                )

    def stop(self, proc: Proc) -> None:
        """SIGTERM to the process group (a warm shutdown for Celery), SIGKILL after 30 s;
        then SIGKILL to whatever is left in the group."""
        pgid = proc.popen.pid  # start_new_session: the group id is the leader's pid
        if proc.popen.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"bench: {proc.name} did not stop within 30 s; killing it", file=sys.stderr)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"bench: {proc.name} (pid {pgid}) would not die", file=sys.stderr)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        errors: list[str] = []
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # go on cleaning up
                errors.append(f"stopping {proc.name}: {exc}")
        for step, action in (
            ("dropping the database", self.drop_database),
            ("flushing Redis", self.flush_redis),
        ):
            try:
                action()
            except Exception as exc:
                errors.append(f"{step}: {exc}")
        if self.keep_logs:
            print(f"logs kept in {self.work / 'logs'}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        for error in errors:
            print(f"bench: clean-up: {error}", file=sys.stderr)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip()


def git_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.pop("ARVADOS_API_TOKEN", None)
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Crunch Bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Crunch Bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
    )
    return env


def git(env: dict[str, str], *args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


# --- talking to the API ---------------------------------------------------------------------


class Api:
    """One requests.Session per thread (keep-alive), the bench user's token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.local = threading.local()

    def session(self) -> Any:
        import requests

        session = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
            self.local.session = session
        return session

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.session().request(
            method, f"{self.url}/arvados/v1/{path}", timeout=120, **kw
        )
        if response.status_code != 200:
            raise BenchError(
                f"{method} {path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json()

    def submit(
        self, i: int, tag: str, *, command: bool = False
    ) -> tuple[float, float, dict[str, Any]]:
        """POST one job (a script job, or with `command` the argv `true` over no tree);
        (sent, answered) on the monotonic clock, and the answer."""
        parameters = {"bench": tag, "i": i}
        body = {
            "job": {"command": ["true"], "script_parameters": parameters}
            if command
            else {
                "repository": REPOSITORY,
                "script": SCRIPT,
                "script_version": "main",
                "script_parameters": parameters,
            }
        }
        sent = time.perf_counter()
        job = self.call("POST", "jobs", json=body)
        return sent, time.perf_counter(), job


def parse_api_time(text: str) -> dt.datetime:
    # "2024-05-01T12:00:00.123456000Z": microseconds, then three zeros (nanoseconds).
    return dt.datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)


@dataclass
class JobTimes:
    uuid: str
    state: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def delay(self) -> float:
        assert self.started_at is not None
        return (self.started_at - self.created_at).total_seconds()

    @property
    def run(self) -> float:
        assert self.started_at is not None and self.finished_at is not None
        return (self.finished_at - self.started_at).total_seconds()


def job_times(database_url: str, uuids: list[str]) -> list[JobTimes]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT uuid, state, created_at, started_at, finished_at FROM jobs"
            " WHERE uuid = ANY(%s)",
            [uuids],
        ).fetchall()
    return [JobTimes(*row) for row in rows]


def wait_finished(stack: Stack, uuids: list[str], timeout: float) -> None:
    """Until every job has finished_at (polling the database every 0.25 s)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE uuid = ANY(%s) AND finished_at IS NOT NULL",
                [uuids],
            ).fetchone()
            if row is not None and row[0] == len(uuids):
                return
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(uuids) - (row[0] if row else 0)} of {len(uuids)} jobs unfinished "
                    f"after {timeout:.0f} s"
                )
            time.sleep(0.25)


def check_complete(stack: Stack, times: list[JobTimes], api: Api) -> None:
    bad = [t for t in times if t.state != "Complete" or t.started_at is None]
    if bad:
        job = api.call("GET", f"jobs/{bad[0].uuid}")
        raise BenchError(
            f"{len(bad)} jobs did not complete (e.g. {bad[0].uuid}: {bad[0].state}, "
            f"log {job.get('log')}); worker log:\n" + tail(stack.work / "logs" / "worker1.log")
        )


# --- worker memory -------------------------------------------------------------------------


def _tree(root: int) -> list[tuple[int, str]]:
    """(pid, command) of `root` and every process under it."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                table[int(entry)] = (stat[0], stat[1])
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append((pid, table[pid][1]))
            todo.extend(children[pid])
    return found


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])  # kB
        except OSError:
            continue
    return total / 1024


@dataclass
class MemoryWatch:
    """Resident memory of each worker (its main process and pool, not the programs it runs)
    after it has finished `after` jobs, and at the end, with how many it had finished."""

    roots: dict[str, int]  # worker name -> its process
    after: int = 100
    nodes: dict[str, str] = field(default_factory=dict)  # node uuid -> worker name
    first: dict[str, tuple[int, float]] = field(default_factory=dict)
    last: dict[str, tuple[int, float]] = field(default_factory=dict)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, database_url: str) -> None:
        """Read every 0.25 s on a thread of its own, from now until `stop`."""
        import psycopg

        def loop() -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                while not self._done.wait(0.25):
                    self.poll(conn)
                self.poll(conn, final=True)

        self._thread = threading.Thread(target=loop, name="memory-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _own(self, name: str) -> list[int]:
        return [
            pid
            for pid, command in _tree(self.roots[name])
            if "python" in command or "celery" in command
        ]

    def poll(self, conn: Any, *, final: bool = False) -> None:
        if len(self.nodes) < len(self.roots):
            for uuid, pid in conn.execute("SELECT uuid, (info->>'pid')::int FROM nodes"):
                for name in self.roots:
                    if pid in {p for p, _ in _tree(self.roots[name])}:
                        self.nodes[uuid] = name
        counts = conn.execute(
            "SELECT worker_node_uuid, count(*) FROM jobs WHERE finished_at IS NOT NULL"
            " GROUP BY worker_node_uuid"
        ).fetchall()
        for uuid, count in counts:
            name = self.nodes.get(uuid)
            if name is None:
                continue
            if name not in self.first and count >= self.after:
                self.first[name] = (count, _rss_mib(self._own(name)))
            if final:
                self.last[name] = (count, _rss_mib(self._own(name)))

    def worst_growth(self) -> float | None:
        """The largest growth in percent, None unless every worker was measured."""
        if not self.roots or any(n not in self.first or n not in self.last for n in self.roots):
            return None
        return max(
            (self.last[n][1] - self.first[n][1]) / self.first[n][1] * 100 for n in self.roots
        )

    def lines(self) -> list[str]:
        out = []
        for name in self.roots:
            if name in self.first and name in self.last:
                (n0, m0), (n1, m1) = self.first[name], self.last[name]
                growth = (m1 - m0) / m0 * 100 if m0 else 0.0
                out.append(
                    f"  {name}: {m0:.1f} MiB after {n0} jobs, {m1:.1f} MiB after {n1} "
                    f"({growth:+.1f}%; target: at most +10% from 100 to 1,000 jobs)"
                )
            else:
                out.append(f"  {name}: ran fewer than {self.after} jobs, not measured")
        return out


# --- CPU accounting -------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, str, float] | None:
    """(ppid, command, CPU seconds of the process and its reaped children)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    command = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # after the command: state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[1]), command, ticks / CLOCK_TICKS


def cpu_by_group(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far per named process tree, plus all `postgres` and `redis-server`
    processes (other users of those servers included) and system-wide busy time."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    result: dict[str, float] = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                total += table[pid][2]
                todo.extend(children[pid])
        result[name] = total
    # This process alone (its children are the stack, counted above); its threads included.
    own = Path("/proc/self/stat").read_text()
    own_fields = own[own.rindex(")") + 2 :].split()
    result["bench (this process: submitters, polling)"] = (
        int(own_fields[11]) + int(own_fields[12])
    ) / CLOCK_TICKS
    # the servers: postmaster's cutime holds its exited backends
    result["postgres (all sessions)"] = sum(
        cpu for _, command, cpu in table.values() if command == "postgres"
    )
    result["redis-server"] = sum(
        cpu for _, command, cpu in table.values() if command.startswith("redis-server")
    )
    with open("/proc/stat") as handle:
        first = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in first[:7])
    steal = int(first[7]) if len(first) > 7 else 0
    result[MACHINE] = (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    return result


# --- the baseline ---------------------------------------------------------------------------


def ping_round_trips(app: Any, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        answer = app.send_task("crunch.ping").get(timeout=30)
        samples.append(time.perf_counter() - started)
        if not answer:
            raise BenchError("crunch.ping answered nothing")
    return samples


@dataclass
class Floor:
    """What any job costs this stack before it does anything of its own, in CPU seconds
    per unit, by process group: a no-op task, the cheapest authenticated request, starting
    a trivial program."""

    count: int
    threads: int
    task: dict[str, float]
    request: dict[str, float]
    spawn: float

    def job_floor(self) -> float:
        return sum(self.task.values()) + sum(self.request.values()) + self.spawn


def measure_floor(app: Any, api: Api, roots: dict[str, int], count: int, submitters: int) -> Floor:
    """With the workers idle: `count` no-op tasks sent at once (the workers run them and
    store their results; the CPU of the workers and Redis), `count` GETs of users/current
    from `submitters` threads (the API's and PostgreSQL's), `count` starts of
    `/bin/sh -c true` by this process (as a worker starts a script: vfork and exec)."""

    def used(before: dict[str, float], after: dict[str, float], *names: str) -> dict[str, float]:
        """Per unit, for each name: the groups whose names start with it, together."""
        return {
            name: sum(after[key] - before[key] for key in after if key.startswith(name)) / count
            for name in names
        }

    before = cpu_by_group(roots)
    for result in [app.send_task("crunch.ping") for _ in range(count)]:
        if not result.get(timeout=60):
            raise BenchError("crunch.ping answered nothing")
    after = cpu_by_group(roots)
    task = used(before, after, "crunch worker", "redis-server")
    with ThreadPoolExecutor(max_workers=submitters) as pool:
        before = cpu_by_group(roots)
        list(pool.map(lambda _: api.call("GET", "users/current"), range(count)))
        after = cpu_by_group(roots)
    request = used(before, after, "crunch serve", "postgres")
    started = cpu_now()
    for _ in range(count):
        subprocess.run(["/bin/sh", "-c", "true"], check=True)
    return Floor(count, submitters, task, request, (cpu_now() - started) / count)


def wait_for_workers(app: Any, names: list[str], stack: Stack) -> None:
    deadline = time.monotonic() + 90
    while True:
        stack.check_alive()
        replies = app.control.ping(timeout=1.0) or []
        seen = {name for reply in replies for name in reply}
        if set(names) <= seen:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"workers not answering after 90 s: {sorted(seen)} of {names}")


# --- profile: one job at a time, in this process, phases timed ------------------------------


def cpu_now() -> float:
    """CPU seconds of this process (all its threads) and of its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class PhaseTimer:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.restore: list[Callable[[], None]] = []
        self.missing: list[str] = []

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:  # the code moved on: that phase is reported as absent
            self.missing.append(name)
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), cpu_now()
            try:
                return original(*args, **kwargs)
            finally:
                self.total[name] += time.perf_counter() - started
                self.cpu[name] += cpu_now() - cpu
                self.calls[name] += 1

        setattr(owner, attribute, timed)
        self.restore.append(lambda: setattr(owner, attribute, original))

    def undo(self) -> None:
        for action in reversed(self.restore):
            action()
        self.restore.clear()


def profile_runner(
    stack: Stack, api: Api, count: int, what_if: list[str], *, cprofile: str | None = None
) -> None:
    """Claim and run `count` jobs here, one at a time, with the runner's phases timed (and
    with `cprofile`, their claims and runs under cProfile, its statistics written there)."""
    import cProfile

    import django

    os.environ.update(stack.env)
    django.setup()
    from django.db import connection

    import crunch.keepcli as keepcli
    import crunch.runner as runner

    block_size = keepcli.BLOCK_SIZE
    if "small-buffers" in what_if:
        keepcli.BLOCK_SIZE = 1 << 20
    if "fast-poll" in what_if:
        runner.time = types.SimpleNamespace(  # type: ignore[assignment]
            monotonic=time.monotonic, sleep=lambda seconds: time.sleep(min(seconds, 0.005))
        )
    from crunch.client import ApiClient, ClientConfig
    from jobs.services import runs

    timer = PhaseTimer()
    # (name, owner, attribute); nested phases are listed under their parent in the report.
    for owner, attribute, name in (
        (runs, "job_token_create", "token create"),
        (runner.Runner, "_prepare", "prepare"),
        (runner.Runner, "_checkout", "  checkout (kept archive or git, untar)"),
        (runner.Runner, "_execute", "execute"),
        (runner.Runner, "_run_once", "  run the script (Popen, poll loop)"),
        (runner.Runner, "_save_output", "save output collection"),
        (runner.Runner, "_save_log", "save log collection"),
        (keepcli._Uploader, "__init__", "  put: uploader set-up (64 MiB buffer, thread pool)"),
        (
            ApiClient,
            "block_put",
            "  put: block PUT (upload thread; includes GIL waits)",
        ),
        (ApiClient, "call", "  put: POST collections"),
        (runs, "job_finish", "job_finish"),
        (runs, "job_token_revoke", "token revoke"),
        (runs, "job_log_append", "(log chunk inserts)"),
        (runs, "job_state", "(cancel polls: job_state)"),
        (runs, "job_log_text", "(log text read)"),
    ):
        timer.wrap(owner, attribute, name)
    git_total = [0.0, 0]
    original_run = runner.subprocess.run

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_run(*args, **kwargs)
        finally:
            git_total[0] += time.perf_counter() - started
            git_total[1] += 1

    claims: list[float] = []
    runs_total: list[float] = []
    claims_cpu: list[float] = []  # CPU of this process and its children (cpu_now)
    runs_cpu: list[float] = []
    # SQL statements and their time, split between the claim and the run.
    sql: dict[str, list[float]] = {"claim": [0.0, 0], "run": [0.0, 0]}
    sql_phase = ["claim"]

    def count_sql(execute: Any, statement: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(statement, params, many, context)
        finally:
            sql[sql_phase[0]][0] += time.perf_counter() - started
            sql[sql_phase[0]][1] += 1

    profiler = cProfile.Profile() if cprofile else None
    try:
        runner.subprocess.run = timed_run  # type: ignore[assignment]
        wrapper = connection.execute_wrapper(count_sql)  # held: it unwinds when collected
        wrapper.__enter__()
        for i in range(count):
            api.submit(i, "profile")
            sql_phase[0] = "claim"
            started, started_cpu = time.perf_counter(), cpu_now()
            if profiler is not None:
                profiler.enable()
            job = runs.job_claim(worker="bench-profile")
            claimed, claimed_cpu = time.perf_counter(), cpu_now()
            sql_phase[0] = "run"
            if job is None:
                raise BenchError("profile: nothing to claim (is a worker still running?)")
            done = runner.Runner(job).run()
            runs_total.append(time.perf_counter() - claimed)
            runs_cpu.append(cpu_now() - claimed_cpu)
            if profiler is not None:
                profiler.disable()
            claims.append(claimed - started)
            claims_cpu.append(claimed_cpu - started_cpu)
            if done.state != "Complete":
                raise BenchError(f"profile: {done.uuid} ended {done.state}")
    finally:
        runner.subprocess.run = original_run  # type: ignore[assignment]
        timer.undo()
        if profiler is not None and cprofile:
            profiler.disable()
            profiler.dump_stats(cprofile)
        if "wrapper" in locals():
            wrapper.__exit__(None, None, None)
    # The dispatch hint alone: what the API's on_commit hook does (one publish to Redis).
    from crunch.dispatch import send

    send("bench-warm-up")
    publish = []
    for _ in range(50):
        started = time.perf_counter()
        send("bench-not-a-job")
        publish.append(time.perf_counter() - started)
    connection.close()

    n = len(runs_total)
    print()
    print(
        f"profile: {n} jobs claimed and run one at a time in this process (workers stopped)"
        + (f"; what-if: {', '.join(what_if)}" if what_if else "")
    )
    print(f"{'phase':<56} {'ms/job':>8} {'CPU ms':>8} {'calls/job':>10}")
    print(f"{'job_claim':<56} {ms(sum(claims) / n):>8} {ms(sum(claims_cpu) / n):>8} {1:>10}")
    print(
        f"{'  SQL in job_claim (statements, time)':<56} {ms(sql['claim'][0] / n):>8} "
        f"{'':>8} {sql['claim'][1] / n:>10.1f}"
    )
    print(
        f"{'Runner.run (total)':<56} {ms(sum(runs_total) / n):>8} "
        f"{ms(sum(runs_cpu) / n):>8} {1:>10}"
    )
    accounted, accounted_cpu = 0.0, 0.0
    for name in (
        "token create",
        "prepare",
        "  checkout (kept archive or git, untar)",
        "execute",
        "  run the script (Popen, poll loop)",
        "save output collection",
        "save log collection",
        "  put: uploader set-up (64 MiB buffer, thread pool)",
        "  put: block PUT (upload thread; includes GIL waits)",
        "  put: POST collections",
        "job_finish",
        "token revoke",
        "(log chunk inserts)",
        "(cancel polls: job_state)",
        "(log text read)",
    ):
        if not name.startswith(" ") and not name.startswith("("):
            accounted += timer.total[name]
            accounted_cpu += timer.cpu[name]
        if name in timer.missing:
            print(f"{name:<56} {'(not found in the code)':>28}")
            continue
        print(
            f"{name:<56} {ms(timer.total[name] / n):>8} {ms(timer.cpu[name] / n):>8} "
            f"{timer.calls[name] / n:>10.1f}"
        )
    print(
        f"{'  of which git subprocesses (in checkout)':<56} {ms(git_total[0] / n):>8} "
        f"{'':>8} {git_total[1] / n:>10.1f}"
    )
    print(
        f"{'  SQL in Runner.run (statements, time)':<56} {ms(sql['run'][0] / n):>8} "
        f"{'':>8} {sql['run'][1] / n:>10.1f}"
    )
    print(
        f"{'rest of Runner.run (rmtree, log notes, client)':<56} "
        f"{ms((sum(runs_total) - accounted) / n):>8} "
        f"{ms((sum(runs_cpu) - accounted_cpu) / n):>8}"
    )
    print(
        "  (CPU ms: this process, all its threads, and the children it reaped in that phase;"
        " the API server's and PostgreSQL's share is not in it)"
    )
    print(f"dispatch hint (crunch.dispatch.send, one publish): median {ms(median(publish))} ms")

    # Micro-measurements that size the suggestions.
    def timeit(action: Callable[[], Any], repeat: int = 20) -> float:
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            action()
            samples.append(time.perf_counter() - started)
        return median(samples)

    print()
    print("reference costs (median of 20, this process):")
    alloc = timeit(lambda: bytearray(block_size))
    print(f"  bytearray({block_size >> 20} MiB) allocation:           {ms(alloc)} ms")
    spawn = timeit(lambda: subprocess.run(["sh", "-c", "true"], check=True))
    print(f"  subprocess `sh -c true`:                {ms(spawn)} ms")
    print(f"  runner poll-loop sleep per iteration:   {ms(0.05)} ms (time.sleep(0.05) after poll)")
    keep_dir = Path(stack.env["CRUNCH_DATA_DIR"]) / "keep"
    keep_dir.mkdir(parents=True, exist_ok=True)
    counter = [0]

    def durable_write() -> None:  # what the filesystem store does per new block
        counter[0] += 1
        tmp = keep_dir / f".bench-{counter[0]}.tmp"
        with tmp.open("wb") as handle:
            handle.write(b"x" * 300)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.rename(keep_dir / f".bench-{counter[0]}")
        fd = os.open(keep_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    import psycopg

    def new_session() -> None:
        with psycopg.connect(stack.database_url) as conn:
            conn.execute("SELECT 1")

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_commit (id serial, t text)")  # WAL-logged
        insert = timeit(lambda: conn.execute("INSERT INTO bench_commit (t) VALUES ('x')"))
        conn.execute("DROP TABLE bench_commit")
    print(f"  new PostgreSQL session (connect, SELECT 1, close): {ms(timeit(new_session))} ms")
    print(f"  one-row INSERT, autocommit (WAL flush):            {ms(insert)} ms")
    print(
        f"  300-byte file write + fsync + rename + directory fsync: {ms(timeit(durable_write))} ms"
    )
    client = ApiClient(ClientConfig(base_url=stack.url, token=stack.token))
    serial = [0]

    def new_block() -> None:
        # A memoryview body on a new connection, as the uploader sends a block.
        serial[0] += 1
        fresh = ApiClient(ClientConfig(base_url=stack.url, token=stack.token))
        try:
            fresh.block_put(memoryview(f"bench block {serial[0]} {time.time()}\n".encode() * 8))
        finally:
            fresh.close()

    print(f"  block PUT of a new 300-byte block (new connection): {ms(timeit(new_block))} ms")

    folder = Path(stack.env["CRUNCH_DATA_DIR"]) / "bench-put"
    empty_dir = folder / "empty"
    empty_dir.mkdir(parents=True)
    small_file = folder / "small.log"

    def put(path: str) -> None:
        serial[0] += 1
        small_file.write_text(f"a small log {serial[0]} {time.time()}\n" * 8)
        fresh = ApiClient(ClientConfig(base_url=stack.url, token=stack.token))
        try:
            keepcli.put_paths(fresh, [path], name="bench")
        finally:
            fresh.close()

    for size, label in ((block_size, f"{block_size >> 20} MiB"), (1 << 20, "1 MiB")):
        keepcli.BLOCK_SIZE = size
        print(
            f"  put_paths, new client, upload buffer {label:>6}: empty directory "
            f"{ms(timeit(lambda: put(str(empty_dir) + os.sep)))} ms, 300-byte file "
            f"{ms(timeit(lambda: put(str(small_file))))} ms"
        )
    keepcli.BLOCK_SIZE = block_size
    print(
        f"  block PUT of an existing block:         "
        f"{ms(timeit(lambda: client.block_put(b'the same bytes' * 20)))} ms"
    )
    empty = {"collection": {"manifest_text": ""}}
    collection = timeit(lambda: client.call("POST", "collections", body=empty))
    print(f"  POST collections, empty manifest:       {ms(collection)} ms")
    client.close()


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs in the batch (500)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--submitters", type=int, default=4, help="submitting threads (4)")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="submit at most this many jobs/s, evenly spaced (default 0: as fast as the API "
        "answers)",
    )
    parser.add_argument("--pings", type=int, default=200, help="ping round trips, twice (200)")
    parser.add_argument("--idle-jobs", type=int, default=20, help="one-at-a-time jobs (20)")
    parser.add_argument(
        "--floor",
        type=int,
        default=400,
        help="no-op tasks, requests and program starts measured for the floor (400; 0: skip)",
    )
    parser.add_argument(
        "--command-jobs", type=int, default=500, help="command jobs after the batch (500; 0: skip)"
    )
    parser.add_argument("--warmup-jobs", type=int, default=6, help="unmeasured jobs first (6)")
    parser.add_argument("--profile-jobs", type=int, default=30, help="profiled jobs (30; 0: skip)")
    parser.add_argument(
        "--cprofile",
        metavar="FILE",
        help="also write the profiled runs' cProfile statistics to FILE (pstats format)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the batch")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--what-if",
        default="",
        metavar="A,B",
        help="measure suggested changes, applied in the bench's workers (and the profile) "
        "only: db-reuse, small-buffers, fast-poll (see bench/dispatch_worker_settings.py); "
        "default: the product as it is",
    )
    args = parser.parse_args(argv)
    what_if = sorted(set(filter(None, args.what_if.split(","))))
    if set(what_if) - {"db-reuse", "small-buffers", "fast-poll"}:
        parser.error("--what-if takes db-reuse, small-buffers, fast-poll")
    args.what_if = what_if
    db_name = urlsplit(args.database_url).path.lstrip("/")
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    if not db_name.startswith("crunch_bench"):
        parser.error("the database name must start with crunch_bench (it is dropped)")
    redis_db = urlsplit(args.redis_url).path.lstrip("/")
    if not redis_db.isdigit() or redis_db == "0":
        parser.error("--redis-url must name a dedicated database number other than 0 (flushed)")
    if args.jobs < 10 or args.workers < 1 or args.submitters < 1 or args.pings < 5:
        parser.error("need --jobs >= 10, --workers >= 1, --submitters >= 1, --pings >= 5")

    # Signals end the run through the same clean-up as an exception.
    def interrupted(signum: int, _frame: Any) -> None:
        raise SystemExit(f"bench: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    # Ctrl-C too, even when started in the background (where SIGINT starts out ignored).
    signal.signal(signal.SIGINT, interrupted)

    work = Path(tempfile.mkdtemp(prefix="crunch-bench-dispatch-"))
    work.chmod(0o755)  # a root worker runs scripts as `nobody`: their directories must be reachable
    stack = Stack(args.database_url, args.redis_url, work, args.keep_logs)
    try:
        return run(args, stack)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second signal must not cut the clean-up short (it is bounded: 40 s per process).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stack.close()


def run(args: argparse.Namespace, stack: Stack) -> int:
    stack.create_database()
    stack.flush_redis()
    port = free_port()
    stack.url = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRUNCH_", "ARVADOS_", "CELERY_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        DJANGO_SETTINGS_MODULE="api.settings",
        CRUNCH_DATA_DIR=str(stack.work / "data"),
        CRUNCH_WORK_DIR=str(stack.work / "runs"),
        CRUNCH_DISPATCHER="crunch.dispatch.send",
        CRUNCH_API_URL=stack.url,
    )
    stack.env = env
    manage(env, "migrate", "-v0")
    stack.token = manage(env, "create_api_token", "benchuser")
    api = Api(stack.url, stack.token)

    server = stack.start(
        "serve", ["serve", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], env
    )
    worker_env = env | {
        "DJANGO_SETTINGS_MODULE": WORKER_SETTINGS,
        "CRUNCH_BENCH_RESULT_BACKEND": args.redis_url,
        "CRUNCH_BENCH_WHAT_IF": ",".join(args.what_if),
    }
    names = [f"bench{i + 1}@{socket.gethostname()}" for i in range(args.workers)]
    workers = [
        stack.start(
            f"worker{i + 1}",
            # The product's default log level (INFO): Celery logs when each task message is
            # received, which splits each job's delay below.
            ["worker", "--concurrency", "1", "--hostname", name],
            worker_env,
        )
        for i, name in enumerate(names)
    ]

    # This process: a Celery client of the same broker, with the result backend.
    os.environ.update(env)
    os.environ["CELERY_RESULT_BACKEND"] = args.redis_url
    os.environ["CRUNCH_LOG_LEVEL"] = "WARNING"  # the profile: no "claimed" line per job here
    from crunch.celery import app

    deadline = time.monotonic() + 60
    while True:
        stack.check_alive()
        try:
            api.call("GET", "users/current")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise BenchError(
                    "the server did not answer within 60 s:\n" + tail(server.log)
                ) from None
            time.sleep(0.3)
    wait_for_workers(app, names, stack)

    # The repository and the trivial script, pushed over git HTTP.
    repo = api.call("POST", "repositories", json={"repository": {"name": REPOSITORY}})
    genv = git_env(stack.work / "home")
    source = stack.work / "source"
    git(genv, "init", "-q", "-b", "main", str(source), cwd=stack.work)
    (source / "crunch_scripts").mkdir()
    script = source / "crunch_scripts" / SCRIPT
    script.write_text(SCRIPT_TEXT)
    script.chmod(0o755)
    git(genv, "add", ".", cwd=source)
    git(genv, "commit", "-q", "-m", "a trivial script", cwd=source)
    push_url = repo["clone_urls"][0].replace("http://", f"http://bench:{stack.token}@", 1)
    git(genv, "push", "-q", push_url, "main", cwd=source)

    # Warm-up: one job alone (fills the git cache), then a few at once (both workers).
    warm = [api.submit(0, "warm-up-0")[2]["uuid"]]
    wait_finished(stack, warm, 120)
    more = [api.submit(i, "warm-up")[2]["uuid"] for i in range(max(args.warmup_jobs - 1, 0))]
    wait_finished(stack, more, 120)
    check_complete(stack, job_times(args.database_url, warm + more), api)
    ping_round_trips(app, 10)  # unmeasured

    pings_before = ping_round_trips(app, args.pings)

    # The batch.
    roots = {"crunch serve": server.popen.pid} | {
        f"crunch worker {i + 1} (+ pool, scripts, git)": w.popen.pid for i, w in enumerate(workers)
    }
    load_before = os.getloadavg()[0]
    sessions_before = pg_sessions(args.database_url)
    cpu_before = cpu_by_group(roots)
    memory = MemoryWatch({name: pid for name, pid in roots.items() if "worker" in name})
    memory.start(args.database_url)
    wall_started = time.perf_counter()

    def submit(i: int) -> tuple[float, float, dict[str, Any]]:
        if args.rate > 0:  # job i leaves at its slot, not before
            pause = wall_started + i / args.rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        return api.submit(i, "batch")

    with ThreadPoolExecutor(max_workers=args.submitters) as pool:
        answers = list(pool.map(submit, range(args.jobs)))
    submitted = time.perf_counter()
    uuids = [job["uuid"] for _, _, job in answers]
    wait_finished(stack, uuids, args.timeout)
    memory.stop()
    drained = time.perf_counter()
    cpu_after = cpu_by_group(roots)
    time.sleep(1.0)  # backends report their sessions to pg_stat_database within a second
    sessions_after = pg_sessions(args.database_url)
    times = job_times(args.database_url, uuids)
    check_complete(stack, times, api)
    if len(times) != args.jobs or len(set(uuids)) != args.jobs:
        raise BenchError(f"expected {args.jobs} distinct jobs, found {len(times)}")
    by_uuid = {t.uuid: t for t in times}
    skew = max(
        abs((parse_api_time(job["created_at"]) - by_uuid[job["uuid"]].created_at).total_seconds())
        for _, _, job in answers
    )
    if skew > 1e-5:
        raise BenchError(f"the API's created_at differs from the row's by {skew:.6f} s")

    # One job at a time: the dispatch path with nothing queued.
    idle: list[JobTimes] = []
    idle_walls: dict[str, tuple[float, float]] = {}  # uuid: (sent, answered), wall clock
    for i in range(args.idle_jobs):
        sent_wall = time.time()
        uuid = api.submit(i, "idle")[2]["uuid"]
        idle_walls[uuid] = (sent_wall, time.time())
        wait_finished_fast(stack, uuid)
        idle += job_times(args.database_url, [uuid])
    check_complete(stack, idle, api)

    pings_after = ping_round_trips(app, args.pings)
    floor = measure_floor(app, api, roots, args.floor, args.submitters) if args.floor else None

    import redis

    # Stored results: pings answer a host name, run_job would answer a job uuid.
    stored = redis.Redis.from_url(args.redis_url)
    ping_results = run_job_results = 0
    for key in stored.scan_iter("celery-task-meta-*", count=1000):
        result = json.loads(stored.get(key) or b"{}").get("result")
        if isinstance(result, str) and "-8i9sb-" in result:
            run_job_results += 1
        else:
            ping_results += 1

    received = received_times(stack)
    report(
        args,
        answers,
        times,
        idle,
        pings_before,
        pings_after,
        submitted - wall_started,
        drained - wall_started,
        cpu_before,
        cpu_after,
        run_job_results,
        ping_results,
        load_before,
        idle_walls,
        received,
        sessions_after - sessions_before,
        task_outcomes(stack),
        memory,
        floor,
    )

    if args.command_jobs > 0:
        command_batch(args, stack, api, script_rate=batch_rate(times))

    if args.profile_jobs > 0:
        for worker in workers:
            stack.stop(worker)
        profile_runner(stack, api, args.profile_jobs, args.what_if, cprofile=args.cprofile)
    return 0


def batch_rate(times: list[JobTimes]) -> float:
    """jobs / (last finished_at - first created_at)."""
    last_finished = max(t.finished_at for t in times if t.finished_at)
    return len(times) / (last_finished - min(t.created_at for t in times)).total_seconds()


def command_batch(args: argparse.Namespace, stack: Stack, api: Api, *, script_rate: float) -> None:
    """The same batch as command jobs (`true`, no source tree), right after the script jobs:
    their rate side by side (target: no less than the script jobs')."""
    with ThreadPoolExecutor(max_workers=args.submitters) as pool:
        answers = list(
            pool.map(lambda i: api.submit(i, "command", command=True), range(args.command_jobs))
        )
    uuids = [job["uuid"] for _, _, job in answers]
    wait_finished(stack, uuids, args.timeout)
    times = job_times(args.database_url, uuids)
    check_complete(stack, times, api)
    rate = batch_rate(times)
    ratio = rate / script_rate
    print()
    print(f"Command jobs ({len(times)} `true` jobs over no tree, the same way, just after):")
    print(f"  jobs/s = {rate:.2f}; the script jobs' {script_rate:.2f}")
    verdict = "MET" if ratio >= 1 else "NOT MET"
    print(f"  command/script rate: {ratio:.2f} (target >= 1: {verdict})")
    print(f"  median delay created -> Running: {ms(median([t.delay for t in times]))} ms")


_RECEIVED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
    r"Task crunch\.run_job\[([0-9a-f-]+)\] received"
)
_SUCCEEDED = re.compile(r"Task crunch\.run_job\[([0-9a-f-]+)\] succeeded in [^:]*: '([a-z0-9-]+)'")


def received_times(stack: Stack) -> dict[str, dt.datetime]:
    """Job uuid -> when the worker that ran it received the task message (from the workers'
    INFO log: `received` has the task id and time, `succeeded` the task id and the job it ran;
    log times have millisecond resolution, truncated)."""
    received: dict[str, dt.datetime] = {}
    job_of: dict[str, str] = {}
    for proc in stack.procs:
        if not proc.name.startswith("worker"):
            continue
        for line in proc.log.read_text(errors="replace").splitlines():
            if match := _RECEIVED.match(line):
                # Celery's log times are local time, naive: astimezone() reads them so.
                local = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007
                received[match.group(2)] = local.astimezone(dt.UTC)
            elif match := _SUCCEEDED.search(line):
                job_of[match.group(1)] = match.group(2)
    return {job: received[task] for task, job in job_of.items() if task in received}


def task_outcomes(stack: Stack) -> tuple[int, int]:
    ran = empty = 0
    for proc in stack.procs:
        if proc.name.startswith("worker"):
            for line in proc.log.read_text(errors="replace").splitlines():
                if "Task crunch.run_job[" in line and "] succeeded in " in line:
                    if line.rstrip().endswith(": None"):
                        empty += 1
                    else:
                        ran += 1
    return ran, empty


def pg_sessions(database_url: str) -> int:
    """Sessions ever opened on the database (pg_stat_database, PostgreSQL 14+)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def wait_finished_fast(stack: Stack, uuid: str, timeout: float = 60) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT finished_at IS NOT NULL FROM jobs WHERE uuid = %s", [uuid]
            ).fetchone()
            if row and row[0]:
                return
            if time.monotonic() > deadline:
                stack.check_alive()
                raise BenchError(f"{uuid} unfinished after {timeout:.0f} s")
            time.sleep(0.02)


def print_split(indent: str, times: list[JobTimes], received: dict[str, dt.datetime]) -> None:
    known = [t for t in times if t.uuid in received and t.started_at]
    if not known:
        print(f"{indent}(no worker log times to split the delay)")
        return
    waits = [(received[t.uuid] - t.created_at).total_seconds() for t in known]
    claims = [(t.started_at - received[t.uuid]).total_seconds() for t in known]  # type: ignore[operator]
    print(
        f"{indent}  of which created_at -> task message received by its worker: median "
        f"{ms(median(waits))} ms; received -> started_at (pool hand-off, task start, "
        f"claim): median {ms(median(claims))} ms, p90 {ms(p90(claims))} ms "
        f"({len(known)} of {len(times)} jobs matched in the worker logs)"
    )


def print_floor(floor: Floor, *, machine_per_job: float) -> None:
    budget = (os.cpu_count() or 1) / TARGET_JOBS_PER_SECOND
    task = ", ".join(f"{name} {cpu * 1000:.1f}" for name, cpu in floor.task.items())
    request = ", ".join(f"{name} {cpu * 1000:.1f}" for name, cpu in floor.request.items())
    print(
        "what any job costs this stack before its own work (CPU ms, measured after the batch,\n"
        f"  workers idle, {floor.count} of each):\n"
        f"  a no-op task (crunch.ping, all sent at once, results stored): {task}\n"
        f"  an authenticated GET users/current ({floor.threads} threads): {request}\n"
        f"  /bin/sh -c true started by this process: {floor.spawn * 1000:.1f}\n"
        f"  together {floor.job_floor() * 1000:.1f} CPU ms, of the {budget * 1000:.1f} a job may "
        f"cost for {TARGET_JOBS_PER_SECOND:g} jobs/s on {os.cpu_count()} CPUs; a job in the "
        f"batch cost the machine {machine_per_job * 1000:.1f}"
    )


def report(
    args: argparse.Namespace,
    answers: list[tuple[float, float, dict[str, Any]]],
    times: list[JobTimes],
    idle: list[JobTimes],
    pings_before: list[float],
    pings_after: list[float],
    submit_wall: float,
    drain_wall: float,
    cpu_before: dict[str, float],
    cpu_after: dict[str, float],
    run_job_results: int,
    ping_results: int,
    load_before: float,
    idle_walls: dict[str, tuple[float, float]],
    received: dict[str, dt.datetime],
    sessions: int,
    outcomes: tuple[int, int],
    memory: MemoryWatch,
    floor: Floor | None,
) -> None:
    n = len(times)
    first_created = min(t.created_at for t in times)
    last_created = max(t.created_at for t in times)
    first_started = min(t.started_at for t in times if t.started_at)
    last_finished = max(t.finished_at for t in times if t.finished_at)
    span = (last_finished - first_created).total_seconds()
    rate = n / span
    delays = [t.delay for t in times]
    run_times = [t.run for t in times]
    pings = pings_before + pings_after
    ping_median = median(pings)
    ratio = median(delays) / ping_median
    posts = [answered - sent for sent, answered, _ in answers]
    busy = sum(run_times) / (args.workers * (last_finished - first_started).total_seconds())
    idle_delays = [t.delay for t in idle]

    print()
    print(
        f"stack: crunch serve (1 process) + {args.workers} x crunch worker --concurrency 1; "
        f"PostgreSQL {urlsplit(args.database_url).netloc}, Redis {args.redis_url}; "
        f"{os.cpu_count()} CPUs; 1-minute load average just before the batch "
        f"{load_before:.2f}"
    )
    print(f"script: crunch_scripts/{SCRIPT} = {SCRIPT_TEXT!r}; local runtime")
    if args.what_if:
        print(
            f"WHAT-IF RUN, not the product as it is: {', '.join(args.what_if)} applied in the "
            f"workers (bench/dispatch_worker_settings.py)"
        )
    print()
    print("baseline: crunch.ping round trip (send_task ... .get()), one at a time, workers idle")
    print(
        f"  before the batch: median {ms(median(pings_before))} ms, p90 {ms(p90(pings_before))} ms "
        f"(n={len(pings_before)})"
    )
    print(
        f"  after the batch:  median {ms(median(pings_after))} ms, p90 {ms(p90(pings_after))} ms "
        f"(n={len(pings_after)})"
    )
    print(f"  both:             median {ms(ping_median)} ms")
    print()
    pacing = f", paced at {args.rate:g} jobs/s" if args.rate > 0 else ", as fast as answered"
    print(f"batch: {n} jobs POSTed from {args.submitters} threads{pacing}")
    print(
        f"  POST /jobs latency: median {ms(median(posts))} ms, p90 {ms(p90(posts))} ms; "
        f"all answered after {submit_wall:.2f} s ({n / submit_wall:.1f} POST/s)"
    )
    print(
        f"  rows created over {(last_created - first_created).total_seconds():.2f} s "
        f"(first created_at -> last created_at); all finished after {drain_wall:.2f} s"
    )
    print(f"  first created_at -> last finished_at: {span:.2f} s")
    print(f"  jobs/s = {n} / {span:.2f} s = {rate:.2f}")
    print(
        f"  delay created_at -> started_at: median {ms(median(delays))} ms, "
        f"p90 {ms(p90(delays))} ms, min {ms(min(delays))} ms, max {ms(max(delays))} ms"
    )
    print_split("  ", times, received)
    # The queue: jobs created and not yet started, at its longest.
    events = sorted(
        [(t.created_at, 1) for t in times] + [(t.started_at, -1) for t in times if t.started_at]
    )
    queued = longest = 0
    for _, step in events:
        queued += step
        longest = max(longest, queued)
    created_span = (last_created - first_created).total_seconds()
    if created_span > 0:
        print(
            f"    rows created at {n / created_span:.1f} jobs/s and run at {rate:.1f} jobs/s: "
            f"up to {longest} jobs waited at once (time in that queue is most of the delay)"
        )
    print(
        f"  run started_at -> finished_at:  median {ms(median(run_times))} ms, "
        f"p90 {ms(p90(run_times))} ms"
    )
    print(
        f"  workers busy (sum of runs / ({args.workers} x first start -> last finish)): "
        f"{busy * 100:.0f}%; per job between runs: "
        f"{ms((1 - busy) * args.workers * (last_finished - first_started).total_seconds() / n)}"
        f" ms per worker"
    )
    if idle:
        idle_runs = [t.run for t in idle]
        print()
        print(f"for information: {len(idle)} jobs one at a time (nothing queued)")
        print(
            f"  delay created_at -> started_at: median {ms(median(idle_delays))} ms, "
            f"p90 {ms(p90(idle_delays))} ms = {median(idle_delays) / ping_median:.2f}x ping"
        )
        print(
            f"  run started_at -> finished_at:  median {ms(median(idle_runs))} ms "
            f"(1 worker: at most {1 / median(idle_runs):.1f} jobs/s per worker "
            f"from the run alone)"
        )
        print_split("  ", idle, received)
        # Wall clock of this process against the rows' stamps (same machine clock).
        before_stamp = [t.created_at.timestamp() - idle_walls[t.uuid][0] for t in idle]
        after_stamp = [idle_walls[t.uuid][1] - t.created_at.timestamp() for t in idle]
        print(
            f"  POST sent -> created_at stamped: median {ms(median(before_stamp))} ms "
            f"(routing, parsing, authentication); created_at -> POST answered: median "
            f"{ms(median(after_stamp))} ms (created_at is stamped as the create starts: "
            f"validation, git resolve and internal tag, INSERT, COMMIT, dispatch, answer)"
        )
        answered_to_start = [
            t.started_at.timestamp() - idle_walls[t.uuid][1] for t in idle if t.started_at
        ]
        print(
            f"  POST answered -> started_at: median {ms(median(answered_to_start))} ms "
            f"(negative: the worker had claimed the job before the answer arrived)"
        )
    print()
    print("CPU seconds used during the batch (utime+stime, children included):")
    wall = drain_wall
    ours = 0.0
    for name in cpu_after:
        used = cpu_after[name] - cpu_before.get(name, 0.0)
        if name.startswith("(machine"):
            print(
                f"  {'(rest: other processes; accounting error)':<44} {used - ours:7.2f} s  "
                f"{(used - ours) / n * 1000:6.1f} ms/job"
            )
        else:
            ours += used
        print(f"  {name:<44} {used:7.2f} s  {used / n * 1000:6.1f} ms/job")
    cpus = os.cpu_count() or 1
    print(f"  (capacity: {cpus} CPUs x {wall:.2f} s = {cpus * wall:.2f} s)")
    if floor is not None:
        print_floor(floor, machine_per_job=(cpu_after[MACHINE] - cpu_before[MACHINE]) / n)
    print("worker memory (resident, each worker's main process and pool; --jobs 2200 gives")
    print("  each of 2 workers about 1,000 jobs):")
    for line in memory.lines():
        print(line)
    print(
        f"PostgreSQL sessions opened during the batch: {sessions} "
        f"({sessions / n:.2f} per job; this process's own polling: 1-2)"
    )
    print(
        f"run_job tasks over the whole run: {outcomes[0]} ran a job, {outcomes[1]} found "
        f"nothing to claim (duplicate or re-sent hints)"
    )
    print(
        f"results stored in Redis: {ping_results} (run_job: {run_job_results}; "
        f"expected {2 * args.pings + 10 + args.floor} pings and 0 run_job)"
    )
    print()
    rate_ok = rate >= TARGET_JOBS_PER_SECOND
    print(
        f"jobs/s: {rate:.2f} (target >= {TARGET_JOBS_PER_SECOND:g}: "
        f"{'MET' if rate_ok else 'NOT MET'})"
    )
    print(
        f"batch: median delay / ping median = {ms(median(delays))} / {ms(ping_median)} ms = "
        f"{ratio:.2f}x (for information: mostly time queued behind the batch)"
    )
    if idle_delays:
        idle_ratio = median(idle_delays) / ping_median
        ratio_ok = idle_ratio <= TARGET_RATIO
        print(
            f"idle: median create -> Running / ping median = {ms(median(idle_delays))} / "
            f"{ms(ping_median)} ms = {idle_ratio:.2f}x "
            f"(target <= {TARGET_RATIO:g}x: {'MET' if ratio_ok else 'NOT MET'})"
        )
    else:
        ratio_ok = False
        print("idle: not measured (--idle-jobs 0), so its target is not met")
    growth = memory.worst_growth()
    memory_ok = growth is not None and growth <= 10
    if growth is None:
        print("memory: not measured (a worker ran fewer than 100 jobs), so not met")
    else:
        print(
            f"memory: worst worker growth {growth:+.1f}% from its 100th job to its last "
            f"(target <= +10%: {'MET' if memory_ok else 'NOT MET'})"
        )
    print(f"targets met: {int(rate_ok) + int(ratio_ok) + int(memory_ok)} of 3")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
