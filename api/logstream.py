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

The stream itself is the follow engine's (api/follow_engine.py); this module is the
Arvados door to it: the request, and the text and Server-Sent Events formats.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt

from api.authentication import authenticate, reader_actors
from api.exceptions import error_response
from api.follow_engine import Format, Start, follow_log, synchronous
from api.params import parse_bool
from jobs import follow, selectors
from jobs.exceptions import InvalidRequest, NotFound
from jobs.models import Job

LOG_TAIL_FOLLOW_ROUTE = r"^arvados/v1/jobs/(?P<uuid>[^/]+)/log_tail_follow$"
DEFAULT_BUFFER_SIZE = 8192
MAX_BUFFER_SIZE = 64 * 1024 * 1024
POINTER_COMMENT = (
    'To retrieve the log stream as plain text, use a request header like "Accept: text/plain"'
)


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
        stream = synchronous(stream)  # WSGI (tests' live server): a thread per follower
    # Django would keep this thread's connection until the response ends (the stream may
    # last hours): give it back now; the stream reads with connections of its own.
    connections.close_all()
    response = StreamingHttpResponse(stream, content_type=fmt.content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass lines on as they come
    response["Last-Modified"] = http_date()
    return response


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
