"""How a run's program is started and stopped: the `Runtime`s.

- `LocalRuntime` (no `docker_image_locator`): a process in its own process group, as
  `run_as()`, held to the job's CPUs and memory (`limit_prefix`); the paths it sees are the
  worker's own.
- `ContainerRuntime` (the job has an image): the image collection's `sha256:<id>.tar` is
  loaded into the engine (`crunch.dockercli.container_cli()`) unless the engine has the id,
  and `<cli> run --rm` runs the program in it, with the run's directories mounted at fixed
  paths (`CONTAINER_PATHS`, spec §7.4) and only `ARVADOS_`/`CRUNCH_`/`JOB_`/`TASK_`
  variables, the job's own environment (and the variables naming its instance) and `HOME`
  passed in. `CRUNCH_CONTAINER_RUN_ARGS`
  adds run options (network, limits); by default the engine's own defaults apply.
  `runtime_constraints.mounts` (`container_mounts`) also mounts parts of the source tree
  (read-only) or of the output directory (writable) at other paths in the container, where
  a job expects its inputs and leaves its results (the Bacalhau-style door's InputSources
  and ResultPaths).

A script job runs `crunch_scripts/<script>` in CRUNCH_TMP; a command job runs its argv in its
writable copy of the source tree (the container's entrypoint and arguments).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from crunch.dockercli import container_cli
from crunch.keepcli import fetch_tree, get_target
from jobs.exceptions import InvalidRequest
from jobs.placement import Requirements

if TYPE_CHECKING:
    from crunch.runner import Runner

log = logging.getLogger("crunch.runner")

KILL_GRACE_SECONDS = 3.0
# A container's first process ignores SIGTERM unless it handles it (it is pid 1), so the
# grace period is short: a cancelled container is gone within 5 s.
CONTAINER_KILL_GRACE_SECONDS = 1.0
CONTAINER_CLI_TIMEOUT = 60
IMAGE_LOAD_TIMEOUT = 3600
# The file an image collection holds (v2 `sha256:<id>.tar`, or v1 `<id>.tar`; jobs/docker.py).
_IMAGE_FILE_RE = re.compile(r"^(?:sha256:)?([0-9A-Fa-f]{64})\.tar\Z")
_IMAGE_ID_RE = re.compile(r"^[0-9a-f]{64}\Z")
# What passes into a container (spec §7.4), besides HOME.
CONTAINER_ENV_PREFIXES = ("ARVADOS_", "CRUNCH_", "JOB_", "TASK_")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class RunFailed(Exception):
    """The run cannot go on; the message goes to the job's log."""


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


MOUNT_SOURCES = ("src", "output")
_MOUNT_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,250}\Z")
_SUBPATH_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\Z")


def container_mounts(runtime_constraints: Any) -> list[tuple[str, str, str]]:
    """`runtime_constraints.mounts`: `[{"source": "src"|"output", "subpath": "inputs/a",
    "path": "/inputs/a"}, ...]` as (source, subpath, path); InvalidRequest says what is
    wrong. Paths are absolute, outside /crunch, /keep and /tmp/crunch-*, without `..`."""
    value = (
        (runtime_constraints or {}).get("mounts") if isinstance(runtime_constraints, dict) else None
    )
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 64:
        raise InvalidRequest("runtime_constraints.mounts must be a list of at most 64 mounts")
    mounts = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidRequest("runtime_constraints.mounts: each mount must be an object")
        source, subpath, path = item.get("source"), item.get("subpath"), item.get("path")
        if source not in MOUNT_SOURCES:
            raise InvalidRequest("runtime_constraints.mounts: source must be src or output")
        if (
            not isinstance(subpath, str)
            or not _SUBPATH_RE.match(subpath)
            or ".." in subpath.split("/")
        ):
            raise InvalidRequest(f"runtime_constraints.mounts: bad subpath {subpath!r}")
        reserved = ("/crunch", "/keep", "/tmp/crunch-job-work", "/tmp/crunch-job-task-work")
        if (
            not isinstance(path, str)
            or not _MOUNT_PATH_RE.match(path)
            or ".." in path.split("/")
            or path == "/"
            or any(path == r or path.startswith(r + "/") for r in reserved)
        ):
            raise InvalidRequest(f"runtime_constraints.mounts: {path!r} cannot be a mount path")
        mounts.append((source, subpath, path.rstrip("/")))
    return mounts


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


