"""WebSocket routes for the front doors, served under ASGI (`crunch serve`).

Django answers HTTP only, and some clients read a job's log over a WebSocket (Ray's
`tail_job_logs`, Bacalhau's `logs`). `websocket_app` sits in front of the Django
application: a WebSocket connection whose path matches a route goes to that route's handler,
with a `WebSocket` that speaks the ASGI protocol for it; any other is refused (an HTTP 403 to
the handshake, as Django's own ASGI handler would). HTTP passes straight through.

A door keeps its routes in its own package and lists them in `api/asgi.py`. A handler
authenticates with `actor_for` (the token from `Authorization`, as every door sends it), and
refuses with `deny` before accepting, which the client sees as an HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from api.authentication import bearer_token
from jobs.services.objects import Actor
from jobs.services.tokens import token_authenticate

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebSocket:
    """One connection, for a route's handler."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.path: str = scope.get("path", "")
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        self.query = {
            k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()
        }
        self.accepted = False
        self.closed = False

    async def _connect(self) -> bool:
        message = await self._receive()
        return message.get("type") == "websocket.connect"

    async def accept(self) -> None:
        await self._send({"type": "websocket.accept"})
        self.accepted = True

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def deny(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        """Refuse the handshake with an HTTP `status` (and `body`, where the server can send
        one: ASGI's `websocket.http.response` extension); else a plain 403 close."""
        if "websocket.http.response" in self.scope.get("extensions", {}):
            headers = [(b"content-type", content_type.encode())]
            await self._send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await self._send({"type": "websocket.http.response.body", "body": body})
        else:
            await self._send({"type": "websocket.close", "code": 1008})
        self.closed = True

    async def wait_disconnect(self) -> None:
        """Returns when the client goes away (run it beside the sending task)."""
        while True:
            message = await self._receive()
            if message.get("type") == "websocket.disconnect":
                return

    async def actor(self) -> Actor | None:
        """The caller, from the Bearer (or OAuth2) token in `Authorization`; None without
        a valid one."""
        return await actor_for(self.headers.get("authorization", ""), self.headers.get("x-real-ip"))


async def send_all(ws: WebSocket, texts: AsyncIterator[str]) -> None:
    """Send each of `texts` as a text frame; once they end, a normal close (1000). Stops
    when the client goes away; an error while sending closes with 1011."""

    async def send() -> None:
        async for text in texts:
            await ws.send_text(text)

    sender = asyncio.ensure_future(send())
    watcher = asyncio.ensure_future(ws.wait_disconnect())
    done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sender, watcher):
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if sender in done and sender.exception() is None:
        await ws.close(1000)
    elif watcher in done:
        ws.closed = True  # the client went away: nothing more to send
    else:
        await ws.close(1011)


Handler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    handler: Handler  # called as handler(websocket, **the pattern's named groups)

    @classmethod
    def of(cls, pattern: str, handler: Handler) -> Route:
        return cls(re.compile(pattern), handler)


def _authenticate(authorization: str, ip_address: str | None) -> Actor | None:
    close_old_connections()
    try:
        token = bearer_token(authorization)
        auth = token_authenticate(presented=token, ip_address=ip_address) if token else None
        return Actor(user=auth.user, auth=auth) if auth is not None else None
    finally:
        close_old_connections()


async def actor_for(authorization: str, ip_address: str | None = None) -> Actor | None:
    return await sync_to_async(_authenticate, thread_sensitive=False)(authorization, ip_address)


def websocket_app(app: App, routes: Sequence[Route]) -> App:
    """`app`, with WebSocket connections dispatched to `routes`."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        ws = WebSocket(scope, receive, send)
        if not await ws._connect():
            return
        for route in routes:
            match = route.pattern.fullmatch(ws.path)
            if match:
                try:
                    await route.handler(ws, **match.groupdict())
                except Exception:
                    # A handler answers its own errors; this is a bug, logged by the server.
                    if ws.accepted:
                        await ws.close(1011)
                    elif not ws.closed:
                        await ws.deny(500, b"Internal error")
                    raise
                if ws.accepted:
                    await ws.close(1000)
                elif not ws.closed:
                    await ws.deny(403, b"Forbidden")
                return
        await ws.deny(404, b"Not found")

    return application
