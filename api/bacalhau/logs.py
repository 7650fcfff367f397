"""`GET /api/v1/orchestrator/jobs/{id}/logs`, upgraded to a WebSocket as upstream: one JSON
text frame per line, `{"value": {"Type": 1, "Line": "..."}, "error": null}`, from the core's
gap-free log of the job's executions (`execution_id` picks one instance; by default the
newest), then a normal close (1000) once it has ended and its log is drained. With
`follow=false` the log so far is sent and the socket closes. Unknown jobs and bad tokens are
refused at the handshake (404, 401). A plain GET (bacalhau-apiclient's `orchestratorlogs`)
gets the text of the log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from api.bacalhau.base import find_job
from api.bacalhau.wire import NOTE_RE, BacalhauError, derived_id
from api.follow_engine import Format, Start, db, follow_log
from api.websocket import Route, WebSocket, send_all
from jobs import follow
from jobs.models import Execution, Job
from jobs.services.objects import Actor


class FramesFormat(Format):
    """Each line of the program's output as one JSON frame (frames are separated by
    newlines here, which JSON text never holds); Crunch's own notes are left out."""

    def chunk(self, seq: int, text: str) -> bytes:
        frames = [
            json.dumps({"value": {"Type": 1, "Line": line + "\n"}, "error": None})
            for line in follow.chunk_lines(text).splitlines()
            if not NOTE_RE.match(line)
        ]
        return "".join(f + "\n" for f in frames).encode("utf-8")

    def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
        return b""

    def end(self, view: follow.JobView | None) -> bytes:
        return b""


def instance_for(actor: Actor, job_id: str, execution_id: str) -> str | None:
    """The Crunch job whose log to send: the instance holding `execution_id`, or the
    newest instance."""
    try:
        template = find_job(actor, job_id)
    except BacalhauError:
        return None
    instances = list(
        Job.objects.filter(template_uuid=template.uuid)
        .order_by("-id")
        .values_list("uuid", flat=True)
    )
    if not execution_id:
        return instances[0] if instances else None
    for uuid in instances:
        if derived_id("e", uuid) == execution_id:
            return uuid
    for execution in Execution.objects.filter(job_uuid__in=instances):
        if derived_id("e", execution.uuid) == execution_id:
            return execution.job_uuid
    return None


async def logs(ws: WebSocket, job_id: str) -> None:
    actor = await ws.actor()
    if actor is None:
        await ws.deny(401, b"Unauthorized: send the Crunch API token as a Bearer token")
        return
    query = ws.query
    uuid = await db(instance_for, actor, job_id, query.get("execution_id", ""))
    if uuid is None:
        await ws.deny(404, f"job not found: {job_id}".encode())
        return
    follow_on = query.get("follow", "false").lower() in ("1", "true", "t")
    await ws.accept()

    async def frames() -> AsyncIterator[str]:
        start = Start(since=0, buffer_size=0)
        async for part in follow_log(uuid, start, FramesFormat(uuid), follow=follow_on):
            for frame in part.decode("utf-8", "replace").splitlines():
                yield frame

    await send_all(ws, frames())


ROUTES = [Route.of(r"/api/v1/orchestrator/jobs/(?P<job_id>[^/]+)/logs", logs)]
