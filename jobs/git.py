"""Git: hosted repositories, remote caches, commit ranges (spec §4), internal tags (§2.12) and
the CGI side of git smart HTTP.

Every git command runs with an argument list (never a shell), with user text only where git
cannot read it as an option (after `--`, or on stdin), with ARVADOS_API_TOKEN removed from the
environment so credential helpers cannot see it, and with a timeout (CRUNCH_GIT_TIMEOUT).

Errors follow the contract of §4: a revision that does not exist is an *empty result*; a
repository that cannot be used (unknown, unreadable, fetch failed, git failed or timed out)
*raises* `RepositoryUnusable`, so a transient problem never looks like a bad revision.

On disk, under CRUNCH_GIT_DIR:
- `repositories/<uuid>.git`: hosted repositories (paths come from uuids, never from names);
- `remote/<sha1 of the URL>.git`: one fetch cache per remote URL, so commits never leak
  between URLs;
- `internal.git`: commits that jobs ran, tagged with the job uuid.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import hashlib
import io
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

import git
from django.conf import settings

from jobs import permissions
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied, RepositoryUnusable
from jobs.models import Repository, User
from jobs.selectors import readable_queryset
from jobs.uuids import UUID_RE

log = logging.getLogger("crunch.git")

# One component of a repository name: a letter first, then letters, digits, `_`, `-`, `.`.
_NAME_PART_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}\Z")


def name_errors(name: str) -> list[str]:
    """Why `name` cannot name a repository (empty list when it can)."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or len(parts) > 2:
        return ["Repository name must be <owner>/<name> or <name>"]
    for part in parts:
        if (
            not _NAME_PART_RE.fullmatch(part)
            or ".." in part
            or part.endswith((".git", ".lock", "."))
        ):
            return [
                f"Repository name {name!r} is invalid: each part must start with a letter and "
                "contain only letters, digits, '_', '-' and single dots"
            ]
    return []


def repositories_dir() -> Path:
    return Path(settings.CRUNCH_GIT_DIR) / "repositories"


def repository_path(uuid: str) -> Path:
    """Hosted repositories live at `<CRUNCH_DATA_DIR>/git/repositories/<uuid>.git`."""
    return repositories_dir() / f"{uuid}.git"


def remote_cache_path(url: str) -> Path:
    """The fetch cache of a remote URL: `<CRUNCH_GIT_DIR>/remote/<sha1 hex of the URL>.git`."""
    digest = hashlib.sha1(url.encode("utf-8", "surrogateescape")).hexdigest()
    return Path(settings.CRUNCH_GIT_DIR) / "remote" / f"{digest}.git"


def internal_repository_path() -> Path:
    return Path(settings.CRUNCH_GIT_DIR) / "internal.git"


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


# After a push: when HEAD names no existing branch (a new repository whose first push was
# not `main`), point it at `main`, else `master`, else the first branch, so that clones get
# a checkout and a job's default script_version (HEAD) resolves. Fixed text: no user input.
POST_RECEIVE_HOOK = """#!/bin/sh
git rev-parse -q --verify HEAD >/dev/null && exit 0
for branch in main master; do
  if git rev-parse -q --verify "refs/heads/$branch" >/dev/null; then
    exec git symbolic-ref HEAD "refs/heads/$branch"
  fi
done
first=$(git for-each-ref --count=1 --format='%(refname)' refs/heads/)
[ -n "$first" ] && exec git symbolic-ref HEAD "$first"
exit 0
"""


def repository_init(uuid: str) -> Path:
    """Create the bare repository for `uuid` (idempotent); pushes over HTTP are allowed."""
    path = repository_path(uuid)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, bare=True, initial_branch="main")
        with repo.config_writer() as config:
            config.set_value("http", "receivepack", "true")
            config.set_value("core", "sharedRepository", "false")
    hook = path / "hooks" / "post-receive"
    if not hook.exists() or hook.read_text() != POST_RECEIVE_HOOK:
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(POST_RECEIVE_HOOK)
        hook.chmod(0o755)
    return path


# --- Running git ------------------------------------------------------------------------------

