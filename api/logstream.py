"""`GET /arvados/v1/jobs/{uuid}/log_tail_follow`: a job's log as a live stream (spec §5.9).

What the client gets depends on its `Accept` header (parsed with q-values):

- `text/plain` (or `text/*`, `*/*`: curl, the Arvados SDK): text lines. While the job is
  queued, a status line at the start and every few seconds::

      2026-11-21_06:40:00 job <uuid> queue_position 2 queue_size 5 nodes_idle 0 nodes_alloc 1

  (plus ` cannot_run: <why>` when no live node can run it); then the last `buffer_size`
  bytes of log (default 8192), from the start of a line, and every later line as it is
  written; finally one line with the end state, and the stream closes::

      2026-11-21_06:40:09 job <uuid> Complete finished_at 2026-11-21T06:40:09.1Z output <p> log <p>

- `text/event-stream` (browsers' EventSource, `crunch logs`): the same as Server-Sent Events.
  A log chunk is one event whose `id` is its sequence number (one `data:` per line); status
  and end are `event: status` / `event: end` with a JSON object. A reconnecting client sends
  `Last-Event-ID` and continues after that chunk.
- anything else (`application/json`, no header): the original's JSON pointer,
  `{"href": ..., "comment": ...}`.

`since=N` starts at chunk N instead of the tail (`since=0`: the whole log); `follow=false`
sends what is there and closes.

No line is lost or repeated: the log is durable chunks numbered without gaps, and a
follower reads by number, from the backlog into the live part alike. It ends only after
reading the chunks that follow a look at the job that showed it *sealed* (nothing writes its
log any more), so the end state also arrives when the job ends during the hand-over.

Followers are served asynchronously and hold no thread or database connection while they
wait. One `Feed` per followed job and server process reads new chunks once for all of its
followers, when Redis says the job changed (`jobs.wakeups`), or every POLL_SECONDS without
Redis; reads run on the executor and give their connection back at once.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt

from api.authentication import authenticate, reader_actors
from api.exceptions import error_response
from api.params import parse_bool
from jobs import follow, selectors
from jobs.exceptions import InvalidRequest, NotFound
from jobs.models import Job, JobState
from jobs.wakeups import channel

log = logging.getLogger("crunch.logstream")

LOG_TAIL_FOLLOW_ROUTE = r"^arvados/v1/jobs/(?P<uuid>[^/]+)/log_tail_follow$"
DEFAULT_BUFFER_SIZE = 8192
MAX_BUFFER_SIZE = 64 * 1024 * 1024
POLL_SECONDS = 0.1  # without Redis, a feed reads the database this often
SAFETY_SECONDS = 2.0  # with Redis too: a wake-up is a hint and may be lost
STATUS_SECONDS = 5.0  # a queued job's status line, this often
KEEPALIVE_SECONDS = 15.0  # an SSE comment on a quiet stream, for proxies
CACHE_BYTES = 4 * 1024 * 1024  # recent chunks a feed keeps for its followers
POINTER_COMMENT = (
    'To retrieve the log stream as plain text, use a request header like "Accept: text/plain"'
)

T = TypeVar("T")


# --- the request ----------------------------------------------------------------------------


def negotiate(accept: str | None) -> str:
    """ "text", "sse" or "json" for an Accept header: the highest q-value wins, then the more
    specific range; plain text is preferred where the client does not say."""
    if not accept or not accept.strip():
        return "json"
    offers = {"text/plain": "text", "text/event-stream": "sse", "application/json": "json"}
    best: tuple[float, int, int] | None = None
    chosen = "json"
    for rank, (media, kind) in enumerate(offers.items()):
        quality, specificity = _match(accept, media)
        if quality <= 0:
            continue
        key = (quality, specificity, -rank)
        if best is None or key > best:
            best, chosen = key, kind
    return chosen


def _match(accept: str, media: str) -> tuple[float, int]:
    """(q, specificity) of the most specific range in `accept` that covers `media`."""
    kind = media.partition("/")[0]
    found: tuple[int, float] | None = None
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        rng = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 0.0
        r_kind, _, r_sub = rng.partition("/")
        if rng == media:
            specificity = 3
        elif r_kind == kind and r_sub == "*":
            specificity = 2
        elif rng == "*/*":
            specificity = 1
        else:
            continue
        if found is None or specificity > found[0]:
            found = (specificity, quality)
    return (0.0, 0) if found is None else (found[1], found[0])


def _int_param(value: str | None, name: str, *, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
        raise InvalidRequest(f"{name} must be an integer, not {value!r}")
    number = int(value)
    if number < minimum:
        raise InvalidRequest(f"{name} must be at least {minimum}")
    return number


@csrf_exempt
def log_tail_follow(request: HttpRequest, uuid: str) -> HttpResponseBase:
    if request.method not in ("GET", "POST"):
        return error_response(404, ["Path not found"])
    params = {k: request.GET.get(k) for k in request.GET}
    actor = authenticate(request, params)
    assert actor is not None
    users = [a.user for a in (actor, *reader_actors(request, params))]
    job = selectors.readable_object(Job.objects.only("uuid", "owner_uuid"), users, uuid)
    if job is None:
        raise NotFound()
    kind = negotiate(request.headers.get("Accept"))
    if kind == "json":
        return JsonResponse(
            {
                "href": request.build_absolute_uri(f"/arvados/v1/jobs/{uuid}"),
                "comment": POINTER_COMMENT,
            }
        )
    buffer_size = _int_param(params.get("buffer_size"), "buffer_size", minimum=0)
    since = _int_param(params.get("since"), "since", minimum=0)
    last_event = _int_param(request.headers.get("Last-Event-ID"), "Last-Event-ID", minimum=-1)
    if kind == "sse" and last_event is not None:
        since = last_event + 1  # a reconnecting EventSource: after the last chunk it got
    follow_on = parse_bool(params.get("follow"), "follow", True)
    start = Start(
        since=since,
        buffer_size=min(
            DEFAULT_BUFFER_SIZE if buffer_size is None else buffer_size, MAX_BUFFER_SIZE
        ),
    )
    fmt: Format = EventFormat(uuid) if kind == "sse" else TextFormat(uuid)
    stream: Any = follow_log(uuid, start, fmt, follow=follow_on)
    if not isinstance(request, ASGIRequest):
        stream = _synchronous(stream)  # WSGI (tests' live server): a thread per follower
    # Django would keep this thread's connection until the response ends (the stream may
    # last hours): give it back now; the stream reads with connections of its own.
    connections.close_all()
    response = StreamingHttpResponse(stream, content_type=fmt.content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass lines on as they come
    response["Last-Modified"] = http_date()
    return response


def _synchronous(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """The stream on an event loop of its own, part by part (Django would otherwise read an
    asynchronous stream to its end before sending anything under WSGI)."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(stream))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())  # type: ignore[attr-defined]
        loop.close()


