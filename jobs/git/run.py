"""Running git: the environment every git gets, one-shot commands with a timeout, the lock
that keeps two fetches out of one repository, and creating a bare repository atomically.

Every git command runs with an argument list (never a shell), with user text only where git
cannot read it as an option (after `--`, or on stdin), with ARVADOS_API_TOKEN removed from the
environment so credential helpers cannot see it, and with a timeout (CRUNCH_GIT_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from jobs.exceptions import RepositoryUnusable

# Variables that would point git at another repository than the one named by --git-dir.
_REPOSITORY_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_COMMON_DIR",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_CEILING_DIRECTORIES",
    }
)


def git_env() -> dict[str, str]:
    """The environment for every git we run: no API token, nothing that points git at
    another repository, no prompts, no system configuration."""
    env = {
        k: v for k, v in os.environ.items() if k != "ARVADOS_API_TOKEN" and k not in _REPOSITORY_ENV
    }
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    return env


# --- Running git ------------------------------------------------------------------------------

_CREDENTIALS_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact(text: str) -> str:
    """Hide `user:password@` in URLs: remote URLs may carry a token."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def run_git(
    git_dir: Path,
    *args: str,
    what: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    """Run `git --git-dir=<git_dir> <args>` and return its stdout.

    Any failure (exit status, timeout, git missing) raises RepositoryUnusable with `what` and
    git's last line of complaint.
    """
    timeout = settings.CRUNCH_GIT_TIMEOUT
    try:
        proc = subprocess.run(
            ["git", f"--git-dir={git_dir}", *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=env if env is not None else git_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RepositoryUnusable(f"{what}: git did not finish within {timeout}s") from None
    except OSError as exc:
        raise RepositoryUnusable(f"{what}: cannot run git: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = redact(lines[-1]) if lines else f"git exited with status {proc.returncode}"
        raise RepositoryUnusable(f"{what}: {reason}")
    return proc.stdout


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (across threads and processes on this host):
    two fetches into one cache would fight over git's own ref locks and fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def init_bare(path: Path, *, what: str) -> None:
    """Create a bare repository at `path` unless one is there; atomic, so a crash cannot
    leave half a repository behind. The caller holds the lock on `path`."""
    if (path / "HEAD").is_file():
        return
    shutil.rmtree(path, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        # --initial-branch: the cache's HEAD is "master" (spec §4), whatever the global
        # configuration of the server's user says.
        run_git(scratch, "init", "--quiet", "--bare", "--initial-branch=master", what=what)
        scratch.rename(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# Control characters: never part of a URL, a path or a header git is given.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