_CREDENTIALS_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def _redact(text: str) -> str:
    """Hide `user:password@` in URLs: remote URLs may carry a token."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def _git(
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
        reason = _redact(lines[-1]) if lines else f"git exited with status {proc.returncode}"
        raise RepositoryUnusable(f"{what}: {reason}")
    return proc.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (across threads and processes on this host):
    two fetches into one cache would fight over git's own ref locks and fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _init_bare(path: Path, *, what: str) -> None:
    """Create a bare repository at `path` unless one is there; atomic, so a crash cannot
    leave half a repository behind. The caller holds the lock on `path`."""
    if (path / "HEAD").is_file():
        return
    shutil.rmtree(path, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        # --initial-branch: the cache's HEAD is "master" (spec §4), whatever the global
        # configuration of the server's user says.
        _git(scratch, "init", "--quiet", "--bare", "--initial-branch=master", what=what)
        scratch.rename(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- Ref syntax -------------------------------------------------------------------------------

# Bytes refused anywhere in a ref by git (refs.c refname_disposition): control characters,
# DEL, space, and ~ ^ : ? * [ \
_REF_BAD_BYTES_RE = re.compile(rb"[\x00-\x20\x7f~^:?*\[\\]")
_HEX40_RE = re.compile(r"[0-9a-f]{40}")  # always with fullmatch: "$" allows a final newline


def check_ref_format(ref: object) -> bool:
    """Whether `ref` may be handed to git as a revision (spec §4 step 2).

    True exactly when `ref` is a non-empty string whose first character is neither `-` nor
    `$` and `git check-ref-format --allow-onelevel <ref>` would succeed; computed here
    (following git's refs.c `check_refname_format`) instead of forking git. So `master^`,
    `HEAD~1`, `a..b`, `@{1}`, `x.lock`, `x/`, `a b`, `a:b` and `--opt` are all refused.
    """
    if not isinstance(ref, str) or not ref or ref[0] in "-$":
        return False
    try:
        name = os.fsencode(ref)  # the bytes git would receive as an argument
    except UnicodeError:
        return False
    if name == b"@" or name.endswith(b".") or b".." in name or b"@{" in name:
        return False
    if _REF_BAD_BYTES_RE.search(name):
        return False
    return all(
        part and not part.startswith(b".") and not part.endswith(b".lock")
        for part in name.split(b"/")
    )


# --- Locating the git directory ---------------------------------------------------------------

_REMOTE_RE = re.compile(r"^(https?|git)://")
_URL_SCHEME_RE = re.compile(r"^[a-z]+://")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def is_remote(repo: str) -> bool:
    """`http://`, `https://` and `git://` URLs name remote repositories; anything else
    (`file:///x.git`, `/abs/path`, `github.com/x.git`) is the name of a hosted one."""
    return isinstance(repo, str) and bool(_REMOTE_RE.match(repo))


def remote_fetch(url: str) -> Path:
    """Bring the cache of `url` up to date and return its path.

    Creates the cache if missing, then fetches every remote branch into the local branch of
    the same name, plus all tags, with force and prune. Any failure raises.
    """
    # Never a "--flag" or a bare path (git's local-clone tricks) in the URL position.
    if not _URL_SCHEME_RE.match(url) or _CONTROL_RE.search(url):
        raise RepositoryUnusable(f"invalid git url {_redact(url)}")
    path = remote_cache_path(url)
    what = f"git fetch from {_redact(url)} failed"
    env = git_env()
    # Redirects and helpers must not take git to another transport (ext::, file://...).
    env["GIT_ALLOW_PROTOCOL"] = "http:https:git"
    with _locked(path):
        _init_bare(path, what=what)
        _git(
            path,
            "fetch",
            "--quiet",
            "--no-progress",
            "--tags",
            "--prune",
            "--force",
            "--update-head-ok",
            "--",
            url,
            "refs/heads/*:refs/heads/*",
            what=what,
            env=env,
        )
    return path


def _hosted_git_dir(*, user: User | None, repo: str, restrict: bool = True) -> Path:
    """The on-disk directory of the hosted repository named `repo` that `user` can read
    (any user's when `restrict` is false)."""
    not_found = RepositoryUnusable(f"Repository not found: '{repo}'")
    if not isinstance(repo, str) or not repo or "\x00" in repo:
        raise not_found
    if restrict and user is None:
        raise not_found
    # The rows by name, then the read check against the user's (cached) permission map, as
    # `selectors.readable_object` does: cheaper than joining the permission condition in.
    rows = Repository.objects.filter(name=repo).values_list("uuid", "owner_uuid")[:2]
    found = [Repository(uuid=uuid, owner_uuid=owner) for uuid, owner in rows]
    if restrict:
        assert user is not None
        found = [r for r in found if permissions.can_read(user, r)]
    if not found:
        raise not_found
    if len(found) > 1:
        log.error("several repositories are named %r", repo)
        raise RepositoryUnusable("Name conflict")
    path = repository_path(found[0].uuid)
    if not (path / "HEAD").is_file():
        raise RepositoryUnusable(f"no local repository for '{repo}'")
    return path


def git_dir_for(*, user: User | None, repo: str, fetch: bool = True) -> Path:
    """Where the commits of `repo` are (spec §4 step 4): a remote URL's cache (fetched
    first unless `fetch` is false), or a hosted repository readable by `user`."""
    if is_remote(repo):
        if fetch:
            return remote_fetch(repo)
        path = remote_cache_path(repo)
        if not (path / "HEAD").is_file():
            raise RepositoryUnusable(f"no local repository for {_redact(repo)}")
        return path
    return _hosted_git_dir(user=user, repo=repo)


# --- Commit ranges (spec §4) ------------------------------------------------------------------


class _GitPipe:
    """One long-running git process for one repository that answers lines on stdin with
    lines on stdout: `cat-file --batch-check` (resolving names) or `update-ref --stdin`
    (moving refs in transactions). Forking git for every request costs more than the rest
    of a reuse lookup, so each repository keeps one of each, used by one caller at a time
    (a lock). What stays correct across requests, and why:

    - refs: git reads a loose ref file, and checks packed-refs' stat data, on every lookup,
      so a push, a new tag or a deleted branch is seen by the next request;
    - objects: a name git cannot find makes it re-scan the packs (and drop its cache of
      loose objects) before it answers "missing", so pushed commits are found;
    - the repository itself: before every use the stat data of the git directory, `HEAD`,
      `config` and `objects/pack` are compared with those at start. Any change (a HEAD
      re-pointed or broken, new packs, a repack that deleted packs the process still has
      open, a repository replaced) restarts the process, and a fresh git checks the
      repository as it does on every start: a broken one raises.

    Any failure (git died, no answer within CRUNCH_GIT_TIMEOUT) stops the process and raises
    RepositoryUnusable; when a process that had served earlier requests ended by itself (it
    may have been killed from outside), the request is first tried once more with a new one.
    Callers send only text that passed `check_ref_format` or is 40 hex: no whitespace, no
    newline.
    """

    CHUNK_BYTES = 16384  # written before answers are read: both pipes stay far from full

    def __init__(self, git_dir: Path, args: tuple[str, ...]) -> None:
        self.git_dir = git_dir
        self.args = args
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.signature: tuple[object, ...] | None = None
        self.pending = b""
        self.stderr = bytearray()
        self.stderr_thread: threading.Thread | None = None
        self.died = False  # the process ended by itself (as opposed to: did not answer)
        self.retired = False  # dropped by `_GitPipes` while in use: close after that use
        self.last_used = time.monotonic()

    # --- life cycle ---

    def _signature(self) -> tuple[object, ...] | None:
        stats: list[object] = []
        try:
            stats.append(os.stat(self.git_dir).st_ino)
            for name in ("HEAD", "config", "objects/pack"):
                st = os.stat(self.git_dir / name)
                stats.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            return None
        return tuple(stats)

    def _start(self, signature: tuple[object, ...] | None, what: str) -> None:
        try:
            proc = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=git_env(),
                bufsize=0,
            )
        except OSError as exc:
            raise RepositoryUnusable(f"{what}: cannot run git: {exc.strerror}") from None
        self.proc, self.signature, self.pending, self.died = proc, signature, b"", False
        self.stderr = bytearray()
        # Warnings (e.g. "refname is ambiguous") must never fill the pipe and block git.
        self.stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(proc, self.stderr), daemon=True
        )
        self.stderr_thread.start()

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen[bytes], keep: bytearray) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in proc.stderr:
                keep += line
                del keep[:-4096]

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            cast(IO[bytes], proc.stdin).close()  # git exits at the end of its input
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.stderr_thread is not None:
            self.stderr_thread.join(timeout=1)
        with contextlib.suppress(OSError):
            cast(IO[bytes], proc.stdout).close()

    def _failure(self, what: str, reason: str) -> RepositoryUnusable:
        """Stop the process; the error names git's last complaint when there is one."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self.close()
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return RepositoryUnusable(f"{what}: {_redact(lines[-1]) if lines else reason}")

    # --- talking to git ---

    def _readline(self, deadline: float, what: str) -> bytes:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timeout = settings.CRUNCH_GIT_TIMEOUT
                raise self._failure(what, f"git did not answer within {timeout}s")
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.died = True
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
                if self.stderr_thread is not None:
                    self.stderr_thread.join(timeout=1)
                raise self._failure(what, f"git exited with status {proc.returncode}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line

    def _ask(self, requests: Sequence[tuple[bytes, int]], what: str) -> list[bytes]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        deadline = time.monotonic() + settings.CRUNCH_GIT_TIMEOUT
        answers: list[bytes] = []
        start = 0
        while start < len(requests):
            # A chunk of at most CHUNK_BYTES (or one request): git's answers to it (which
            # may echo the input) fit in the stdout pipe while we are still writing.
            end, size = start, 0
            while end < len(requests) and (
                end == start or size + len(requests[end][0]) <= self.CHUNK_BYTES
            ):
                size += len(requests[end][0])
                end += 1
            data = memoryview(b"".join(text for text, _ in requests[start:end]))
            try:
                while data:
                    data = data[proc.stdin.write(data) or 0 :]
            except (BrokenPipeError, ValueError):
                pass  # git died: reading finds the end of its output and says why
            for _ in range(sum(n for _, n in requests[start:end])):
                answers.append(self._readline(deadline, what))
            start = end
        return answers

    def query(self, requests: Sequence[tuple[bytes, int]], *, what: str) -> list[bytes]:
        """Send each request (text, number of answer lines it gets); return the answers."""
        with self.lock:
            self.last_used = time.monotonic()
            signature = self._signature()
            if self.proc is not None and (signature is None or signature != self.signature):
                self.close()
            for attempt in (1, 2):
                fresh = self.proc is None
                if fresh:
                    self._start(signature, what)
                try:
                    return self._ask(requests, what)
                except RepositoryUnusable:
                    if fresh or attempt == 2 or not self.died:
                        raise
                    # an old process ended (killed from outside?): once more, with a new one
                finally:
                    if self.retired:
                        self.close()
            raise AssertionError("unreachable")


class _GitPipes:
    """The long-running git processes of this process: at most MAX, each closed once IDLE
    seconds unused (checked on every use), so that none holds deleted packs open for long."""

    MAX = 64
    IDLE = 300.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pipes: dict[tuple[str, tuple[str, ...]], _GitPipe] = {}

    def get(self, git_dir: Path, *args: str) -> _GitPipe:
        key = (str(git_dir), args)
        stale: list[_GitPipe] = []
        with self.lock:
            pipe = self.pipes.pop(key, None) or _GitPipe(git_dir, args)
            self.pipes[key] = pipe  # the most recently used last
            now = time.monotonic()
            for other_key, other in list(self.pipes.items()):
                too_many = len(self.pipes) > self.MAX
                if other is not pipe and (too_many or now - other.last_used > self.IDLE):
                    stale.append(self.pipes.pop(other_key))
        for old in stale:
            old.retired = True  # if it is in use right now, its user closes it afterwards
            if old.lock.acquire(blocking=False):
                try:
                    old.close()
                finally:
                    old.lock.release()
        return pipe

    def close_all(self) -> None:
        with self.lock:
            pipes, self.pipes = list(self.pipes.values()), {}
        for pipe in pipes:
            with pipe.lock:
                pipe.close()

    def forget_after_fork(self) -> None:
        """In a forked child: the processes are the parent's; close our copies of their
        pipes without touching the processes."""
        self.lock = threading.Lock()
        for pipe in self.pipes.values():
            pipe.lock = threading.Lock()
            proc, pipe.proc = pipe.proc, None
            for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
                with contextlib.suppress(OSError, ValueError):
                    cast(IO[bytes], stream).close()
        self.pipes = {}


_PIPES = _GitPipes()
atexit.register(_PIPES.close_all)
os.register_at_fork(after_in_child=_PIPES.forget_after_fork)

_CAT_FILE = ("cat-file", "--batch-check")
_UPDATE_REF = ("update-ref", "--stdin")


def _resolve(git_dir: Path, refs: Sequence[str]) -> dict[str, str | None]:
    """Each ref's commit (None when unknown, ambiguous or not a commit), asked of the
    repository's long-running `git cat-file --batch-check` (`_GitPipe`).

    `cat-file --batch-check` resolves names like `rev-list <ref> --` does: a full 40-hex
    string is that object even if a ref has the same name, refs win over abbreviated ids,
    `heads/<name>` forces the branch, tags are peeled. Refs go to its stdin, one per line;
    they passed `check_ref_format`, so they hold no whitespace and no `^`, and the appended
    `^{commit}` cannot change how the ref itself is read.
    """
    unique = list(dict.fromkeys(refs))
    if not unique:
        return {}
    lines = _PIPES.get(git_dir, *_CAT_FILE).query(
        [(os.fsencode(ref) + b"^{commit}\n", 1) for ref in unique], what="git cat-file failed"
    )
    if len(lines) != len(unique):
        raise RepositoryUnusable("git cat-file failed: unexpected output")
    resolved: dict[str, str | None] = {}
    for ref, line in zip(unique, lines, strict=True):
        fields = line.decode("ascii", "replace").split(" ")
        found = len(fields) == 3 and fields[1] == "commit" and _HEX40_RE.fullmatch(fields[0])
        resolved[ref] = fields[0] if found else None
    return resolved


@functools.lru_cache(maxsize=512)
def _rev_list(git_dir: str, min_hash: str, max_hash: str) -> tuple[str, ...]:
    """`git rev-list <min>..<max>` (reverse chronological). Cached: both ends are commit ids
    that exist in this repository, and the commits between two commits never change."""
    out = _git(
        Path(git_dir), "rev-list", f"{min_hash}..{max_hash}", "--", what="git rev-list failed"
    )
    return tuple(out.decode("ascii").split())


def find_commit_range(
    *,
    user: User | None,
    repo: str,
    min: str | None,
    max: str | None,
    exclude: Sequence[str] | None,
) -> list[str]:
    """The commits from `min` to `max` in `repo`, minus `exclude` (spec §4).

    Returns 40-hex commit ids: `rev-list min..max` order then `min`, or `[max]` without a
    min. An empty list means a bad or unknown revision (including invalid ref syntax).
    Raises RepositoryUnusable when the repository cannot be used: not found or not readable
    by `user` ("Repository not found: '<repo>'"), "Name conflict", a failed fetch of a
    remote URL, any git failure.
    """
    if min == "":
        min = None
    for ref in (min, max):
        if ref is not None and not check_ref_format(ref):
            return []
    if max is None:
        max = "HEAD"
    git_dir = git_dir_for(user=user, repo=repo)
    excludes: list[str] = []
    if exclude is not None:
        if not isinstance(exclude, list | tuple) or not all(map(check_ref_format, exclude)):
            return []
        excludes = list(exclude)
    resolved = _resolve(git_dir, [max, *excludes, *([min] if min is not None else [])])
    max_hash = resolved[max]
    if max_hash is None or not check_ref_format(max_hash):
        return []
    excluded = {resolved[e] for e in excludes} - {None}
    if min is None:
        return [] if max_hash in excluded else [max_hash]
    min_hash = resolved[min]
    if min_hash is None or not check_ref_format(min_hash):
        return []
    commits = [c for c in _rev_list(str(git_dir), min_hash, max_hash) if c not in excluded]
    if min_hash not in excluded:
        commits.append(min_hash)
    return commits


def resolve_commit(*, user: User | None, repo: str, ref: str | None) -> str | None:
    """The commit `ref` names in `repo` (None: HEAD), or None when it names none.
    Raises like `find_commit_range` when the repository is unusable."""
    found = find_commit_range(user=user, repo=repo, min=None, max=ref, exclude=None)
    return found[0] if found else None


# Path components git stores: no empty, `.` or `..` part, nothing git could read as more
# than one line of `cat-file --batch-check` input.
_PATH_BAD_RE = re.compile(r"[\x00-\x1f\x7f]")


def path_exists(*, user: User | None, repo: str, commit: str, path: str) -> bool:
    """Whether `path` (relative, `/`-separated) is a file (a blob: a regular file or a
    symbolic link) in commit `commit` of `repo`.

    `commit` is a 40-hex commit id (as `resolve_commit` returns). A remote repository is
    looked up in its cache, not fetched again: resolving the commit fetched it. The name
    `<commit>:<path>` goes to the repository's long-running `git cat-file --batch-check` on
    stdin. Raises InvalidRequest for a malformed commit or path, RepositoryUnusable like
    `find_commit_range`.
    """
    if not isinstance(commit, str) or not _HEX40_RE.fullmatch(commit):
        raise InvalidRequest(f"invalid commit {commit}")
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or _PATH_BAD_RE.search(path) or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequest(f"invalid path {path!r}")
    git_dir = git_dir_for(user=user, repo=repo, fetch=False)
    (line,) = _PIPES.get(git_dir, *_CAT_FILE).query(
        [(f"{commit}:".encode() + os.fsencode(path) + b"\n", 1)], what="git cat-file failed"
    )
    fields = line.split(b" ")
    return len(fields) == 3 and fields[1] == b"blob"


# --- The internal repository (spec §2.12) -----------------------------------------------------


def tag_in_internal_repository(repo: str, sha1: str, tag: str, *, user: User | None = None) -> None:
    """Copy commit `sha1` with its history from `repo` into the internal repository and
    point the lightweight tag `tag` (a job uuid) at it, moving the tag if it exists.

    `repo` is a hosted name or a remote URL, whose cache must already hold the commit (no
    fetch here). With `user`, a hosted repository must be readable by that user; without,
    any hosted repository of that name is used (the caller resolved the commit for its user
    already). Raises InvalidRequest for a bad tag or sha1, RepositoryUnusable otherwise.
    """
    if not check_ref_format(tag):
        raise InvalidRequest(f"invalid tag {tag}")
    if not isinstance(sha1, str) or not _HEX40_RE.fullmatch(sha1):
        raise InvalidRequest(f"invalid sha1 {sha1}")
    if is_remote(repo):
        source = git_dir_for(user=user, repo=repo, fetch=False)
    else:
        source = _hosted_git_dir(user=user, repo=repo, restrict=user is not None)
    internal = internal_repository_path()
    what = f"tagging {sha1} from {_redact(repo)} failed"
    tag_ref = f"refs/tags/{tag}"
    with _locked(internal):
        _init_bare(internal, what=what)
        have, tagged = _PIPES.get(internal, *_CAT_FILE).query(
            [(f"{sha1}^{{commit}}\n".encode(), 1), (os.fsencode(tag_ref) + b"\n", 1)], what=what
        )
        if have.split(b" ")[:2] != [sha1.encode(), b"commit"]:
            # Fetching by id needs the source to allow unadvertised wants; `-c` reaches the
            # upload-pack that fetch starts through GIT_CONFIG_PARAMETERS.
            _git(
                internal,
                "-c",
                "uploadpack.allowAnySHA1InWant=true",
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-progress",
                "--",
                str(source),
                sha1,
                what=what,
            )
            if _resolve(internal, [sha1])[sha1] != sha1:
                raise RepositoryUnusable(f"{what}: {sha1} is not a commit")
        elif tagged.split(b" ")[:2] == [sha1.encode(), b"commit"]:
            return  # the lightweight tag is there already (a job re-saved)
        # One transaction on the internal repository's long-running `update-ref --stdin`;
        # the tag and the id passed the checks above, so they hold no whitespace.
        answers = _PIPES.get(internal, *_UPDATE_REF).query(
            [(f"start\nupdate {tag_ref} {sha1}\nprepare\ncommit\n".encode(), 3)], what=what
        )
        if answers != [b"start: ok", b"prepare: ok", b"commit: ok"]:
            raise RepositoryUnusable(f"{what}: unexpected answer from git update-ref")


# --- Git smart HTTP (the CGI side; the view is api/git_http.py) -------------------------------

Access = Literal["read", "write"]
READ: Access = "read"
WRITE: Access = "write"

_SERVICES: dict[str, Access] = {"git-upload-pack": READ, "git-receive-pack": WRITE}
# The paths `git http-backend` serves (its own table of services), nothing else: a request
# never reaches the repository's config, hooks or anything else by path.
_HTTP_PATH_RE = re.compile(
    r"^(?:HEAD|info/refs|objects/info/(?:alternates|http-alternates|packs)"
    r"|objects/[0-9a-f]{2}/(?:[0-9a-f]{38}|[0-9a-f]{62})"
    r"|objects/pack/pack-(?:[0-9a-f]{40}|[0-9a-f]{64})\.(?:pack|idx))$"
)
_GIT_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9=:._-]{1,200}\Z")
_HTTP_METHOD_RE = re.compile(r"^[A-Z]{1,20}\Z")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def http_access(*, rest: str, service: str | None) -> Access | None:
    """The access a git HTTP request for `<repo>.git/<rest>[?service=...]` needs: WRITE for
    pushes (`git-receive-pack`), READ for the rest, None when it is not a git HTTP path."""
    if rest in _SERVICES:
        return _SERVICES[rest]
    if rest == "info/refs" and service is not None:
        return _SERVICES.get(service)
    return READ if _HTTP_PATH_RE.fullmatch(rest) else None


def http_repository(*, user: User, name: str, access: Access) -> Repository:
    """The repository named `name` if `user` may have `access` to it over HTTP.

    Unreadable looks missing (NotFound); pushing needs write permission and an active user
    (PermissionDenied).
    """
    repo = readable_queryset(Repository, user).filter(name=name).first()
    if repo is None:
        raise NotFound(f"Repository not found: '{name}'")
    if access == WRITE:
        if permissions.level_on(user, repo) < permissions.WRITE:
            raise PermissionDenied(f"{user.uuid} may not push to {name}")
        if not user.is_active:
            raise PermissionDenied("Inactive users cannot push")
    return repo


@dataclass
class BackendResponse:
    """What `git http-backend` answered: the status, headers and a body to stream."""

    status: int
    headers: list[tuple[str, str]]
    body: BackendBody


class BackendBody:
    """The rest of http-backend's stdout, chunk by chunk. `close()` (which Django calls when
    the response is done or the client went away) stops the process if it still runs."""

    CHUNK = 64 * 1024

    def __init__(self, run: _BackendRun | None, prefix: bytes = b"") -> None:
        self._run = run
        self._prefix = prefix

    def __iter__(self) -> BackendBody:
        return self

    def __next__(self) -> bytes:
        if self._prefix:
            chunk, self._prefix = self._prefix, b""
            return chunk
        if self._run is None:
            raise StopIteration
        chunk = self._run.read(self.CHUNK)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.finish()


class _BackendRun:
    """One `git http-backend` process: a thread feeds it the request body, another keeps
    its stderr, a watchdog kills it after CRUNCH_GIT_TIMEOUT seconds without progress."""

    def __init__(self, env: dict[str, str], body: IO[bytes] | None) -> None:
        self.timeout = settings.CRUNCH_GIT_TIMEOUT
        self.last_activity = time.monotonic()
        self.stderr = bytearray()
        self.done = threading.Event()
        self.at_end = False
        self.proc = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=repositories_dir(),
        )
        self.threads = [
            threading.Thread(target=self._feed, args=(body,), daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _feed(self, body: IO[bytes] | None) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while body is not None:
                chunk = body.read(BackendBody.CHUNK)
                if not chunk:
                    break
                self.last_activity = time.monotonic()
                stdin.write(chunk)
        except (OSError, ValueError):
            pass  # the process ended (or was stopped) before reading everything
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line
            del self.stderr[:-4096]

    def _watch(self) -> None:
        while not self.done.wait(min(1.0, self.timeout)):
            if self.proc.poll() is not None:
                return
            if time.monotonic() - self.last_activity > self.timeout:
                log.warning("git http-backend idle for %ss, stopping it", self.timeout)
                self.proc.kill()
                return

    def readline(self) -> bytes:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline(8192)
        self.last_activity = time.monotonic()
        self.at_end = not line
        return line

    def read(self, size: int) -> bytes:
        chunk = cast(io.BufferedReader, self.proc.stdout).read1(size)
        self.last_activity = time.monotonic()
        self.at_end = not chunk
        return chunk

    def finish(self) -> None:
        """Wait briefly for a process that has written everything; kill one that has not."""
        self.done.set()
        assert self.proc.stdout is not None
        try:
            self.proc.wait(timeout=10 if self.at_end else 0.1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for thread in self.threads:
            thread.join(timeout=1)
        self.proc.stdout.close()
        if self.proc.returncode not in (0, -9):
            log.warning(
                "git http-backend exited with %s: %s",
                self.proc.returncode,
                _redact(self.stderr.decode("utf-8", "replace").strip()),
            )


def http_backend(
    *,
    uuid: str,
    rest: str,
    method: str,
    service: str | None,
    body: IO[bytes] | None,
    content_type: str = "",
    content_length: str = "",
    content_encoding: str = "",
    git_protocol: str = "",
    remote_user: str = "",
    remote_addr: str = "",
) -> BackendResponse:
    """Run `git http-backend` for one request on hosted repository `uuid`.

    The caller checked the access (`http_access`, `http_repository`). The CGI environment is
    built here from checked values only: PATH_INFO from the repository's uuid and a path that
    `http_access` accepted, QUERY_STRING rebuilt from the service name. A gzip request body
    (`content_encoding`) is inflated by http-backend itself.
    """
    if not UUID_RE.fullmatch(uuid) or http_access(rest=rest, service=service) is None:
        raise NotFound()
    if not _HTTP_METHOD_RE.fullmatch(method):
        raise InvalidRequest(f"unsupported method {method!r}")
    env = git_env()
    env.update(
        {
            "GIT_PROJECT_ROOT": str(repositories_dir()),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "PATH_INFO": f"/{uuid}.git/{rest}",
            "REQUEST_METHOD": method,
            "QUERY_STRING": f"service={service}" if rest == "info/refs" and service else "",
            "CONTENT_TYPE": _CONTROL_RE.sub("", content_type or ""),
            "REMOTE_USER": _CONTROL_RE.sub("", remote_user or ""),
            "REMOTE_ADDR": _CONTROL_RE.sub("", remote_addr or ""),
        }
    )
    if content_length and content_length.isdigit():
        env["CONTENT_LENGTH"] = content_length
    if content_encoding in ("gzip", "x-gzip"):
        env["HTTP_CONTENT_ENCODING"] = content_encoding
    if git_protocol and _GIT_PROTOCOL_RE.fullmatch(git_protocol):
        env["HTTP_GIT_PROTOCOL"] = git_protocol
    try:
        run = _BackendRun(env, body)
    except OSError as exc:
        log.error("cannot run git http-backend: %s", exc)
        return _backend_failed()
    status, headers = 200, list[tuple[str, str]]()
    for _ in range(100):
        line = run.readline()
        if not line:
            break  # no blank line: http-backend died or was stopped before answering
        line = line.rstrip(b"\r\n")
        if not line:
            return BackendResponse(status=status, headers=headers, body=BackendBody(run))
        name, _sep, value = line.decode("latin-1").partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code = value.split(" ", 1)[0]
            status = int(code) if code.isdigit() and 100 <= int(code) <= 599 else 502
        elif name and name.lower() not in _HOP_BY_HOP:
            headers.append((name, value))
    BackendBody(run).close()
    return _backend_failed()


def _backend_failed() -> BackendResponse:
    return BackendResponse(
        status=502,
        headers=[("Content-Type", "text/plain; charset=utf-8")],
        body=BackendBody(None, b"git http-backend failed\n"),
    )
