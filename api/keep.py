"""Keep block endpoints on the API's own host and port, as keepstore/keepproxy serve them.

- `PUT /<md5>` with the block as the body (`Content-Length` required, at most 64 MiB) stores
  it once its MD5 is verified and answers the locator signed for the caller's token, as text,
  with `X-Keep-Replicas-Stored`. Any active user's full-scope token may store blocks.
- `GET`/`HEAD /<md5>+<size>+A<signature>@<expiry>` return the block (or its size); the
  signature must be valid for the token in `Authorization` (spec §6.1).

The routes are strict (32 lowercase hex digits, then only `+hints`), so they never shadow
`/admin/`, `/git/`, `/arvados/` or `/discovery/`. Errors use the Arvados envelope.

Two ways in, one set of rules. `keep_block` is the Django view (WSGI, the test client). Under
ASGI (`crunch serve`), Django would read a whole request body into a temporary file before
calling any view, so `keep_asgi` takes block uploads first: it refuses one without a
`Content-Length` or declaring more than 64 MiB before reading anything, authenticates
before the body is sent (clients that wait for `100 Continue` send nothing to a refusal),
then hashes and stages the body as it arrives, a few MiB at a time on a worker thread, so
the bytes are written once. It serves block reads too (`GET`), from a pool of reused 64 MiB
buffers, sending each block in 1 MiB messages rather than through Django's streaming
responses, which cut every message again into 64 KiB copies; `HEAD` goes through Django.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from api.authentication import bearer_token, client_ip
from api.exceptions import CORS_HEADERS, error_response, response_for
from jobs import manifests
from jobs.exceptions import Forbidden, InvalidRequest, NotLoggedIn, PermissionDenied
from jobs.keep.blocks import (
    BlockReceiver,
    BlockTooLarge,
    LengthRequired,
    StoredBlock,
    block_read_into,
    block_size,
    block_write,
    locator_permitted,
    locator_sign,
)
from jobs.keep.store import BLOCK_MAX, BlockNotFound
from jobs.models import ApiClientAuthorization
from jobs.services.tokens import scopes_allow, token_authenticate

log = logging.getLogger("crunch.api")

_LOCATOR = r"[0-9a-f]{32}(?:\+[0-9]+)?(?:\+[A-Z][A-Za-z0-9@_-]*)*"
KEEP_BLOCK_ROUTE = rf"^(?P<locator>{_LOCATOR})$"
KEEP_PATH_RE = re.compile(rf"^/{_LOCATOR}\Z")

# One copy is stored (a file, or an S3 object whose durability S3 provides). The SDK asks
# for `defaultCollectionReplication` copies, which the discovery document says is 1.
REPLICAS_STORED = 1
SEND_CHUNK = 1024 * 1024  # how much of a block each body message carries
RECEIVE_BATCH = 4 * 1024 * 1024  # how much of an upload each worker-thread hop hashes


# --- the rules, whichever way the request came in -----------------------------------------


def declared_length(raw: str | None, locator: manifests.Locator) -> int:
    if not raw:
        raise LengthRequired()
    if not raw.isdigit():
        raise InvalidRequest(f"Content-Length must be a number of bytes, not {raw!r}")
    length = int(raw)
    if length > BLOCK_MAX:
        raise BlockTooLarge(f"A block holds at most {BLOCK_MAX} bytes, not {length}")
    if locator.size is not None and locator.size != length:
        raise InvalidRequest(f"The locator says {locator.size} bytes but the body has {length}")
    return length


def authorize_put(
    *, authorization: str, ip_address: str | None, path: str
) -> ApiClientAuthorization:
    token = bearer_token(authorization)
    auth = token_authenticate(presented=token, ip_address=ip_address) if token else None
    if auth is None:
        raise NotLoggedIn()
    if not scopes_allow(scopes=auth.scopes or [], method="PUT", path=path):
        raise Forbidden()
    if not auth.user.is_active:
        raise PermissionDenied("Inactive users cannot store blocks")
    return auth


def put_answer(stored: StoredBlock, auth: ApiClientAuthorization) -> HttpResponse:
    signed = locator_sign(locator=stored.locator, token_id=auth.token_hash)
    response = HttpResponse(f"{signed}\n", content_type="text/plain")
    response["X-Keep-Replicas-Stored"] = str(REPLICAS_STORED)
    response["X-Keep-Storage-Classes-Confirmed"] = f"default={REPLICAS_STORED}"
    return response


# --- the Django view -----------------------------------------------------------------------


@csrf_exempt
def keep_block(request: HttpRequest, locator: str) -> HttpResponseBase:
    try:
        response = _dispatch(request, locator)
    except Exception as exc:
        response = response_for(exc)
    for key, value in CORS_HEADERS.items():
        response[key] = value
    return response


def _dispatch(request: HttpRequest, text: str) -> HttpResponseBase:
    locator = manifests.parse_locator(text)
    assert locator is not None  # the route only matches locators
    if request.method == "OPTIONS":
        return HttpResponse(b"")
    if request.method == "PUT":
        length = declared_length(request.META.get("CONTENT_LENGTH"), locator)
        auth = authorize_put(
            authorization=request.headers.get("Authorization", ""),
            ip_address=client_ip(request),
            path=request.path_info,
        )
        return put_answer(block_write(md5=locator.md5, body=request, size=length), auth)
    if request.method in ("GET", "HEAD"):
        return _get(request, locator)
    return error_response(405, [f"{request.method} is not a method of Keep blocks"])


def authorize_read(
    *, authorization: str, ip_address: str | None, locator: manifests.Locator
) -> None:
    """A read needs a locator signed for the caller's token, still valid (spec §6.1)."""
    token = bearer_token(authorization)
    auth = token_authenticate(presented=token, ip_address=ip_address) if token else None
    if auth is None:
        raise NotLoggedIn()
    if locator.signature() is None:
        raise PermissionDenied(f"Reading block {locator.md5} needs a signed locator")
    if not locator_permitted(locator=locator, token_id=auth.token_hash):
        raise PermissionDenied(
            f"The signature on block {locator.md5} is invalid, expired or not for this token"
        )


