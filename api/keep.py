"""Keep block endpoints on the API's own host and port, as keepstore/keepproxy serve them.

- `PUT /<md5>` with the block as the body (`Content-Length` required, at most 64 MiB) stores
  it once its MD5 is verified and answers the locator signed for the caller's token, as text,
  with `X-Keep-Replicas-Stored`. Any active user's full-scope token may store blocks.
- `GET`/`HEAD /<md5>+<size>+A<signature>@<expiry>` return the block (or its size); the
  signature must be valid for the token in `Authorization` (spec §6.1).

The routes are strict (32 lowercase hex digits, then only `+hints`), so they never shadow
`/admin/`, `/git/`, `/arvados/` or `/discovery/`. Errors use the Arvados envelope.

Under ASGI, Django reads a whole request body before calling a view, so `keep_upload_guard`
wraps the application: a block upload without a `Content-Length`, or declaring more than
64 MiB, is answered 411/413 at once and its body is never read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from api.authentication import client_ip, header_token
from api.exceptions import CORS_HEADERS, error_response, new_error_token, response_for
from jobs import manifests
from jobs.exceptions import Forbidden, InvalidRequest, NotLoggedIn, PermissionDenied
from jobs.keep.blocks import (
    LengthRequired,
    block_read,
    block_size,
    block_write,
    locator_permitted,
    locator_sign,
)
from jobs.keep.store import BLOCK_MAX, BlockNotFound
from jobs.models import ApiClientAuthorization
from jobs.services.tokens import scopes_allow, token_authenticate

_LOCATOR = r"[0-9a-f]{32}(?:\+[0-9]+)?(?:\+[A-Z][A-Za-z0-9@_-]*)*"
KEEP_BLOCK_ROUTE = rf"^(?P<locator>{_LOCATOR})$"
KEEP_PATH_RE = re.compile(rf"^/{_LOCATOR}\Z")

# One copy is stored (a file, or an S3 object whose durability S3 provides). The SDK asks
# for `defaultCollectionReplication` copies, which the discovery document says is 1.
REPLICAS_STORED = 1


@csrf_exempt
def keep_block(request: HttpRequest, locator: str) -> HttpResponse:
    try:
        response = _dispatch(request, locator)
    except Exception as exc:
        response = response_for(exc)
    for key, value in CORS_HEADERS.items():
        response[key] = value
    return response


def _dispatch(request: HttpRequest, text: str) -> HttpResponse:
    locator = manifests.parse_locator(text)
    assert locator is not None  # the route only matches locators
    if request.method == "OPTIONS":
        return HttpResponse(b"")
    if request.method == "PUT":
        return _put(request, locator)
    if request.method in ("GET", "HEAD"):
        return _get(request, locator)
    return error_response(405, [f"{request.method} is not a method of Keep blocks"])


def _authenticate(request: HttpRequest) -> ApiClientAuthorization:
    token = header_token(request)
    auth = token_authenticate(presented=token, ip_address=client_ip(request)) if token else None
    if auth is None:
        raise NotLoggedIn()
    return auth


def _put(request: HttpRequest, locator: manifests.Locator) -> HttpResponse:
    auth = _authenticate(request)
    if not scopes_allow(scopes=auth.scopes or [], method="PUT", path=request.path_info):
        raise Forbidden()
    if not auth.user.is_active:
        raise PermissionDenied("Inactive users cannot store blocks")
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw:
        raise LengthRequired()
    if not raw.isdigit():
        raise InvalidRequest(f"Content-Length must be a number of bytes, not {raw!r}")
    length = int(raw)
    if locator.size is not None and locator.size != length:
        raise InvalidRequest(f"The locator says {locator.size} bytes but the body has {length}")
    stored = block_write(md5=locator.md5, body=request, size=length)
    signed = locator_sign(locator=stored.locator, token_id=auth.token_hash)
    response = HttpResponse(f"{signed}\n", content_type="text/plain")
    response["X-Keep-Replicas-Stored"] = str(REPLICAS_STORED)
    response["X-Keep-Storage-Classes-Confirmed"] = f"default={REPLICAS_STORED}"
    return response


def _get(request: HttpRequest, locator: manifests.Locator) -> HttpResponse:
    auth = _authenticate(request)
    if locator.signature() is None:
        raise PermissionDenied(f"Reading block {locator.md5} needs a signed locator")
    if not locator_permitted(locator=locator, token_id=auth.token_hash):
        raise PermissionDenied(
            f"The signature on block {locator.md5} is invalid, expired or not for this token"
        )
    if request.method == "HEAD":
        size = block_size(md5=locator.md5)
        if size is None:
            raise BlockNotFound(f"Block {locator.md5} not found")
        response = HttpResponse(b"", content_type="application/octet-stream")
        response["Content-Length"] = str(size)
        return response
    data = block_read(md5=locator.md5)
    return HttpResponse(data, content_type="application/octet-stream")


# --- ASGI: refuse oversized uploads before Django reads them -----------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def keep_upload_guard(app: App) -> App:
    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") == "PUT"
            and KEEP_PATH_RE.match(scope.get("path", ""))
        ):
            refusal = _upload_refusal(scope)
            if refusal is not None:
                await _send_error(send, *refusal)
                return
        await app(scope, receive, send)

    return guarded


def _upload_refusal(scope: Scope) -> tuple[int, str] | None:
    headers = {k.lower(): v for k, v in scope.get("headers", [])}
    raw = headers.get(b"content-length")
    if raw is None:
        return 411, LengthRequired.default_message
    if raw.isdigit() and int(raw) > BLOCK_MAX:
        return 413, f"A block holds at most {BLOCK_MAX} bytes, not {int(raw)}"
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"errors": [message], "error_token": new_error_token()}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