# --- formats --------------------------------------------------------------------------------


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H:%M:%S")


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


def status_line(uuid: str, status: follow.QueueStatus) -> str:
    line = (
        f"{_stamp()} job {uuid} queue_position {status.position} queue_size {status.size} "
        f"nodes_idle {status.nodes_idle} nodes_alloc {status.nodes_alloc}"
    )
    return f"{line} cannot_run: {status.cannot_run}" if status.cannot_run else line


def end_line(uuid: str, view: follow.JobView | None) -> str:
    if view is None:
        return f"{_stamp()} job {uuid} deleted"
    return (
        f"{_stamp()} job {uuid} {view.state} finished_at {_iso(view.finished_at) or '-'} "
        f"output {view.output or '-'} log {view.log or '-'}"
    )


class Format:
    content_type = ""

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid

    def opening(self) -> bytes:
        return b""

    def chunk(self, seq: int, text: str) -> bytes:
        raise NotImplementedError

    def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
        raise NotImplementedError

    def end(self, view: follow.JobView | None) -> bytes:
        raise NotImplementedError

    def keepalive(self) -> bytes:
        return b""


class TextFormat(Format):
    content_type = "text/plain; charset=utf-8"

    def chunk(self, seq: int, text: str) -> bytes:
        return follow.chunk_lines(text).encode("utf-8")

    def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
        return (status_line(self.uuid, status) + "\n").encode("utf-8")

    def end(self, view: follow.JobView | None) -> bytes:
        return (end_line(self.uuid, view) + "\n").encode("utf-8")


_SSE_LINES = re.compile(r"\r\n|\r|\n")