def read_block(locator: manifests.Locator) -> tuple[memoryview, Callable[[], None]]:
    """The block, verified, in a pooled buffer, and what gives the buffer back once the
    block is sent."""
    buffer = BUFFERS.take()
    try:
        view = block_read_into(md5=locator.md5, buffer=buffer)
    except BaseException:
        BUFFERS.give(buffer)
        raise
    return view, lambda: BUFFERS.give(buffer)


def _get(request: HttpRequest, locator: manifests.Locator) -> HttpResponseBase:
    authorize_read(
        authorization=request.headers.get("Authorization", ""),
        ip_address=client_ip(request),
        locator=locator,
    )
    if request.method == "HEAD":
        size = block_size(md5=locator.md5)
        if size is None:
            raise BlockNotFound(f"Block {locator.md5} not found")
        response = HttpResponse(b"", content_type="application/octet-stream")
        response["Content-Length"] = str(size)
        return response
    body = _BufferBody(*read_block(locator))
    streamed = StreamingHttpResponse(body, content_type="application/octet-stream")
    streamed["Content-Length"] = str(len(body))
    return streamed


class BufferPool:
    """Reused 64 MiB buffers: a fresh one per block would cost a page fault per 4 KiB."""

    def __init__(self, *, keep: int) -> None:
        self.keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(BLOCK_MAX)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)


BUFFERS = BufferPool(keep=4)


class _BufferBody:
    """A block's bytes from a pooled buffer, which goes back to the pool when the response
    is closed (WSGI and the test client; `crunch serve` sends blocks itself, `_asgi_get`)."""

    def __init__(self, view: memoryview, release: Callable[[], None]) -> None:
        self._view = view
        self._release: Callable[[], None] | None = release

    def __len__(self) -> int:
        return len(self._view)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._view), SEND_CHUNK):
            yield self._view[start : start + SEND_CHUNK].tobytes()

    def close(self) -> None:
        if self._release is not None:
            self._view.release()
            self._release()
            self._release = None


# --- ASGI: block uploads and reads before Django ----------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def keep_asgi(app: App) -> App:
    """`app`, with `PUT` and `GET /<locator>` handled here (see the module's docstring)."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and KEEP_PATH_RE.match(scope.get("path", "")):
            if scope.get("method") == "PUT":
                await _asgi_put(scope, receive, send)
                return
            if scope.get("method") == "GET":
                await _asgi_get(scope, send)
                return
        await app(scope, receive, send)

    return application


class _ClientGone(Exception):
    pass


def _request_parts(scope: Scope) -> tuple[dict[str, str], str | None]:
    """A request's headers (lower-case names) and its client's address, as `client_ip`
    reads them from a Django request."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    client = scope.get("client")
    return headers, headers.get("x-real-ip") or (client[0] if client else None)


