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

import contextlib
import fcntl
import functools
import hashlib
import io
import logging
import os
import re
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
    if restrict:
        if user is None:
            raise not_found
        queryset = readable_queryset(Repository, user)
    else:
        queryset = Repository.objects.all()
    uuids = list(queryset.filter(name=repo).values_list("uuid", flat=True)[:2])
    if not uuids:
        raise not_found
    if len(uuids) > 1:
        log.error("several repositories are named %r", repo)
        raise RepositoryUnusable("Name conflict")
    path = repository_path(uuids[0])
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


def _resolve(git_dir: Path, refs: Sequence[str]) -> dict[str, str | None]:
    """Each ref's commit (None when unknown, ambiguous or not a commit), with one git process.

    `cat-file --batch-check` resolves names like `rev-list <ref> --` does: a full 40-hex
    string is that object even if a ref has the same name, refs win over abbreviated ids,
    `heads/<name>` forces the branch, tags are peeled. Refs arrive on stdin, one per line;
    they passed `check_ref_format`, so they hold no whitespace and no `^`, and the appended
    `^{commit}` cannot change how the ref itself is read.
    """
    unique = list(dict.fromkeys(refs))
    if not unique:
        return {}
    stdin = b"".join(os.fsencode(ref) + b"^{commit}\n" for ref in unique)
    out = _git(git_dir, "cat-file", "--batch-check", stdin=stdin, what="git cat-file failed")
    lines = out.splitlines()
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
    with _locked(internal):
        _init_bare(internal, what=what)
        if _resolve(internal, [sha1])[sha1] != sha1:
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
        _git(internal, "update-ref", f"refs/tags/{tag}", sha1, what=what)


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
