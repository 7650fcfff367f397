"""Files of a collection over plain HTTP, for browsers and curl.

`GET /arvados/v1/collections/<uuid or portable data hash>/files/<path>` answers the file's
bytes; `Range: bytes=a-b` (one range) gets a 206. The token may be in `Authorization` or in
`?api_token=` (a browser link). Reading needs read permission on the collection, not block
signatures: the API checks permission itself.

`PUT /arvados/v1/collections/<uuid>/files/<path>` (`curl -T FILE URL`) stores the body as
that file of the collection, replacing one of that name, and answers the updated collection.
It needs write permission. The server cuts the body into blocks; for large or many files
`crunch put` is faster (it hashes on the client and uploads blocks in parallel).

Each block is verified before any of its bytes is sent. A damaged first block is a 422;
damage found later ends the transfer short of its `Content-Length`, so a client never takes
wrong bytes for the file.

User content is served with `Content-Security-Policy: sandbox` and `nosniff`, so an HTML
file cannot run script with the API's origin (and the admin's session cookie).
"""

from __future__ import annotations

import itertools
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from api.authentication import authenticate, reader_actors
from api.exceptions import error_response
from api.viewsets.collections import render_collection
from jobs import manifests
from jobs.exceptions import InvalidRequest, NotFound
from jobs.keep.blocks import LengthRequired
from jobs.keep.collections import (
    FileRange,
    collection_file,
    collection_file_write,
    collection_readable,
    file_bytes,
)
from jobs.services.objects import Actor

log = logging.getLogger("crunch.api")

COLLECTION_FILES_ROUTE = r"^arvados/v1/collections/(?P<identifier>[^/]+)/files(?:/(?P<path>.*))?$"
# Paths under which a `.json` suffix is part of a file name, not a format request.
COLLECTION_FILES_PATH_RE = re.compile(r"^/arvados/v1/collections/[^/]+/files/")
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)\Z")


class RangeNotSatisfiable(Exception):
    pass


@csrf_exempt
def collection_files(
    request: HttpRequest, identifier: str, path: str | None = None
) -> HttpResponseBase:
    if request.method not in ("GET", "HEAD", "PUT"):
        return error_response(405, [f"{request.method} is not a method of collection files"])
    params = {k: request.GET.get(k) for k in request.GET}
    actor = authenticate(request, params)
    assert actor is not None
    if request.method == "PUT":
        return _upload(request, actor, identifier, clean_path(path or ""))
    users = [a.user for a in (actor, *reader_actors(request, params))]
    collection = collection_readable(users=users, identifier=identifier)
    if collection is None:
        raise NotFound()
    file = collection_file(collection=collection, path=clean_path(path or ""))
    try:
        wanted = byte_range(request.headers.get("Range", ""), file.size)
    except RangeNotSatisfiable:
        response = error_response(416, [f"The file has {file.size} bytes"])
        response["Content-Range"] = f"bytes */{file.size}"
        return response
    status = 200
    if wanted is not None:
        start, length = wanted
        file = FileRange(file.pieces, file.size, start, length)
        status = 206
    response = _file_response(request, file, status)
    name = (path or "").rstrip("/").rpartition("/")[2]
    response["Content-Type"] = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response["Content-Length"] = str(file.length)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(name)}"
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    if status == 206:
        response["Content-Range"] = f"bytes {file.start}-{file.start + file.length - 1}/{file.size}"
    return response


def _upload(request: HttpRequest, actor: Actor, identifier: str, path: str) -> HttpResponse:
    if manifests.parse_locator(identifier) is not None:
        raise InvalidRequest(
            "A portable data hash names content that never changes: upload to a collection uuid"
        )
    collection = collection_readable(users=[actor.user], identifier=identifier)
    if collection is None:
        raise NotFound()
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw.isdigit():
        raise LengthRequired("An upload needs a Content-Length header")
    updated = collection_file_write(
        actor=actor, collection=collection, path=path, body=request, size=int(raw)
    )
    return JsonResponse(render_collection(updated, actor.auth))


def _file_response(request: HttpRequest, file: FileRange, status: int) -> HttpResponseBase:
    if request.method == "HEAD" or file.length == 0:
        return HttpResponse(b"", status=status)
    chunks = file_bytes(file)
    # The first block is read (and verified) now, so that its errors get a proper status.
    first = next(chunks)
    body = itertools.chain([first], _logged(chunks))
    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(_AsyncChunks(body), status=status)
    return StreamingHttpResponse(body, status=status)


def _logged(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except Exception as exc:
        log.error("collection file transfer stopped: %s", exc)
        raise


class _AsyncChunks:
    """Under ASGI, Django would read a synchronous iterator to the end before sending
    anything (the whole file in memory); this hands it over block by block instead."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await sync_to_async(next, thread_sensitive=False)(self._chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk


def clean_path(path: str) -> str:
    """A file path as the manifest names it (`dir/name`): no empty, `.` or `..` parts."""
    path = path.strip("/")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidRequest(f"Invalid file path {path!r}")
    if "\x00" in path:
        raise InvalidRequest("File paths must not contain NUL characters")
    return path


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """`(start, length)` of a single `bytes=` range, or None to send everything (no header,
    several ranges, or one that is malformed: RFC 9110 lets a server ignore those)."""
    match = _RANGE_RE.match(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        return None
    if match.group(1):
        start = int(match.group(1))
        if match.group(2) and int(match.group(2)) < start:
            return None
        if start >= size:
            raise RangeNotSatisfiable()
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        return start, end - start + 1
    suffix = int(match.group(2))
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable()
    start = max(size - suffix, 0)
    return start, size - start
