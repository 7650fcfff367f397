"""A client of the Crunch (Arvados) REST API and its Keep endpoints, for `crunch` commands.

Configured like Arvados tools, from the environment:

- `ARVADOS_API_HOST`: `host[:port]` means HTTPS, as for every Arvados client; a full
  `http://...` or `https://...` URL is used as given (`http://127.0.0.1:8000` for `make run`);
- `ARVADOS_API_TOKEN`: sent as `Authorization: Bearer <token>`;
- `ARVADOS_API_HOST_INSECURE`: `1`/`true`/`yes` skips TLS certificate checks (self-signed).

Each thread keeps one keep-alive connection. JSON goes in and out; an error answer raises
`ApiError`, whose message is the server's `errors` joined.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

TRUE_WORDS = frozenset({"1", "t", "true", "y", "yes", "on"})


class ClientError(Exception):
    """The client cannot do what was asked: configuration, connection, unexpected answers."""


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, errors: list[str], *, method: str, path: str) -> None:
        self.status = status
        self.errors = errors
        detail = "; ".join(errors) if errors else "no details"
        super().__init__(f"{method} {path}: {status} {detail}")


@dataclass(frozen=True)
class ClientConfig:
    base_url: str  # scheme://host[:port][/prefix], no trailing slash
    token: str
    insecure: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientConfig:
        env = os.environ if environ is None else environ
        host = env.get("ARVADOS_API_HOST", "").strip()
        token = env.get("ARVADOS_API_TOKEN", "").strip()
        if not host:
            raise ClientError("ARVADOS_API_HOST is not set (host:port, or an http(s):// URL)")
        if not token:
            raise ClientError("ARVADOS_API_TOKEN is not set")
        return cls(
            base_url=base_url_for(host),
            token=token,
            insecure=env.get("ARVADOS_API_HOST_INSECURE", "").strip().lower() in TRUE_WORDS,
        )


def base_url_for(host: str) -> str:
    """`ARVADOS_API_HOST` as a base URL: `host:port` is HTTPS, a URL is taken as it is."""
    url = host if "://" in host else f"https://{host}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ClientError(f"ARVADOS_API_HOST must be host:port or an http(s):// URL: {host!r}")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ClientError(f"ARVADOS_API_HOST has a bad port: {host!r}") from None
    return url.rstrip("/")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes | memoryview  # a view of the caller's buffer when one was given

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ClientError(f"The server's answer is not JSON: {self.body[:200]!r}") from None


class ApiClient:
    def __init__(self, config: ClientConfig, *, timeout: float = 300) -> None:
        self.config = config
        self.timeout = timeout
        parts = urlsplit(config.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiClient:
        return cls(ClientConfig.from_env(environ))

    # --- connections -------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                context = ssl.create_default_context()
                if self.config.insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=context
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            # Large blocks go out in large writes.
            conn.blocksize = 1024 * 1024
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    # --- requests ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        into: bytearray | None = None,
    ) -> Answer:
        """One request to `<base URL><path>`; raises `ApiError` unless the status is `ok`.
        With `into`, a successful answer's body is read into that buffer (when it fits)."""
        url = self._prefix + path
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items()})
        sent = {"Authorization": f"Bearer {self.config.token}", **(headers or {})}
        for attempt in (1, 2):
            conn = self._connection()
            fresh = conn.sock is None
            try:
                conn.request(method, url, body=body, headers=sent)
                response = conn.getresponse()
                data = _read_body(response, into if response.status in ok else None)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection()
                if fresh or attempt == 2:
                    message = f"{method} {path}: the server closed the connection"
                    raise ClientError(message) from None
                continue  # a kept-alive connection the server had closed: once more
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise ClientError(f"Cannot reach {self.config.base_url}: {exc}") from None
            answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
            if response.will_close:
                self._drop_connection()
            if answer.status not in ok:
                raise ApiError(answer.status, _errors_of(answer), method=method, path=path)
            return answer
        raise AssertionError("unreachable")

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """An `/arvados/v1/<path>` method with a JSON answer."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        return self.request(
            method, f"/arvados/v1/{path}", query=query, body=payload, headers=headers
        ).json()

    # --- Keep --------------------------------------------------------------------------

    def block_put(self, data: bytes | bytearray | memoryview, *, md5: str | None = None) -> str:
        """Store a block; returns its locator signed for this token."""
        md5 = md5 or hashlib.md5(data).hexdigest()
        answer = self.request(
            "PUT",
            f"/{md5}",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        locator = answer.body.decode("ascii", "replace").strip()
        if not locator.startswith(f"{md5}+"):
            raise ClientError(f"Unexpected answer to a block upload: {locator[:100]!r}")
        return locator

    def block_get(self, locator: str, *, buffer: bytearray | None = None) -> bytes | memoryview:
        """A block's bytes (the locator must be signed), checked against its MD5. With a
        `buffer` (64 MiB, reused across calls), a view of it: no fresh allocation per block."""
        answer = self.request("GET", "/" + quote(locator, safe="+@"), into=buffer)
        if hashlib.md5(answer.body).hexdigest() != locator[:32].lower():
            raise ClientError(f"Block {locator[:32]} arrived damaged (its MD5 does not match)")
        return answer.body


def _read_body(response: http.client.HTTPResponse, into: bytearray | None) -> bytes | memoryview:
    length = response.length
    if into is None or length is None or length > len(into):
        return response.read()
    view = memoryview(into)[:length]
    got = 0
    while got < length:
        count = response.readinto(view[got:])
        if not count:
            raise http.client.IncompleteRead(bytes(view[:got]), length - got)
        got += count
    return view


def _query_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _errors_of(answer: Answer) -> list[str]:
    try:
        data = json.loads(answer.body)
    except ValueError:
        text = answer.body.decode("utf-8", "replace").strip()
        return [text[:500]] if text else []
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list):
        return [str(e) for e in errors]
    return []
