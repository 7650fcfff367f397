"""Running one claimed job on this machine.

`Runner.run()` owns a run's bookkeeping, the one place that decides how it ends:

1. a per-job token (acting as the submitter; revoked when the run ends);
2. the exact commit, fetched over the API's git HTTP endpoint into a per-repository cache
   (so workers need no disk shared with the API), exported into `CRUNCH_SRC`;
3. input collections named by portable data hash in `script_parameters`, copied read-only
   under `TASK_KEEPMOUNT/<pdh>/`;
4. `crunch_scripts/<script>` through a runtime, with the environment of DESIGN.md
   (interface 7); stdout and stderr go, in order, into the job's log chunks;
5. exit 0: Complete; 111: a temporary failure, run again (three tries at most); anything
   else, a timeout (`runtime_constraints.max_run_time`) or a lost commit: Failed;
6. `CRUNCH_OUTPUT` becomes the output collection and the whole log the log collection.

Each attempt is an execution (`jobs.services.executions`): the first starts when the run
does (its log begins at chunk 0), each retry starts another whose log begins where the
previous one's ended, and each ends with its exit code, or with why it was stopped.

Two runtimes start and stop the script:

- `LocalRuntime` (no `docker_image_locator`): a process in its own process group, as
  `run_as()`; the paths the script sees are the worker's own.
- `ContainerRuntime` (the job has an image): the image collection's `sha256:<id>.tar` is
  loaded into the engine (`crunch.dockercli.container_cli()`) unless the engine has the id,
  and `<cli> run --rm` runs the script in it, with the run's directories mounted at fixed
  paths (`CONTAINER_PATHS`, spec §7.4) and only `ARVADOS_`/`CRUNCH_`/`JOB_`/`TASK_`
  variables and `HOME` passed in. `CRUNCH_CONTAINER_RUN_ARGS` adds run options (network,
  limits); by default the engine's own defaults apply.

Cancelling the job in the API stops the script within seconds (the process group, or the
container); the partial log is kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from crunch.client import ApiClient, ClientConfig, ClientError
from crunch.dockercli import container_cli
from crunch.keepcli import CommandError, fetch_tree, get_target, put_paths
from jobs.exceptions import InvalidRequest
from jobs.models import Execution, ExecutionState, Job, JobState
from jobs.placement import Requirements
from jobs.services import executions, runs
from jobs.spec import what_runs

log = logging.getLogger("crunch.runner")

TEMPORARY_FAILURE = 111
MAX_TRIES = 3
CANCEL_POLL_SECONDS = 1.0
KILL_GRACE_SECONDS = 3.0
# A container's first process ignores SIGTERM unless it handles it (it is pid 1), so the
# grace period is short: a cancelled container is gone within 5 s.
CONTAINER_KILL_GRACE_SECONDS = 1.0
CONTAINER_CLI_TIMEOUT = 60
IMAGE_LOAD_TIMEOUT = 3600
LOG_FLUSH_SECONDS = 0.05  # followers see a line about this soon after it is written
LOG_FLUSH_BYTES = 64 * 1024
_PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
# The file an image collection holds (v2 `sha256:<id>.tar`, or v1 `<id>.tar`; jobs/docker.py).
_IMAGE_FILE_RE = re.compile(r"^(?:sha256:)?([0-9A-Fa-f]{64})\.tar\Z")
_IMAGE_ID_RE = re.compile(r"^[0-9a-f]{64}\Z")
# What passes into a container (spec §7.4), besides HOME.
CONTAINER_ENV_PREFIXES = ("ARVADOS_", "CRUNCH_", "JOB_", "TASK_")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class RunFailed(Exception):
    """The run cannot go on; the message goes to the job's log."""


