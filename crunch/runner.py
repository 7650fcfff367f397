"""Running one claimed job on this machine.

`Runner.run()` owns a run's bookkeeping, the one place that decides how it ends:

1. a per-job token (acting as the submitter; revoked when the run ends);
2. the source tree in `CRUNCH_SRC`: the exact commit, fetched over the API's git HTTP
   endpoint into a per-repository cache (so workers need no disk shared with the API), or a
   writable copy of a command job's uploaded directory (`working_dir`);
3. input collections named by portable data hash in `script_parameters`, copied read-only
   under `TASK_KEEPMOUNT/<pdh>/`;
4. `crunch_scripts/<script>`, or a command job's argv (in its copy of the tree), through a
   runtime, with the environment of DESIGN.md (interface 7) under the job's own
   `environment`; stdout and stderr go, in order, into the job's log chunks;
5. exit 0: Complete; 111: a temporary failure, run again (three tries at most); anything
   else, a timeout (`runtime_constraints.max_run_time`) or a lost commit: Failed;
6. `CRUNCH_OUTPUT` becomes the output collection and the whole log the log collection.

Each attempt is an execution (`jobs.services.executions`): the first starts when the run
does (its log begins at chunk 0), each retry starts another whose log begins where the
previous one's ended, and each ends with its exit code, or with why it was stopped.

The parts it uses: `crunch.sources` (the commit or the uploaded directory), `crunch.runtimes`
(a local process or a container: how the program starts and stops), `crunch.runlog` (the
log's chunks while it runs, and the log collection when it ends).

Cancelling the job in the API stops the script within seconds (the process group, or the
container); the partial log is kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from crunch import pyenv
from crunch.client import ApiClient, ClientConfig, ClientError
from crunch.keepcli import CommandError, get_target, upload_manifest
from crunch.runlog import LogWriter, store_log
from crunch.runtimes import (
    ContainerRuntime,
    ExitWatch,
    LocalRuntime,
    RunFailed,
    Runtime,
    limit_prefix,
    run_as,
)
from crunch.sources import checkout, copy_working_dir
from jobs.exceptions import CrunchError
from jobs.models import Execution, ExecutionState, Job, JobState
from jobs.services import executions, runs
from jobs.services.objects import Actor
from jobs.spec import what_runs

# Re-exported: the runner's parts, where callers and tests have always found them.
__all__ = [
    "ContainerRuntime",
    "LocalRuntime",
    "LogWriter",
    "RunFailed",
    "Runner",
    "Runtime",
    "limit_prefix",
    "store_log",
]

log = logging.getLogger("crunch.runner")

TEMPORARY_FAILURE = 111
MAX_TRIES = 3
CANCEL_POLL_SECONDS = 1.0
# While a program runs: how often its log is stored (if due) and its deadline checked.
TICK_SECONDS = 0.02
_PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")


def work_root() -> Path:
    root = Path(settings.CRUNCH_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True)
    return root


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


# --- the run ------------------------------------------------------------------------------


class Runner:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.log = LogWriter(job.uuid)
        self.token: str | None = None
        self.actor: Actor | None = None
        self.dir = work_root() / job.uuid
        self.user: tuple[int, int] | None = None
        self.runtime: Runtime = (
            ContainerRuntime(self) if job.docker_image_locator else LocalRuntime(self)
        )
        self.execution: Execution | None = None  # the attempt under way
        self.exit_code: int | None = None  # the last attempt's
        self.stopped: tuple[str, str] | None = None  # how and why the last attempt was stopped
        self.pyenv: Path | None = None  # the run's Python environment (crunch/pyenv.py)
        self.hostname: str | None = None  # of its node (or this machine's), once run() starts

    def run(self) -> Job:
        success = False
        output: str | None = None
        node_uuid = self.job.worker_node_uuid
        try:
            # Where it runs, read once: for the log and for each attempt's execution.
            self.hostname = (
                executions.node_hostname(node_uuid=node_uuid) if node_uuid else socket.gethostname()
            )
            self._attempt_start()
            self.actor = runs.job_token_create(
                job=self.job, lifetime=dt.timedelta(seconds=settings.CRUNCH_JOB_TOKEN_TTL)
            )
            assert self.actor.auth is not None and self.actor.auth.api_token is not None
            self.token = self.actor.auth.api_token
            self.client = ApiClient(
                ClientConfig(base_url=settings.CRUNCH_API_URL, token=self.token)
            )
            self.log.note(f"job {self.job.uuid}: {what_runs(self.job)}")
            if node_uuid:
                self.log.note(
                    f"on node {runs.node_name(node_uuid=node_uuid, hostname=self.hostname)}"
                )
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
            copy_working_dir(client=self.client, job=self.job, dest=self.src)
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
        if self.job.python_requirements:
            if self.job.docker_image_locator:
                raise RunFailed("python_requirements are installed for local runs only")
            self.pyenv, resolved = pyenv.ensure(
                work_root() / "pyenvs", list(self.job.python_requirements), self.log, self.user
            )
            runs.job_record_packages(job_uuid=self.job.uuid, packages=resolved)

    def _checkout(self) -> None:
        checkout(job=self.job, token=self.token, dest=self.src, cache_root=work_root() / "repos")

    @property
    def _program(self) -> str:
        return "script" if self.job.command is None else "command"

    # --- execution ------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The script's variables (DESIGN.md interface 7), with the runtime's paths."""
        job, paths = self.job, self.runtime.paths
        # The job's own variables first: the run's own names below cannot be overridden.
        return (
            dict(job.environment or {})
            | dict(job.run_environment or {})
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
            | self._pyenv_variables()
        )

    def _pyenv_variables(self) -> dict[str, str]:
        """The job's Python environment first on PATH (crunch/pyenv.py), if it has one."""
        if self.pyenv is None:
            return {}
        return {
            "VIRTUAL_ENV": str(self.pyenv),
            "PATH": f"{self.pyenv}/bin{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _attempt_start(self) -> None:
        """A new execution, whose log begins with the next chunk."""
        self.log.flush()
        self.exit_code, self.stopped = None, None
        self.execution = executions.execution_start(
            job=self.job,
            node_uuid=self.job.worker_node_uuid,
            hostname=self.hostname,
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
                self.log.note(f"the {self._program} succeeded")
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
            self.log.note(f"the {self._program} failed with exit code {code}")
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
        # What the run said while preparing is stored before the program starts, so that it
        # is in the log even if the worker dies with the program.
        self.log.flush()
        process = self.runtime.start(self._environment())
        reader = threading.Thread(target=self._pump, args=(process,), daemon=True)
        reader.start()
        stopped_because: str | None = None
        # The job was Running when claimed a moment ago: the first look at its state comes a
        # poll interval from now, like every other (a trivial job ends before it).
        last_poll = time.monotonic()
        exited = ExitWatch(process)
        try:
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
                exited.wait(TICK_SECONDS)  # returns as soon as the script exits
        finally:
            exited.close()
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
        manifest_text = upload_manifest(self.client, [str(self.output_dir) + os.sep])
        assert self.actor is not None  # the run's token was made first
        try:
            return runs.job_collection_create(
                actor=self.actor,
                manifest_text=manifest_text,
                name=f"Output of job {self.job.uuid}: {what_runs(self.job)}"[:255],
                owner_uuid=self.job.owner_uuid,
            )
        except CrunchError as exc:  # as the API would have refused it
            raise RunFailed(f"could not record the output: {'; '.join(exc.messages)}") from None

    def _save_log(self) -> str | None:
        self.log.flush()
        if self.actor is None:
            return None
        return store_log(self.client, self.job, self.actor)
