"""The follow engine: a job's log as a live stream of bytes, in whatever format a front door
speaks. A door gives `follow_log` a job uuid, where to start (`Start`) and a `Format` that
renders chunks, the queue status and the end; it gets the stream's parts to send.

No line is lost or repeated: the log is durable chunks numbered without gaps, and a
follower reads by number, from the backlog into the live part alike (`Cursor`). It ends only
after reading the chunks that follow a look at the job that showed it *sealed* (nothing
writes its log any more), so the end state also arrives when the job ends during the
hand-over.

Followers are served asynchronously and hold no thread or database connection while they
wait. One `Feed` per followed job and server process reads new chunks once for all of its
followers, when Redis says the job changed (`jobs.wakeups`), or every POLL_SECONDS without
Redis; reads run on the executor and give their connection back at once. Under WSGI,
`synchronous` runs a stream on an event loop of its own.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from jobs import follow
from jobs.metrics import LOG_FOLLOWERS
from jobs.models import JobState
from jobs.wakeups import channel

log = logging.getLogger("crunch.logstream")

POLL_SECONDS = 0.1  # without Redis, a feed reads the database this often
SAFETY_SECONDS = 2.0  # with Redis too: a wake-up is a hint and may be lost
STATUS_SECONDS = 5.0  # a queued job's status line, this often
KEEPALIVE_SECONDS = 15.0  # an SSE comment on a quiet stream, for proxies
CACHE_BYTES = 4 * 1024 * 1024  # recent chunks a feed keeps for its followers

T = TypeVar("T")


# --- what a door provides: its format -------------------------------------------------------------


class Format:
    """How a door renders a followed log: each method returns the bytes to send."""

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


def synchronous(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
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
    LOG_FOLLOWERS.inc()
    try:
        async for part in _live(feed, fmt, cursor, status):
            yield part
    finally:
        LOG_FOLLOWERS.dec()
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