class EventFormat(Format):
    content_type = "text/event-stream; charset=utf-8"

    def opening(self) -> bytes:
        return b"retry: 2000\n\n"

    def chunk(self, seq: int, text: str) -> bytes:
        lines = _SSE_LINES.split(text[:-1] if text.endswith("\n") else text)
        return (f"id: {seq}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()

    def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
        data = {
            "line": status_line(self.uuid, status),
            "state": view.state,
            "queue_position": status.position,
            "queue_size": status.size,
            "nodes_idle": status.nodes_idle,
            "nodes_alloc": status.nodes_alloc,
            "cannot_run": status.cannot_run,
        }
        return f"event: status\ndata: {json.dumps(data)}\n\n".encode()

    def end(self, view: follow.JobView | None) -> bytes:
        data: dict[str, Any] = {"line": end_line(self.uuid, view), "uuid": self.uuid}
        if view is not None:
            data.update(
                state=view.state,
                finished_at=_iso(view.finished_at),
                output=view.output,
                log=view.log,
            )
        else:
            data["state"] = None
        return f"event: end\ndata: {json.dumps(data)}\n\n".encode()

    def keepalive(self) -> bytes:
        return b": keepalive\n\n"


# --- database reads, off the event loop -----------------------------------------------------


def _closing(fn: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            # Back to the pool (or closed, on SQLite): a waiting follower holds no connection.
            connections.close_all()

    return run


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await sync_to_async(_closing(fn), thread_sensitive=False)(*args, **kwargs)


class Start:
    def __init__(self, *, since: int | None, buffer_size: int) -> None:
        self.since = since
        self.buffer_size = buffer_size


def _opening_read(
    uuid: str, start: Start
) -> tuple[follow.JobView | None, int, int, follow.QueueStatus | None]:
    view = follow.job_view(uuid)
    if start.since is not None:
        seq, offset = start.since, 0
    else:
        seq, offset = follow.tail_start(uuid, start.buffer_size)
    status = (
        follow.queue_status(view) if view is not None and view.state == JobState.QUEUED else None
    )
    return view, seq, offset, status


def _feed_read(
    uuid: str, first_seq: int | None, want_status: bool
) -> tuple[follow.JobView | None, int, list[tuple[int, str]], follow.QueueStatus | None]:
    """The job, then its chunks from `first_seq` (None: only learn where the log ends)."""
    view = follow.job_view(uuid)
    if view is None:
        return None, first_seq or 0, [], None
    if first_seq is None:
        first_seq, chunks = follow.last_seq(uuid) + 1, []
    else:
        chunks = follow.chunks_from(uuid, first_seq, sealed=view.sealed)
    status = follow.queue_status(view) if want_status and view.state == JobState.QUEUED else None
    return view, first_seq, chunks, status


# --- feeds: one reader per followed job and process ----------------------------------------


class Feed:
    """Reads a job's new chunks once for all its followers in this process, and keeps the
    recent ones. `next_seq`: every chunk below it has been read; `complete`: the job is sealed
    and every chunk has been read."""

    def __init__(self, hub: Hub, uuid: str) -> None:
        self.hub = hub
        self.uuid = uuid
        self.followers = 0
        self.view: follow.JobView | None = None
        self.complete = False
        self.next_seq = 0
        self.seqs: list[int] = []
        self.texts: list[str] = []
        self.cached_bytes = 0
        self.status: follow.QueueStatus | None = None
        self.status_version = 0
        self.status_at = 0.0
        self.version = 0
        self.ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self._started = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        self._poke.set()

    def cached_from(self, seq: int) -> list[tuple[int, str]] | None:
        """The chunks from `seq` on that this feed holds; None when `seq` is older than them."""
        if seq >= self.next_seq:
            return []
        index = bisect.bisect_left(self.seqs, seq)
        if index == 0 and (not self.seqs or self.seqs[0] > seq):
            return None
        return list(zip(self.seqs[index:], self.texts[index:], strict=True))

    async def wait(self, seen_version: int, timeout: float) -> None:
        if self.version != seen_version:
            return
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                more = await self._refresh()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: followers keep waiting
                failures += 1
                log.warning("following %s: %s", self.uuid, exc)
                more = False
            if more:
                continue
            if self.complete:
                return  # nothing will change any more
            interval = SAFETY_SECONDS if self.hub.redis_live else POLL_SECONDS
            if self.view is not None and self.view.state == JobState.QUEUED:
                interval = min(interval, STATUS_SECONDS)
            interval = min(interval * (1 + failures), 10.0)
            try:
                await asyncio.wait_for(self._poke.wait(), interval)
            except TimeoutError:
                pass
            self._poke.clear()

    async def _refresh(self) -> bool:
        now = time.monotonic()
        want_status = now - self.status_at >= min(1.0, STATUS_SECONDS)
        view, first_seq, chunks, status = await db(
            _feed_read, self.uuid, self.next_seq if self._started else None, want_status
        )
        self._started = True
        self.view = view
        self.next_seq = first_seq
        if chunks:
            for seq, text in chunks:
                self.seqs.append(seq)
                self.texts.append(text)
                self.cached_bytes += len(text)
            self.next_seq = chunks[-1][0] + 1
            self._trim()
        if status is not None:
            self.status, self.status_at = status, now
            self.status_version += 1
        full = len(chunks) >= follow.READ_CHUNKS
        self.complete = view is None or (view.sealed and not full)
        self.ready.set()
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return full

    def _trim(self) -> None:
        drop = 0
        while self.cached_bytes > CACHE_BYTES and drop < len(self.seqs) - 1:
            self.cached_bytes -= len(self.texts[drop])
            drop += 1
        if drop:
            del self.seqs[:drop], self.texts[:drop]


class Hub:
    """The feeds of one event loop, and its Redis subscription."""

    _hubs: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.feeds: dict[str, Feed] = {}
        self.redis_live = False
        self._listener: asyncio.Task[None] | None = None

    @classmethod
    def current(cls) -> Hub:
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None:
            hub = cls._hubs[loop] = cls()
        return hub

    def attach(self, uuid: str) -> Feed:
        if settings.REDIS_URL and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        feed = self.feeds.get(uuid)
        if feed is None or feed.task.done():
            feed = self.feeds[uuid] = Feed(self, uuid)
        feed.followers += 1
        return feed

    def detach(self, feed: Feed) -> None:
        feed.followers -= 1
        if feed.followers <= 0 and self.feeds.get(feed.uuid) is feed:
            del self.feeds[feed.uuid]
            feed.task.cancel()

    def poke_all(self) -> None:
        for feed in self.feeds.values():
            feed.poke()

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        delay = 0.5
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel())
                self.redis_live, delay = True, 0.5
                self.poke_all()  # whatever happened while we were not listening
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    feed = self.feeds.get(message["data"].decode("ascii", "replace"))
                    if feed is not None:
                        feed.poke()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # followers poll the database until Redis is back
                log.warning("log wake-ups: Redis: %s; polling until it is back", exc)
            finally:
                self.redis_live = False
                self.poke_all()
                try:
                    await client.aclose()
                except Exception:  # closing a connection that already broke
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


# --- one follower ---------------------------------------------------------------------------


class Cursor:
    """Where a follower is: the next chunk to send, and how many characters of it to skip
    (a tail that starts inside a chunk, at a line)."""

    def __init__(self, seq: int, offset: int) -> None:
        self.seq = seq
        self.offset = offset

    def take(self, chunks: list[tuple[int, str]], fmt: Format) -> list[bytes]:
        parts = []
        for seq, text in chunks:
            piece = text[self.offset :] if self.offset else text
            self.offset = 0
            if piece:
                parts.append(fmt.chunk(seq, piece))
            self.seq = seq + 1
        return parts


async def follow_log(uuid: str, start: Start, fmt: Format, *, follow: bool) -> AsyncIterator[bytes]:
    opening = fmt.opening()
    if opening:
        yield opening
    view, next_seq, offset, status = await db(_opening_read, uuid, start)
    cursor = Cursor(next_seq, offset)
    if status is not None and view is not None:
        yield fmt.status(view, status)
    if not follow:
        async for part in _backlog(uuid, fmt, cursor):
            yield part
        return
    hub = Hub.current()
    feed = hub.attach(uuid)
    try:
        async for part in _live(feed, fmt, cursor, status):
            yield part
    finally:
        hub.detach(feed)


async def _backlog(uuid: str, fmt: Format, cursor: Cursor) -> AsyncIterator[bytes]:
    """`follow=false`: what is stored now, and the end line if the job is sealed."""
    view = await db(follow.job_view, uuid)
    sealed = view is None or view.sealed
    while True:
        chunks = await db(follow.chunks_from, uuid, cursor.seq, sealed=sealed)
        for part in cursor.take(chunks, fmt):
            yield part
        if len(chunks) < follow.READ_CHUNKS:
            break
    if sealed:
        yield fmt.end(view)


async def _live(
    feed: Feed,
    fmt: Format,
    cursor: Cursor,
    status: follow.QueueStatus | None,
) -> AsyncIterator[bytes]:
    await feed.ready.wait()
    status_version = feed.status_version
    last_status = status
    status_sent = time.monotonic()
    quiet_since = time.monotonic()
    while True:
        seen = feed.version
        chunks = feed.cached_from(cursor.seq)
        if chunks is None:
            sealed = feed.view is None or feed.view.sealed
            chunks = await db(follow.chunks_from, feed.uuid, cursor.seq, sealed=sealed)
        if chunks:
            for part in cursor.take(chunks, fmt):
                yield part
            quiet_since = time.monotonic()
            continue
        if feed.complete and cursor.seq >= feed.next_seq:
            yield fmt.end(feed.view)
            return
        now = time.monotonic()
        view = feed.view
        if (
            view is not None
            and view.state == JobState.QUEUED
            and feed.status is not None
            and feed.status_version != status_version
            and (
                now - status_sent >= STATUS_SECONDS
                or last_status is None
                or feed.status.cannot_run != last_status.cannot_run
            )
        ):
            status_version, last_status, status_sent = feed.status_version, feed.status, now
            yield fmt.status(view, feed.status)
            continue
        keepalive = fmt.keepalive()
        if keepalive and now - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = now
            yield keepalive
        await feed.wait(seen, STATUS_SECONDS)
