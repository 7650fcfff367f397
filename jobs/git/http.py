"""Git smart HTTP, the CGI side (the view is api/git_http.py): which access a request
needs, which repository it may reach, and `git http-backend` run for it."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Literal, cast

from django.conf import settings

from jobs import permissions
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied
from jobs.git.hosted import repositories_dir
from jobs.git.run import CONTROL_RE, git_env, redact
from jobs.models import Repository, User
from jobs.selectors import readable_queryset
from jobs.uuids import UUID_RE

log = logging.getLogger("crunch.git")


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
                redact(self.stderr.decode("utf-8", "replace").strip()),
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
            "CONTENT_TYPE": CONTROL_RE.sub("", content_type or ""),
            "REMOTE_USER": CONTROL_RE.sub("", remote_user or ""),
            "REMOTE_ADDR": CONTROL_RE.sub("", remote_addr or ""),
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
