"""The WebSocket routing in front of Django (api/websocket.py), driven through ASGI."""

from __future__ import annotations

import asyncio
from typing import Any

from api.websocket import Route, WebSocket, websocket_app


async def _http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _echo(ws: WebSocket, name: str) -> None:
    await ws.accept()
    await ws.send_text(f"hello {name} {ws.query.get('x', '')}")


async def _refuse(ws: WebSocket) -> None:
    await ws.deny(401, b"no token")


APP = websocket_app(_http_app, [Route.of(r"/ws/(?P<name>[a-z]+)", _echo), Route.of("/no", _refuse)])


def _connect(path: str, query: bytes = b"", http_response: bool = True) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    extensions = {"websocket.http.response": {}} if http_response else {}
    scope = {
        "type": "websocket",
        "path": path,
        "query_string": query,
        "headers": [],
        "extensions": extensions,
    }
    asyncio.run(APP(scope, receive, send))
    return sent


def test_a_route_gets_its_path_groups_and_query_and_ends_with_a_normal_close() -> None:
    sent = _connect("/ws/abc", b"x=1")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hello abc 1"
    assert sent[2]["code"] == 1000


def test_an_unknown_path_is_refused_at_the_handshake() -> None:
    sent = _connect("/ws/ABC")
    assert sent[0] == {
        "type": "websocket.http.response.start",
        "status": 404,
        "headers": [(b"content-type", b"text/plain")],
    }
    assert sent[1]["body"] == b"Not found"


def test_a_refusal_is_an_http_status_or_a_policy_close() -> None:
    assert _connect("/no")[0]["status"] == 401
    assert _connect("/no", http_response=False) == [{"type": "websocket.close", "code": 1008}]


def test_http_passes_through() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    asyncio.run(APP({"type": "http", "path": "/ws/abc"}, receive, send))
    assert sent[0]["status"] == 204
