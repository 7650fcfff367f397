"""Python environments for jobs that list `python_requirements`: one virtualenv per distinct
(normalised) list on each worker, built the first time a job needs it and reused by every
later job with the same list.

The build runs `python -m venv` and `pip install` with the requirements as arguments after
`--` (never through a shell; the job service only accepts requirement lines, never options),
its output going into the job's log. A failed install fails the job with pip's last lines.
Concurrent jobs on one worker wait for one build under a file lock; a build that died half
way (no `.ready` marker) is thrown away and done again. What pip resolved (`{name:
version}`) is recorded on the job.

When jobs run as an unprivileged user (CRUNCH_RUN_AS), so does the build: installing a
package can run its code. The finished environment then belongs to root and is read-only for
that user, so that no job can change what a later job with the same list runs. Its
interpreter is the first `python3` on the worker's PATH that the user can reach.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from crunch.runlog import LogWriter
from crunch.runtimes import RunFailed

READY = ".ready"
RESOLVED = "resolved.json"
PIP_TIMEOUT = 1800


def environment_key(requirements: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(requirements)).encode()).hexdigest()[:24]


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can execute `path` (and reach it)."""
    real = path.resolve()
    for part in (real, *real.parents):
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def interpreter(user: tuple[int, int] | None) -> str:
    """The Python the environment is built on: this process's own, or for an unprivileged
    user the first `python3` on PATH that user can run."""
    if user is None:
        return sys.executable
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / "python3"
        if candidate.is_file() and _reachable_by_others(candidate):
            return str(candidate)
    raise RunFailed("no python3 on the worker's PATH that jobs' user can run")


def ensure(
    root: Path, requirements: list[str], log: LogWriter, user: tuple[int, int] | None = None
) -> tuple[Path, dict[str, str]]:
    """The virtualenv for `requirements` under `root` (built if needed, as `user` when
    given) and what it holds."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / environment_key(requirements)
    with open(root / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / READY).exists():
            log.note(
                f"reusing the Python environment {path.name} ({len(requirements)} requirements)"
            )
        else:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            as_user: dict[str, Any] = {}
            if user is not None:
                os.chown(path, *user)
                as_user = {"user": user[0], "group": user[1], "extra_groups": []}
            env = _build_environment(path)
            log.note(f"building the Python environment {path.name}: {' '.join(requirements)}")
            _run(
                [interpreter(user), "-m", "venv", str(path)],
                log,
                what="python -m venv",
                env=env,
                as_user=as_user,
            )
            pip = [str(path / "bin" / "python"), "-m", "pip"]
            _run(
                [*pip, "install", "--no-input", "--disable-pip-version-check", "--", *requirements],
                log,
                what="pip install",
                env=env,
                as_user=as_user,
            )
            listed = subprocess.run(
                [*pip, "list", "--format=json", "--disable-pip-version-check"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env=env,
                **as_user,
            )
            if user is not None:  # from now on root's, and read-only for jobs
                for folder, dirs, files in os.walk(path):
                    for name in (*dirs, *files):
                        os.lchown(os.path.join(folder, name), 0, 0)
                    os.chmod(folder, 0o755)
                os.chown(path, 0, 0)
            resolved = {
                str(p["name"]): str(p["version"])
                for p in (json.loads(listed.stdout) if listed.returncode == 0 else [])
                if p.get("name") not in ("pip", "setuptools", "wheel")
            }
            (path / RESOLVED).write_text(json.dumps(resolved, sort_keys=True))
            (path / READY).touch()
        resolved = json.loads((path / RESOLVED).read_text())
    return path, resolved


# The worker's settings for reaching the package index (its mirror, proxy, certificates).
PASSED = (
    "PATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)


def _build_environment(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASSED or k.startswith("PIP_")}
    return env | {"HOME": str(path), "LANG": "C.UTF-8"}


def _run(
    argv: list[str], log: LogWriter, *, what: str, env: dict[str, str], as_user: dict[str, Any]
) -> None:
    tail: deque[str] = deque(maxlen=15)
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd="/",
        **as_user,
    )
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        tail.append(line)
        log.write(f"{line}\n")
        log.tick()
    code = process.wait(timeout=PIP_TIMEOUT)
    if code != 0:
        raise RunFailed(f"{what} failed with exit code {code}: " + " | ".join(tail))
