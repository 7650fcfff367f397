"""A run's source tree: a git commit (`checkout`) or an uploaded directory stored as a
collection (`copy_working_dir`), put where the command or script runs."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from django.conf import settings

from crunch.client import ApiClient
from crunch.keepcli import get_target
from crunch.runtimes import RunFailed
from jobs.models import Job

_PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")


class ArchiveCache:
    """The archives of the commits this process extracted lately, by repository cache and
    commit: a commit never changes, so its next job is extracted without a git process
    (4 ms of a trivial job's CPU, measured). Least recently used first out; at most
    `max_bytes` in all, and an archive larger than a quarter of that is not kept. Each
    process keeps its own (a worker's pool process runs one job at a time)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._archives: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, cache: Path, commit: str) -> bytes | None:
        archive = self._archives.get((str(cache), commit))
        if archive is not None:
            self._archives.move_to_end((str(cache), commit))
        return archive

    def put(self, cache: Path, commit: str, archive: bytes) -> None:
        key = (str(cache), commit)
        if len(archive) > self.max_bytes // 4 or key in self._archives:
            return
        self._archives[key] = archive
        self.size += len(archive)
        while self.size > self.max_bytes:
            _, dropped = self._archives.popitem(last=False)
            self.size -= len(dropped)


ARCHIVES = ArchiveCache(16 << 20)


def copy_working_dir(*, client: ApiClient, job: Job, dest: Path) -> None:
    """A writable copy of the job's uploaded directory in `dest`: the command's working
    directory."""
    pdh = job.working_dir or ""
    if not _PDH_RE.match(pdh):
        raise RunFailed(f"working_dir {pdh!r} is not a portable data hash")
    get_target(client, pdh, str(dest) + os.sep, force=True)
    # Collections keep no file modes: a program named by a path into the tree (`./run.sh`)
    # is made executable, as it was where it was uploaded from.
    program = (job.command or [""])[0]
    if "/" in program and not program.startswith("/"):
        path = (dest / program).resolve()
        if path.is_file() and path.is_relative_to(dest.resolve()):
            path.chmod(path.stat().st_mode | 0o111)


def git_env(token: str | None) -> dict[str, str]:
    """git's environment for fetching with the job's token (in a header set through the
    environment, never in argv)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "ARVADOS_API_TOKEN"
    }
    # The token travels in a header set through the environment, never in argv.
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0="http.extraHeader",
        GIT_CONFIG_VALUE_0=f"Authorization: Bearer {token}",
        GIT_ALLOW_PROTOCOL="http:https:git",
    )
    return env


def checkout(*, job: Job, token: str | None, dest: Path, cache_root: Path) -> None:
    """The job's exact commit, from its repository (hosted: over the API's git HTTP
    endpoint; remote: its URL) through a per-repository bare cache under `cache_root`,
    extracted into `dest`. A script job's script must be there, and is made executable."""
    commit = job.script_version or ""
    if not _SHA_RE.match(commit):
        raise RunFailed(f"script_version {commit!r} is not a commit")
    repository = job.repository or ""
    url = (
        repository
        if re.match(r"^(https?|git)://", repository)
        else f"{settings.CRUNCH_API_URL}/git/{repository}.git"
    )
    cache = cache_root / (hashlib.sha1(url.encode()).hexdigest() + ".git")
    env = git_env(token)

    def git(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", f"--git-dir={cache}", *args],
            env=env,
            capture_output=True,
            timeout=settings.CRUNCH_GIT_TIMEOUT,
            **kw,
        )

    kept = ARCHIVES.get(cache, commit)
    if kept is not None:
        _extract(kept, job=job, dest=dest)
        return
    if not (cache / "HEAD").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "-q", "--bare", str(cache)],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
    # The archive straight away: a commit the cache already has (every job but the first
    # of a commit) costs one git process. Only when that fails is the commit fetched.
    archive = git("archive", "--format=tar", f"{commit}^{{commit}}")
    if archive.returncode != 0:
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
                f"fetching {repository} failed: {fetched.stderr.decode(errors='replace').strip()}"
            )
        if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            raise RunFailed(f"commit {commit} is no longer in {repository}")
        archive = git("archive", "--format=tar", f"{commit}^{{commit}}")
        if archive.returncode != 0:
            raise RunFailed(f"git archive {commit} failed")
    _extract(archive.stdout, job=job, dest=dest)
    ARCHIVES.put(cache, commit, archive.stdout)


def _extract(archive: bytes, *, job: Job, dest: Path) -> None:
    """The commit's tree in `dest`; a script job's script must be there, and is made
    executable."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        tar.extractall(dest, filter="data")
    if job.command is not None:
        return
    script = dest / "crunch_scripts" / str(job.script)
    if not script.is_file():
        raise RunFailed(f"crunch_scripts/{job.script} is not in commit {job.script_version}")
    script.chmod(script.stat().st_mode | 0o111)
