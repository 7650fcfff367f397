"""`crunch serve`'s ASGI handler (api/asgi_handler.py): the middleware chain and the view run
as one synchronous call on a request thread of its own, kept for later requests."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from django.http import HttpRequest, JsonResponse
from django.urls import path

from api.asgi_handler import SyncChainASGIHandler

# The slow view waits for the test to let it go; the threads it ran on.
RELEASE = threading.Event()
SLOW_THREADS: list[int] = []


def where(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"thread": threading.get_ident(), "middleware_thread": request.middleware_thread}  # type: ignore[attr-defined]
    )


def slow(request: HttpRequest) -> JsonResponse:
    SLOW_THREADS.append(threading.get_ident())
    RELEASE.wait(30)
    return JsonResponse({"thread": threading.get_ident()})


urlpatterns = [path("where", where), path("slow", slow)]


class RecordThread:
    """A synchronous-only middleware: notes the thread it runs on."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        request.middleware_thread = threading.get_ident()  # type: ignore[attr-defined]
        return self.get_response(request)


@pytest.fixture
def handler(settings: Any) -> SyncChainASGIHandler:
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = [
        "django.middleware.common.CommonMiddleware",  # sync and async capable
        f"{__name__}.RecordThread",  # sync only
        "django.middleware.csrf.CsrfViewMiddleware",
    ]
    return SyncChainASGIHandler()


async def call(app: SyncChainASGIHandler, route: str) -> tuple[int, bytes]:
    """One GET through the ASGI interface."""
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/{route}",
        "raw_path": f"/{route}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), 0)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_the_chain_and_the_view_run_on_one_thread_kept_for_the_next_request(
    handler: SyncChainASGIHandler,
) -> None:
    async def two() -> list[tuple[int, bytes]]:
        return [await call(handler, "where"), await call(handler, "where")]

    (status1, body1), (status2, body2) = asyncio.run(two())
    assert (status1, status2) == (200, 200)
    first, second = json.loads(body1), json.loads(body2)
    assert first["thread"] == first["middleware_thread"] != threading.get_ident()
    assert second["thread"] == first["thread"]  # the thread was kept


def test_concurrent_requests_run_on_threads_of_their_own(handler: SyncChainASGIHandler) -> None:
    RELEASE.clear()
    SLOW_THREADS.clear()

    async def scenario() -> list[tuple[int, bytes]]:
        slow = asyncio.ensure_future(call(handler, "slow"))
        while not SLOW_THREADS:  # the slow view is running (and holds its thread)
            await asyncio.sleep(0.01)
        try:
            # Answered while the slow view still runs: on the slow view's thread it would
            # wait for the view to be let go.
            meanwhile = await call(handler, "where")
        finally:
            RELEASE.set()
        return [meanwhile, await slow, await call(handler, "where")]

    try:
        (s1, b1), (s2, b2), (s3, b3) = asyncio.run(scenario())
    finally:
        RELEASE.set()
    assert (s1, s2, s3) == (200, 200, 200)
    meanwhile, slow, later = (json.loads(b)["thread"] for b in (b1, b2, b3))
    assert slow == SLOW_THREADS[0]
    assert meanwhile != slow
    assert later in (meanwhile, slow)  # both threads were kept
