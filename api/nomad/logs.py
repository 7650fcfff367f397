"""`GET /v1/client/fs/logs/{alloc}`: an allocation's log from the job's gap-free log, plain
or as Nomad's JSON frames, with offsets; a followed stream closes once the task has ended
and its log is drained (Nomad's never closes; python-nomad waits for the close)."""

from __future__ import annotations

import base64
import json
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from api.nomad import wire
from api.nomad.base import (
    actor_of,
    find_allocation,
    nomad_view,
    template_of,
)
from jobs.models import JobState
from jobs.services.runs import job_log_text

# --- logs ------------------------------------------------------------------------------------


def _bool(value: str, name: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise wire.bad(
        f"failed to parse {name} field to boolean: "
        f'strconv.ParseBool: parsing "{value}": invalid syntax'
    )


@nomad_view(("GET",))
def alloc_logs(request: HttpRequest, alloc_id: str) -> HttpResponseBase:
    actor = actor_of(request)
    task = request.GET.get("task") or ""
    kind = request.GET.get("type") or ""
    if not task:
        raise wire.bad("must provide task name")
    if kind not in ("stdout", "stderr"):
        raise wire.bad("must provide log type (stdout/stderr)")
    follow = _bool(request.GET.get("follow", "false"), "follow")
    plain = _bool(request.GET.get("plain", "false"), "plain")
    origin = request.GET.get("origin") or "start"
    if origin not in ("start", "end"):
        raise wire.bad("origin must be start or end")
    try:
        offset = int(request.GET.get("offset") or 0)
    except ValueError:
        raise wire.bad(f"error parsing offset: {request.GET.get('offset')!r}") from None
    job, _ = find_allocation(actor, alloc_id)
    template = template_of(job)
    if template is not None and task != template.spec.get("task"):
        raise wire.bad(f'unknown task name "{task}"')
    path = f"alloc/logs/{task}.{kind}.0"
    # The task's stdout and stderr share one log in Crunch: it is served as stdout.
    text = job_log_text(job_uuid=job.uuid) if kind == "stdout" else ""
    if not follow or job.state not in (JobState.QUEUED, JobState.RUNNING):
        data = text.encode("utf-8")
        data = data[max(len(data) - offset, 0) :] if origin == "end" else data[offset:]
        if plain:
            return HttpResponse(data, content_type="text/plain; charset=utf-8")
        frame = {"Offset": len(data), "Data": base64.b64encode(data).decode(), "File": path}
        return HttpResponse(json.dumps(frame) if data else "", content_type="application/json")
    return StreamingHttpResponse(
        _followed(request, job.uuid, plain=plain, path=path),
        content_type="text/plain; charset=utf-8" if plain else "application/json",
    )


def _followed(request: HttpRequest, uuid: str, *, plain: bool, path: str) -> Any:
    """The log as it grows, until the job has ended and its log is drained (Nomad's own
    stream never closes; python-nomad waits for the close)."""
    from django.db import connections

    from api.follow_engine import Format, Start, follow_log, synchronous
    from jobs import follow

    class Frames(Format):
        offset = 0

        def chunk(self, seq: int, text: str) -> bytes:
            data = follow.chunk_lines(text).encode("utf-8")
            if plain:
                return data
            self.offset += len(data)
            frame = {"Offset": self.offset, "Data": base64.b64encode(data).decode(), "File": path}
            return json.dumps(frame).encode()

        def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
            return b""

        def end(self, view: follow.JobView | None) -> bytes:
            return b""

    stream = follow_log(uuid, Start(since=0, buffer_size=0), Frames(uuid), follow=True)
    connections.close_all()
    return stream if isinstance(request, ASGIRequest) else synchronous(stream)
