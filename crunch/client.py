"""A client of the Crunch (Arvados) REST API and its Keep endpoints, for `crunch` commands.

Configured like Arvados tools, from the environment:

- `ARVADOS_API_HOST`: `host[:port]` means HTTPS, as for every Arvados client; a full
  `http://...` or `https://...` URL is used as given (`http://127.0.0.1:8000` for `make run`);
- `ARVADOS_API_TOKEN`: sent as `Authorization: Bearer <token>`;
- `ARVADOS_API_HOST_INSECURE`: `1`/`true`/`yes` skips TLS certificate checks (self-signed).

Each thread keeps one keep-alive connection. JSON goes in and out; an error answer raises
`ApiError`, whose message is the server's `errors` joined. `ApiClient.stream` opens a GET
whose answer arrives over time (a followed log) on a connection of its own, and
`parse_events` reads Server-Sent Events from it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
            return json.loads(bytes(self.body))
        except ValueError:
            raise ClientError(f"The server's answer is not JSON: {self.body[:200]!r}") from None


class _Connection(http.client.HTTPConnection):
    """Requests go out without Nagle's delay. http.client writes the headers and a body
    that is not `bytes` (a block's memoryview) separately; with Nagle on, the body then
    waits for the server's delayed ACK of the headers, 40 ms on Linux."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _TLSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = ssl.create_default_context()
            if self.config.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return _TLSConnection(self._host, self._port, timeout=self.timeout, context=context)
        return _Connection(self._host, self._port, timeout=self.timeout)

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_connection()
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

    def stream(
        self,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Stream:
        """Open a GET of `<base URL><path>` whose body arrives over time (a followed log).

        It has a connection of its own, and by default no read timeout: a quiet job may
        print nothing for hours (TCP keep-alive notices a dead peer). Raises `ApiError`
        for an error status, `ClientError` when the server cannot be reached."""
        url = self._prefix + path
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items()})
        sent = {"Authorization": f"Bearer {self.config.token}", **(headers or {})}
        conn = self._new_connection()
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.sock.settimeout(read_timeout)
            conn.request("GET", url, headers=sent)
            response = conn.getresponse()
            if response.status != 200:
                answer = Answer(
                    response.status,
                    {k.lower(): v for k, v in response.getheaders()},
                    response.read(),
                )
                raise ApiError(answer.status, _errors_of(answer), method="GET", path=path)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ClientError(f"Cannot reach {self.config.base_url}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return Stream(conn, response)

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
        locator = bytes(answer.body).decode("ascii", "replace").strip()
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


class Stream:
    """An open streaming answer: iterating gives its bytes as they arrive, until the server
    ends the answer. A broken connection raises `ClientError`. Close it when done."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn = conn
        self.response = response
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                data = self.response.read1(65536)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise ClientError(f"the stream broke: {exc or type(exc).__name__}") from None
            if not data:
                return
            yield data

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ServerEvent:
    """One Server-Sent Event: its type (`message` unless named), data lines and id."""

    event: str = "message"
    lines: list[str] = field(default_factory=list)
    id: str | None = None  # the `id:` of this event, if it had one

    @property
    def data(self) -> str:
        return "\n".join(self.lines)


class EventParser:
    """Server-Sent Events (the WHATWG `text/event-stream` format) from bytes in any pieces.

    Lines end with LF, CRLF or CR; `:` starts a comment; a blank line ends an event, which is
    dispatched when it had at least one `data` field. A piece may split a line, a CRLF or a
    UTF-8 character anywhere: an event is returned as soon as its last byte arrives."""

    def __init__(self) -> None:
        self._pending = b""
        self._after_cr = False  # the last piece ended with CR: a LF first in the next is its
        self._event = ServerEvent()
        self._has_data = False
        self.last_id: str | None = None  # the stream's last event id so far

    def feed(self, data: bytes) -> list[ServerEvent]:
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]  # the second half of a CRLF cut between pieces
        self._after_cr = False
        buffer = self._pending + data
        events: list[ServerEvent] = []
        start = 0
        while True:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, after = cr, cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)
                self._after_cr = end + 1 == len(buffer)
            else:
                end, after = lf, lf + 1
            event = self._line(buffer[start:end].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = after
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            event, had_data = self._event, self._has_data
            self._event, self._has_data = ServerEvent(), False
            return event if had_data else None
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._event.lines.append(value)
            self._has_data = True
        elif name == "event":
            self._event.event = value or "message"
        elif name == "id" and "\0" not in value:
            self._event.id = value
            self.last_id = value
        return None


def parse_events(
    chunks: Iterable[bytes], parser: EventParser | None = None
) -> Iterator[ServerEvent]:
    """The events in a stream of bytes, each as soon as its blank line arrives."""
    parser = parser or EventParser()
    for chunk in chunks:
        yield from parser.feed(chunk)


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
        data = json.loads(bytes(answer.body))  # a view when the caller gave a buffer
    except ValueError:
        text = bytes(answer.body).decode("utf-8", "replace").strip()
        return [text[:500]] if text else []
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list):
        return [str(e) for e in errors]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return [data["message"]]  # the Bacalhau-style door's (echo's) error shape
    return []
