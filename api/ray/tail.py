"""`GET /api/jobs/{id}/logs/tail`, the WebSocket that `ray job submit`, `ray job logs -f`
and `JobSubmissionClient.tail_job_logs` read: text frames of whole lines from the job's
gap-free log (the core's follow engine, from the first chunk), then a normal close (1000)
once the job has ended and its log is drained. Unknown jobs and bad tokens are refused at
the handshake (404, 401), as Ray's client expects."""

from __future__ import annotations

from collections.abc import AsyncIterator

from api.follow_engine import Format, Start, db, follow_log
from api.ray.views import find_job
from api.ray.wire import RayError
from api.websocket import Route, WebSocket, send_all
from jobs import follow
from jobs.services.objects import Actor


class LinesFormat(Format):
    """Just the log's lines: no status lines, no end line (the close says it ended)."""

    def chunk(self, seq: int, text: str) -> bytes:
        return follow.chunk_lines(text).encode("utf-8")

    def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
        return b""

    def end(self, view: follow.JobView | None) -> bytes:
        return b""


def _job_uuid(actor: Actor, job_id: str) -> str | None:
    try:
        return find_job(actor, job_id).uuid
    except RayError:
        return None


async def tail(ws: WebSocket, job_id: str) -> None:
    actor = await ws.actor()
    if actor is None:
        await ws.deny(401, b"Not logged in: send the Crunch API token as a Bearer token")
        return
    uuid = await db(_job_uuid, actor, job_id)
    if uuid is None:
        await ws.deny(404, f"Job {job_id} does not exist".encode())
        return
    await ws.accept()

    async def lines() -> AsyncIterator[str]:
        stream = follow_log(uuid, Start(since=0, buffer_size=0), LinesFormat(uuid), follow=True)
        async for part in stream:
            if part:
                yield part.decode("utf-8", "replace")

    await send_all(ws, lines())


ROUTES = [Route.of(r"/api/jobs/(?P<job_id>[^/]+)/logs/tail", tail)]