def work_root() -> Path:
    root = Path(settings.CRUNCH_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_as() -> tuple[int, int] | None:
    """The uid and gid scripts run as: a worker running as root drops to CRUNCH_RUN_AS
    (default `nobody`), so a script can write only its own output and scratch directories;
    otherwise scripts run as the worker's user."""
    if os.geteuid() != 0:
        return None
    name = settings.CRUNCH_RUN_AS
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RunFailed(f"CRUNCH_RUN_AS names no user: {name!r}") from None
    return entry.pw_uid, entry.pw_gid


def parameter_env(parameters: dict[str, Any]) -> dict[str, str]:
    """`JOB_PARAMETER_<NAME>` per top-level parameter (a–z upper-cased), text as is, other
    values as JSON; and `JOB_PARAMETERS`, the whole object."""
    env = {"JOB_PARAMETERS": json.dumps(parameters)}
    for name, value in parameters.items():
        key = "JOB_PARAMETER_" + re.sub(r"[a-z]", lambda m: m.group(0).upper(), name)
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            continue  # not a usable environment variable name; JOB_PARAMETERS has it
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def input_pdhs(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, str) and _PDH_RE.match(value):
        found.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            found |= input_pdhs(item)
    elif isinstance(value, list):
        for item in value:
            found |= input_pdhs(item)
    return found


class LogWriter:
    """Ordered, batched log chunks: flushed every LOG_FLUSH_SECONDS or LOG_FLUSH_BYTES."""

    def __init__(self, job_uuid: str) -> None:
        self.job_uuid = job_uuid
        self.seq: int | None = None  # known at the first flush
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        """Buffer text (from any thread); `tick` and `flush`, on the runner's thread, store
        it, so the database is used from one thread only."""
        with self.lock:
            self.pending.append(text)
            self.pending_bytes += len(text)

    def note(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H:%M:%S")
        self.write(f"{stamp} crunch: {message}\n")

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def tick(self) -> None:
        """Store what waited LOG_FLUSH_SECONDS, or LOG_FLUSH_BYTES of it (called often while
        the script runs)."""
        with self.lock:
            if self.pending and (
                self.pending_bytes >= LOG_FLUSH_BYTES
                or time.monotonic() - self.last_flush >= LOG_FLUSH_SECONDS
            ):
                self._flush()

    def next_seq(self) -> int:
        """The number the next chunk gets: after what is stored already (the sweeper's notes
        while the job was queued), looked up once, on the runner's thread."""
        if self.seq is None:
            self.seq = runs.job_log_next_seq(job_uuid=self.job_uuid)
        return self.seq

    def _flush(self) -> None:
        if self.pending:
            seq = self.next_seq()
            runs.job_log_append(job_uuid=self.job_uuid, seq=seq, text="".join(self.pending))
            self.seq = seq + 1
        self.pending, self.pending_bytes = [], 0
        self.last_flush = time.monotonic()


# --- runtimes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptPaths:
    """The run's directories as the script sees them."""

    tmp: str  # CRUNCH_TMP, the working directory
    src: str  # CRUNCH_SRC
    output: str  # CRUNCH_OUTPUT
    job_work: str  # JOB_WORK
    task_work: str  # TASK_WORK and HOME
    keep: str  # TASK_KEEPMOUNT


# Inside a container (spec §7.4 for JOB_WORK, TASK_WORK and TASK_KEEPMOUNT).
CONTAINER_PATHS = ScriptPaths(
    tmp="/crunch",
    src="/crunch/src",
    output="/crunch/output",
    job_work="/tmp/crunch-job-work",
    task_work="/tmp/crunch-job-task-work",
    keep="/keep",
)


class Runtime:
    """Starts and stops a run's script; `Runner` keeps everything else."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @property
    def paths(self) -> ScriptPaths:
        raise NotImplementedError

    def prepare(self) -> None:
        """Called once before the first attempt, after the checkout."""

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one attempt: stdout carries stdout and stderr, in order."""
        raise NotImplementedError

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop the attempt (cancel, timeout); returns once it is gone or cannot be."""
        raise NotImplementedError

    def close(self) -> None:
        """Called once when the run ends, however it ends."""


def limit_prefix(constraints: dict[str, Any]) -> list[str]:
    """Resource limits for a local run, from what the job asked for (`jobs.placement`'s
    reading of `vcpus`/`ram` or `min_cores_per_node`/`min_ram_mb_per_node`): its data
    segment (heap and anonymous memory) capped at the RAM, and its CPUs at the whole number
    of cores that covers `vcpus` (util-linux `prlimit` and `taskset`, where installed)."""
    try:
        wanted = Requirements.of(constraints)
    except InvalidRequest:
        return []  # refused at submit; a row written otherwise runs without limits
    prefix: list[str] = []
    if wanted.ram > 0 and shutil.which("prlimit"):
        prefix += ["prlimit", f"--data={wanted.ram}:{wanted.ram}"]
    cores = math.ceil(wanted.cpus)
    if 0 < cores < (os.cpu_count() or 1) and shutil.which("taskset"):
        prefix += ["taskset", "--cpu-list", f"0-{cores - 1}"]
    return prefix


class LocalRuntime(Runtime):
    """The script as a local process in its own process group, as `run_as()`."""

    @property
    def paths(self) -> ScriptPaths:
        r = self.runner
        return ScriptPaths(
            tmp=str(r.dir),
            src=str(r.src),
            output=str(r.output_dir),
            job_work=str(r.job_work),
            task_work=str(r.task_work),
            keep=str(r.keep),
        )

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        r = self.runner
        base = {
            k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
        }
        owner: dict[str, Any] = {}
        if r.user is not None:
            owner = {"user": r.user[0], "group": r.user[1], "extra_groups": []}
        program = (
            list(r.job.command)
            if r.job.command is not None
            else [str(r.src / "crunch_scripts" / str(r.job.script))]
        )
        return subprocess.Popen(
            [*limit_prefix(r.job.runtime_constraints or {}), *program],
            # A command runs in its writable copy of the source tree; a script in CRUNCH_TMP.
            cwd=r.src if r.job.command is not None else r.dir,
            env=base | env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **owner,
        )

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the whole process group, SIGKILL after a grace period."""
        _stop_group(process, KILL_GRACE_SECONDS)


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def container_run_args() -> list[str]:
    """CRUNCH_CONTAINER_RUN_ARGS, split like a shell would (but never run by one) when the
    settings load."""
    return list(settings.CRUNCH_CONTAINER_RUN_ARGS)


class ContainerRuntime(Runtime):
    """The script in a container of the job's image, through the engine's CLI.

    `<cli> run --rm --name crunch-<job uuid> --pull never --user … [CRUNCH_CONTAINER_RUN_ARGS]
    -v <src>:/crunch/src:ro -v <keep>:/keep:ro -v <output>:/crunch/output -v … -e NAME …
    -e HOME=… --workdir /crunch --entrypoint /crunch/src/crunch_scripts/<script> <image id>`

    Every argument is a list element. Variable values travel in the CLI's environment and are
    named with `-e NAME`, so neither a token nor a parameter appears in a command line. The
    image is always its validated 64-hex id, never user text."""

    @property
    def paths(self) -> ScriptPaths:
        return CONTAINER_PATHS

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner)
        self.cli = ""
        self.image_id = ""
        self.name = f"crunch-{runner.job.uuid}"
        self.started = False

    def _cli(
        self, *args: str, timeout: float = CONTAINER_CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def prepare(self) -> None:
        r = self.runner
        locator = r.job.docker_image_locator or ""
        names = [name for name in fetch_tree(r.client, locator).files if _IMAGE_FILE_RE.match(name)]
        if len(names) != 1:
            raise RunFailed(f"the image collection {locator} holds no single <image id>.tar")
        match = _IMAGE_FILE_RE.match(names[0])
        assert match is not None
        self.image_id = match.group(1).lower()
        assert _IMAGE_ID_RE.match(self.image_id)
        self.cli = container_cli(settings.CRUNCH_CONTAINER_CLI)
        if self._has_image():
            r.log.note(f"image sha256:{self.image_id} is in {self.cli}")
            return
        r.log.note(f"loading image sha256:{self.image_id} from {locator} into {self.cli}")
        archive = r.dir / "image.tar"
        try:
            get_target(r.client, f"{locator}/{names[0]}", str(archive), force=True)
            loaded = self._cli("load", "-i", str(archive), timeout=IMAGE_LOAD_TIMEOUT)
        finally:
            archive.unlink(missing_ok=True)
        if loaded.returncode != 0:
            raise RunFailed(f"{self.cli} load failed: {loaded.stderr.strip()}")
        if not self._has_image():
            raise RunFailed(f"{self.cli} loaded {names[0]} but has no image {self.image_id}")

    def _has_image(self) -> bool:
        found = self._cli("image", "inspect", "--format", "{{.Id}}", self.image_id)
        return (
            found.returncode == 0 and found.stdout.strip().removeprefix("sha256:") == self.image_id
        )

    def _volumes(self) -> list[str]:
        r, p = self.runner, self.paths
        mounts = [
            (r.src, p.src, "rw" if r.job.command is not None else "ro"),
            (r.keep, p.keep, "ro"),
            (r.output_dir, p.output, "rw"),
            (r.job_work, p.job_work, "rw"),
            (r.task_work, p.task_work, "rw"),
        ]
        args: list[str] = []
        for host, inside, mode in mounts:
            if ":" in str(host) or "," in str(host):
                raise RunFailed(f"{host}: a container mount source cannot hold ':' or ','")
            args += ["--volume", f"{host}:{inside}:{mode}"]
        return args

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        r = self.runner
        own = set(r.job.environment or {})
        passed = {
            k: v
            for k, v in env.items()
            if (k.startswith(CONTAINER_ENV_PREFIXES) or k in own) and k != "HOME"
        }
        bad = [k for k in passed if not _ENV_NAME_RE.match(k)]
        if bad:
            raise RunFailed(f"cannot pass {bad[0]!r} into a container")
        user = ["--user", f"{r.user[0]}:{r.user[1]}"] if r.user is not None else []
        argv = [
            self.cli,
            "run",
            "--rm",
            "--name",
            self.name,
            "--pull",
            "never",
            *user,
            *container_run_args(),
            *self._volumes(),
            *[arg for name in sorted(passed) for arg in ("--env", name)],
            "--env",
            f"HOME={self.paths.task_work}",
            "--workdir",
            self.paths.src if r.job.command is not None else self.paths.tmp,
            "--entrypoint",
            r.job.command[0]
            if r.job.command is not None
            else f"{self.paths.src}/crunch_scripts/{r.job.script}",
            self.image_id,
            *(r.job.command[1:] if r.job.command is not None else []),
        ]
        self._remove()  # a container of an earlier attempt, or of a worker that died
        self.started = True
        return subprocess.Popen(
            argv,
            cwd=r.dir,
            # The CLI's own environment (its configuration) and the values `--env NAME` reads.
            env=dict(os.environ) | passed,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the container, SIGKILL after a short grace, then the CLI process and
        the container itself go."""
        for signal_name, grace in (("TERM", CONTAINER_KILL_GRACE_SECONDS), ("KILL", 10.0)):
            try:
                self._cli("kill", "--signal", signal_name, self.name, timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        _stop_group(process, 0.5)
        self._remove()

    def _remove(self) -> None:
        try:
            self._cli("rm", "--force", self.name, timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("%s rm --force %s timed out", self.cli, self.name)

    def close(self) -> None:
        if self.started:
            self._remove()


# --- the run ------------------------------------------------------------------------------


class Runner:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.log = LogWriter(job.uuid)
        self.token: str | None = None
        self.dir = work_root() / job.uuid
        self.user: tuple[int, int] | None = None
        self.runtime: Runtime = (
            ContainerRuntime(self) if job.docker_image_locator else LocalRuntime(self)
        )
        self.execution: Execution | None = None  # the attempt under way
        self.exit_code: int | None = None  # the last attempt's
        self.stopped: tuple[str, str] | None = None  # how and why the last attempt was stopped

    def run(self) -> Job:
        success = False
        output: str | None = None
        try:
            self._attempt_start()
            self.token = runs.job_token_create(
                job=self.job, lifetime=dt.timedelta(seconds=settings.CRUNCH_JOB_TOKEN_TTL)
            )
            self.client = ApiClient(
                ClientConfig(base_url=settings.CRUNCH_API_URL, token=self.token)
            )
            self.log.note(f"job {self.job.uuid}: {what_runs(self.job)}")
            if self.job.worker_node_uuid:
                self.log.note(f"on node {runs.node_name(node_uuid=self.job.worker_node_uuid)}")
            self._prepare()
            success = self._execute()
            if success:
                output = self._save_output()
                self._attempt_end(ExecutionState.COMPLETE)
        except (RunFailed, ClientError, CommandError, OSError, subprocess.SubprocessError) as exc:
            self.log.note(f"failed: {exc}")
            self._attempt_end(ExecutionState.FAILED, reason=f"failed: {exc}")
            success = False
        finally:
            self._attempt_end(ExecutionState.FAILED, reason="the run ended unexpectedly")
            try:
                self.runtime.close()
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("could not clean up after %s: %s", self.job.uuid, exc)
            log_pdh = self._save_log()
            job = runs.job_finish(
                job_uuid=self.job.uuid,
                success=success,
                output=output,
                log_pdh=log_pdh,
                tasks_summary={
                    "done": int(success),
                    "running": 0,
                    "todo": 0,
                    "failed": int(not success),
                },
            )
            if self.token:
                runs.job_token_revoke(token_uuid_or_secret=self.token)
            shutil.rmtree(self.dir, ignore_errors=True)
        return job

    # --- preparation ----------------------------------------------------------------------

    def _prepare(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.src = self.dir / "src"
        self.output_dir = self.dir / "output"
        self.job_work = self.dir / "work"
        self.task_work = self.dir / "task"
        self.keep = self.dir / "keep"
        for path in (self.src, self.output_dir, self.job_work, self.task_work, self.keep):
            path.mkdir(parents=True)
        self.dir.chmod(0o755)
        self.user = run_as()
        if self.user is not None:
            for path in (self.output_dir, self.job_work, self.task_work):
                os.chown(path, *self.user)
        if self.job.working_dir:
            self._copy_working_dir(self.job.working_dir)
        elif self.job.repository:
            self._checkout()
        if self.job.command is not None and self.user is not None:
            # The command writes in its copy of the tree.
            for root, dirs, files in os.walk(self.src):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), *self.user)
            os.chown(self.src, *self.user)
        for pdh in sorted(input_pdhs(self.job.script_parameters or {})):
            destination = self.keep / pdh
            get_target(self.client, pdh, str(destination), force=False)
            for root, dirs, files in os.walk(destination):
                for name in files:
                    os.chmod(os.path.join(root, name), 0o444)
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o555)
            os.chmod(destination, 0o555)
        self.runtime.prepare()

    def _copy_working_dir(self, pdh: str) -> None:
        """A writable copy of the uploaded directory: the command's working directory."""
        if not _PDH_RE.match(pdh):
            raise RunFailed(f"working_dir {pdh!r} is not a portable data hash")
        get_target(self.client, pdh, str(self.src) + os.sep, force=True)
        # Collections keep no file modes: a program named by a path into the tree (`./run.sh`)
        # is made executable, as it was where it was uploaded from.
        program = (self.job.command or [""])[0]
        if "/" in program and not program.startswith("/"):
            path = (self.src / program).resolve()
            if path.is_file() and path.is_relative_to(self.src.resolve()):
                path.chmod(path.stat().st_mode | 0o111)

    def _git_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GIT_") and k != "ARVADOS_API_TOKEN"
        }
        # The token travels in a header set through the environment, never in argv.
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Bearer {self.token}",
            GIT_ALLOW_PROTOCOL="http:https:git",
        )
        return env

    def _checkout(self) -> None:
        commit = self.job.script_version or ""
        if not _SHA_RE.match(commit):
            raise RunFailed(f"script_version {commit!r} is not a commit")
        repository = self.job.repository or ""
        url = (
            repository
            if re.match(r"^(https?|git)://", repository)
            else f"{settings.CRUNCH_API_URL}/git/{repository}.git"
        )
        cache = work_root() / "repos" / (hashlib.sha1(url.encode()).hexdigest() + ".git")
        env = self._git_env()

        def git(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ["git", f"--git-dir={cache}", *args],
                env=env,
                capture_output=True,
                timeout=settings.CRUNCH_GIT_TIMEOUT,
                **kw,
            )

        if not (cache / "HEAD").exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "-q", "--bare", str(cache)],
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )
        if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            fetched = git(
                "fetch",
                "-q",
                "--force",
                "--",
                url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            )
            if fetched.returncode != 0:
                raise RunFailed(
                    f"fetching {repository} failed: "
                    f"{fetched.stderr.decode(errors='replace').strip()}"
                )
            if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
                raise RunFailed(f"commit {commit} is no longer in {repository}")
        archive = git("archive", "--format=tar", commit)
        if archive.returncode != 0:
            raise RunFailed(f"git archive {commit} failed")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as tar:
            tar.extractall(self.src, filter="data")
        if self.job.command is not None:
            return
        script = self.src / "crunch_scripts" / str(self.job.script)
        if not script.is_file():
            raise RunFailed(f"crunch_scripts/{self.job.script} is not in commit {commit}")
        script.chmod(script.stat().st_mode | 0o111)

    # --- execution ------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The script's variables (DESIGN.md interface 7), with the runtime's paths."""
        job, paths = self.job, self.runtime.paths
        # The job's own variables first: the run's own names below cannot be overridden.
        return (
            dict(job.environment or {})
            | parameter_env(job.script_parameters or {})
            | {
                "JOB_UUID": job.uuid,
                "CRUNCH_JOB_UUID": job.uuid,
                "JOB_SCRIPT": job.script or "",
                "TASK_SEQUENCE": "0",
                "TASK_QSEQUENCE": "0",
                "ARVADOS_API_HOST": settings.CRUNCH_API_URL,
                "ARVADOS_API_TOKEN": self.token or "",
                "CRUNCH_SRC": paths.src,
                "CRUNCH_SRC_COMMIT": job.script_version or "",
                "CRUNCH_SRC_URL": job.repository or job.working_dir or "",
                "CRUNCH_TMP": paths.tmp,
                "JOB_WORK": paths.job_work,
                "TASK_WORK": paths.task_work,
                "HOME": paths.task_work,
                "TASK_KEEPMOUNT": paths.keep,
                "CRUNCH_OUTPUT": paths.output,
            }
        )

    def _attempt_start(self) -> None:
        """A new execution, whose log begins with the next chunk."""
        self.log.flush()
        self.exit_code, self.stopped = None, None
        node_uuid = self.job.worker_node_uuid
        self.execution = executions.execution_start(
            job=self.job,
            node_uuid=node_uuid,
            hostname=None if node_uuid else socket.gethostname(),
            log_seq=self.log.next_seq(),
        )

    def _attempt_end(self, state: str, *, reason: str | None = None) -> None:
        """End the execution under way, if any, with the last exit code."""
        if self.execution is not None:
            executions.execution_finish(
                execution=self.execution, state=state, exit_code=self.exit_code, reason=reason
            )
            self.execution = None

    def _execute(self) -> bool:
        for attempt in range(1, MAX_TRIES + 1):
            if attempt > 1:
                self._attempt_start()
            code = self.exit_code = self._run_once()
            if code == 0:
                self.log.note("the script succeeded")
                return True  # the execution ends once the output is saved
            if code == TEMPORARY_FAILURE and attempt < MAX_TRIES:
                self.log.note(
                    f"temporary failure (exit {code}); trying again ({attempt + 1} of {MAX_TRIES})"
                )
                self._attempt_end(
                    ExecutionState.FAILED, reason=f"temporary failure (exit {code}): tried again"
                )
                for path in (self.output_dir, self.task_work):
                    shutil.rmtree(path, ignore_errors=True)
                    path.mkdir()
                    if self.user is not None:
                        os.chown(path, *self.user)
                continue
            if code is None:
                state, why = self.stopped or (ExecutionState.FAILED, "stopped")
                self._attempt_end(state, reason=why)
                return False
            self.log.note(f"the script failed with exit code {code}")
            self._attempt_end(ExecutionState.FAILED)
            return False
        return False

    def _run_once(self) -> int | None:
        """Run the script; its exit code, or None when it was stopped (cancel, timeout)."""
        limit = (self.job.runtime_constraints or {}).get("max_run_time")
        deadline = (
            time.monotonic() + float(limit)
            if isinstance(limit, int | float) and limit > 0
            else None
        )
        process = self.runtime.start(self._environment())
        reader = threading.Thread(target=self._pump, args=(process,), daemon=True)
        reader.start()
        stopped_because: str | None = None
        last_poll = 0.0
        while process.poll() is None:
            now = time.monotonic()
            if deadline is not None and now > deadline:
                stopped_because = f"the run took longer than max_run_time ({limit} s)"
                self.stopped = (ExecutionState.FAILED, stopped_because)
            elif now - last_poll >= CANCEL_POLL_SECONDS:
                last_poll = now
                if runs.job_state(job_uuid=self.job.uuid) != JobState.RUNNING:
                    stopped_because = "the job was cancelled"
                    self.stopped = (ExecutionState.CANCELLED, stopped_because)
            if stopped_because:
                self.runtime.stop(process)
                break
            self.log.tick()
            try:
                process.wait(timeout=0.02)  # returns as soon as the script exits
            except subprocess.TimeoutExpired:
                pass
        process.wait()
        reader.join(timeout=10)
        self.log.flush()
        if stopped_because:
            self.log.note(f"stopped: {stopped_because}")
            return None
        return process.returncode

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            # Only the script's last line can lack its newline: end it, so that what
            # follows in the log (crunch's own lines) starts a line of its own.
            text = line.decode("utf-8", "replace")
            self.log.write(text if text.endswith("\n") else text + "\n")
        process.stdout.close()

    # --- results --------------------------------------------------------------------------

    def _save_output(self) -> str:
        collection = put_paths(
            self.client,
            [str(self.output_dir) + os.sep],
            name=f"Output of job {self.job.uuid}: {what_runs(self.job)}"[:255],
            owner_uuid=self.job.owner_uuid,
        )
        return str(collection["portable_data_hash"])

    def _save_log(self) -> str | None:
        self.log.flush()
        if self.token is None:
            return None
        return store_log(self.client, self.job)


def store_log(client: ApiClient, job: Job) -> str | None:
    """Store a job's log chunks as its log collection (`<uuid>.log.txt`); its PDH, or None
    when it could not be stored (said in the worker's log). The runner does this when a run
    ends, the sweeper for a job whose runner is gone."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{job.uuid}.log.txt"
            path.write_text(runs.job_log_text(job_uuid=job.uuid))
            collection = put_paths(
                client,
                [str(path)],
                name=f"Log of job {job.uuid}: {what_runs(job)}"[:255],
                owner_uuid=job.owner_uuid,
            )
            return str(collection["portable_data_hash"])
    except (ClientError, CommandError, OSError) as exc:
        log.warning("could not save the log of %s: %s", job.uuid, exc)
        return None