class ExitWatch:
    """Waits for a started program to end, woken the moment it does.

    `Popen.wait(timeout=...)` polls: it sleeps 0.5 ms, then 1, 2, 4... between looks, so a
    program that ends after 2 ms is seen to have ended up to 2 ms later, on every run. A
    pidfd (Linux 5.3 and later) becomes readable when its process ends; waiting on it with
    `poll` returns at once. Where there is none, `Popen.wait` polls as before. `close()`
    when done."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._fd: int | None = None
        self._poll: select.poll | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                # Not reaped before this (nothing waits for it yet), so the pid is still its.
                self._fd = pidfd_open(process.pid)
            except OSError:  # a kernel without pidfds, or no descriptor to spare: poll
                return
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        """Return once the program has ended, or after `timeout` seconds (`process.poll()`
        then says which, and reaps it)."""
        if self._poll is not None:
            self._poll.poll(timeout * 1000)
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._poll = None, None


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


def owner_prefix(user: tuple[int, int] | None) -> tuple[list[str], dict[str, Any]]:
    """How a local run becomes `user` (uid, gid) with no supplementary groups: a command
    prefix and the `subprocess.Popen` arguments that go with it.

    With util-linux `setpriv`, the program's own process changes user before it execs the
    program, and the worker starts it like any other child (`subprocess` uses vfork).
    Asking `subprocess` to change user instead makes it fork the whole worker, a copy of
    its page tables per run: 19 ms of CPU for a worker holding 200 MB against 4 ms
    (measured).

    `setpriv` keeps root's capabilities until its own exec, so it execs `/bin/sh`, which
    has lost them, and the shell looks the program up in PATH as the user: a program the
    user could not reach is not found, as with `subprocess` (the shell adds PWD, the
    working directory, to the environment, as any shell script would). The numbers come
    from `run_as()`, never from the job."""
    if user is None:
        return [], {}
    uid, gid = user
    setpriv = _setpriv()
    if setpriv is None:
        return [], {"user": uid, "group": gid, "extra_groups": []}
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--",
        "/bin/sh",
        "-c",
        'exec "$@"',
        "crunch-run",
    ], {}


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


# The worker's variables a local run sees, beside its own (DESIGN.md interface 7).
_PASSED_ON = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


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
        if (r.job.runtime_constraints or {}).get("mounts"):
            raise RunFailed("runtime_constraints.mounts need a Docker image to mount into")
        base = {k: os.environ[k] for k in _PASSED_ON if k in os.environ}
        become, owner = owner_prefix(r.user)
        program = (
            list(r.job.command)
            if r.job.command is not None
            else [str(r.src / "crunch_scripts" / str(r.job.script))]
        )
        return subprocess.Popen(
            [*become, *limit_prefix(r.job.runtime_constraints or {}), *program],
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
        try:
            extra = container_mounts(r.job.runtime_constraints)
        except InvalidRequest as exc:
            raise RunFailed(str(exc)) from None
        for source, subpath, inside in extra:
            base = r.src if source == "src" else r.output_dir
            host = base.joinpath(*subpath.split("/"))
            if source == "output":
                host.mkdir(parents=True, exist_ok=True)
                owner = r.output_dir.stat()  # writable by the run's user, as the output is
                for made in [host, *host.parents]:
                    if made == r.output_dir:
                        break
                    os.chown(made, owner.st_uid, owner.st_gid)
                    made.chmod(owner.st_mode & 0o7777)
            elif not host.exists():
                raise RunFailed(f"{subpath} is not in the job's source tree")
            mounts.append((host, inside, "ro" if source == "src" else "rw"))
        args: list[str] = []
        for host, inside, mode in mounts:
            if ":" in str(host) or "," in str(host):
                raise RunFailed(f"{host}: a container mount source cannot hold ':' or ','")
            args += ["--volume", f"{host}:{inside}:{mode}"]
        return args

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        r = self.runner
        own = set(r.job.environment or {}) | set(r.job.run_environment or {})
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