async def _asgi_put(scope: Scope, receive: Receive, send: Send) -> None:
    headers, ip_address = _request_parts(scope)
    receiver: BlockReceiver | None = None
    try:
        locator = manifests.parse_locator(scope["path"][1:])
        assert locator is not None  # KEEP_PATH_RE matched
        length = declared_length(headers.get("content-length"), locator)
        auth, receiver = await sync_to_async(_with_database(_start_put), thread_sensitive=False)(
            authorization=headers.get("authorization", ""),
            ip_address=ip_address,
            path=scope["path"],
            md5=locator.md5,
            size=length,
        )
        stored = await _pump(receive, receiver)
        response: HttpResponse = put_answer(stored, auth)
    except _ClientGone:
        return
    except Exception as exc:
        response = response_for(exc)
        response["Connection"] = "close"  # the rest of the body, if any, is not read
    finally:
        if receiver is not None:
            receiver.abort()
    await _send_response(send, response)


async def _asgi_get(scope: Scope, send: Send) -> None:
    """A block read: the rules and the verified read on a worker thread (one trip), then the
    block sent from its pooled buffer, SEND_CHUNK bytes per message (through Django, each
    message was cut again into 64 KiB copies)."""
    headers, ip_address = _request_parts(scope)
    try:
        locator = manifests.parse_locator(scope["path"][1:])
        assert locator is not None  # KEEP_PATH_RE matched
        view, release = await sync_to_async(_with_database(_start_get), thread_sensitive=False)(
            authorization=headers.get("authorization", ""),
            ip_address=ip_address,
            locator=locator,
        )
    except Exception as exc:
        await _send_response(send, response_for(exc))
        return
    body = _BufferBody(view, release)
    try:
        start = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in CORS_HEADERS.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        # Bytes, not views of the buffer: a transport may keep what it could not send yet,
        # and the buffer serves the next read once this one is done.
        for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        body.close()


def _start_get(
    *, authorization: str, ip_address: str | None, locator: manifests.Locator
) -> tuple[memoryview, Callable[[], None]]:
    authorize_read(authorization=authorization, ip_address=ip_address, locator=locator)
    return read_block(locator)


def _start_put(
    *, authorization: str, ip_address: str | None, path: str, md5: str, size: int
) -> tuple[ApiClientAuthorization, BlockReceiver]:
    """The caller's authorization, then a receiver for the body: one trip to a thread."""
    auth = authorize_put(authorization=authorization, ip_address=ip_address, path=path)
    return auth, BlockReceiver(md5=md5, size=size)


def _with_database(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run `function` as Django runs a view: database connections that outlived their use
    are closed before and after (returned to the pool), as at a request's start and end."""

    def wrapped(**kwargs: Any) -> Any:
        close_old_connections()
        try:
            return function(**kwargs)
        finally:
            close_old_connections()

    return wrapped


async def _pump(receive: Receive, receiver: BlockReceiver) -> StoredBlock:
    """Feed the request body to `receiver` in batches on a worker thread, receiving the
    next batch while the previous one is hashed and written; the last batch's trip also
    finishes the block (a small body, which arrives in one message, costs one trip)."""
    batch: list[bytes] = []
    batched = 0
    pending: asyncio.Future[StoredBlock | None] | None = None
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            if pending is not None:
                await pending
            raise _ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            batch.append(chunk)
            batched += len(chunk)
        more = bool(message.get("more_body", False))
        if batched >= RECEIVE_BATCH or not more:
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(_feed, receiver, batch, not more))
            batch, batched = [], 0
    assert pending is not None  # the loop ends with the last batch sent
    stored = await pending
    assert stored is not None  # the last batch finishes the block
    return stored


def _feed(receiver: BlockReceiver, chunks: list[bytes], last: bool) -> StoredBlock | None:
    for chunk in chunks:
        receiver.write(chunk)
    return receiver.finish() if last else None


async def _send_response(send: Send, response: HttpResponse) -> None:
    for key, value in CORS_HEADERS.items():
        response[key] = value
    body = response.content
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
