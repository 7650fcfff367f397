"""`log_tail_follow` in-process: content negotiation, parameters and errors, where the tail
starts, and a finished job's stream (tests/crunch/test_log_follow.py follows live jobs)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from api.follow_engine import Format, Start, follow_log, synchronous
from api.logstream import negotiate
from jobs import follow
from jobs.models import Job, LogChunk
from jobs.services import runs
from tests.rows import add_chunks, make_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("text/plain", "text"),
        ("*/*", "text"),  # curl, and the Arvados SDK's raw methods
        ("text/plain, application/json", "text"),  # the original's split on spaces missed this
        ("application/json, text/plain;q=0.5", "json"),
        ("text/*;q=0.9, application/json;q=0.1", "text"),
        ("text/event-stream", "sse"),
        ("text/event-stream;q=0.2, text/plain;q=0.8", "text"),
        ("application/json", "json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text"),
        ("text/plain;q=0", "json"),
        ("text/plain;q=nonsense", "json"),
        ("", "json"),
        (None, "json"),
        ("image/png", "json"),
    ],
)
def test_negotiate(accept: str | None, kind: str) -> None:
    assert negotiate(accept) == kind


def stream(client: Any, job: Job, token: str, accept: str = "text/plain", **params: Any) -> Any:
    return client.get(
        f"/arvados/v1/jobs/{job.uuid}/log_tail_follow",
        params,
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_ACCEPT=accept,
    )


def body(response: Any) -> str:
    return b"".join(response.streaming_content).decode()


def finished(owner: Any) -> Job:
    now = timezone.now()
    job = make_job(
        owner,
        state="Complete",
        started_at=now,
        finished_at=now,
        output="d41d8cd98f00b204e9800998ecf8427e+0",
        log="d41d8cd98f00b204e9800998ecf8427e+0",
    )
    add_chunks(job, ["line 0\nline 1\n", "line 2\nline 3\n", "line 4\n"])
    return job


def test_tail_start_is_a_line_boundary(active: tuple[Any, str]) -> None:
    job = make_job(active[0])
    add_chunks(job, ["aaaa\nbbbb\n", "cccc\ndddd\n", "eeee\n"])
    # eeee\n is 5 bytes: 5 → that chunk, 6..10 → inside chunk 1, which starts at a line
    assert follow.tail_start(job.uuid, 5) == (2, 0)
    assert follow.tail_start(job.uuid, 6) == (2, 0)  # 1 byte of "dddd\n" is a partial line
    assert follow.tail_start(job.uuid, 10) == (1, 5)  # exactly "dddd\n" + "eeee\n"
    assert follow.tail_start(job.uuid, 14) == (1, 5)
    assert follow.tail_start(job.uuid, 15) == (1, 0)
    assert follow.tail_start(job.uuid, 10_000) == (0, 0)  # the whole log
    assert follow.tail_start(job.uuid, 0) == (3, 0)  # live lines only
    other = make_job(active[0])
    assert follow.tail_start(other.uuid, 8192) == (0, 0)


def test_tail_start_counts_bytes_not_characters(active: tuple[Any, str]) -> None:
    job = make_job(active[0])
    add_chunks(job, ["é1\né2\né3\n"])  # 4 bytes per line
    assert follow.tail_start(job.uuid, 8) == (0, 3)  # "é2\né3\n": from character 3
    assert follow.tail_start(job.uuid, 9) == (0, 3)
    assert follow.tail_start(job.uuid, 7) == (0, 6)


def test_chunks_wait_at_a_gap_until_the_job_is_sealed(active: tuple[Any, str]) -> None:
    job = make_job(active[0])
    for seq in (0, 1, 3):
        LogChunk.objects.create(
            job_uuid=job.uuid, seq=seq, text=f"{seq}\n", created_at=timezone.now()
        )
    assert [s for s, _ in follow.chunks_from(job.uuid, 0, sealed=False)] == [0, 1]
    assert [s for s, _ in follow.chunks_from(job.uuid, 0, sealed=True)] == [0, 1, 3]


def test_a_finished_job_streams_its_backlog_and_end_at_once(
    client: Any, active: tuple[Any, str]
) -> None:
    job = finished(active[0])
    response = stream(client, job, active[1], since=0)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    lines = body(response).splitlines()
    assert lines[:5] == [f"line {n}" for n in range(5)]
    assert lines[5].endswith(
        f"job {job.uuid} Complete finished_at {job.finished_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
        f" output {job.output} log {job.log}"
    )
    assert len(lines) == 6

    # The default tail is 8192 bytes: the whole of this short log. (End lines start with
    # the time they were sent.)
    def without_stamp(line: str) -> str:
        return line.split(" ", 1)[1]

    again = body(stream(client, job, active[1])).splitlines()
    assert again[:-1] == lines[:-1] and without_stamp(again[-1]) == without_stamp(lines[-1])
    tail = body(stream(client, job, active[1], buffer_size=7)).splitlines()
    assert tail[0] == "line 4" and len(tail) == 2


def test_event_stream_ids_and_last_event_id(client: Any, active: tuple[Any, str]) -> None:
    job = finished(active[0])
    text = body(stream(client, job, active[1], accept="text/event-stream", since=0))
    assert text.startswith("retry: 2000\n\n")
    assert "id: 0\ndata: line 0\ndata: line 1\n\nid: 1\ndata: line 2\ndata: line 3\n\n" in text
    assert '\n\nevent: end\ndata: {"line": ' in text
    resumed = body(
        client.get(
            f"/arvados/v1/jobs/{job.uuid}/log_tail_follow",
            HTTP_AUTHORIZATION=f"Bearer {active[1]}",
            HTTP_ACCEPT="text/event-stream",
            HTTP_LAST_EVENT_ID="1",
        )
    )
    assert "data: line 3" not in resumed
    assert "id: 2\ndata: line 4\n\nevent: end" in resumed


def test_a_last_line_without_a_newline_ends_before_the_end_line(
    client: Any, active: tuple[Any, str]
) -> None:
    job = finished(active[0])
    LogChunk.objects.filter(job_uuid=job.uuid, seq=2).update(text="no newline at the end")
    for follow_on in ("true", "false"):  # the live path and the backlog path
        text = body(stream(client, job, active[1], since=0, follow=follow_on))
        assert text.startswith("line 0\nline 1\nline 2\nline 3\nno newline at the end\n"), text
        lines = text.splitlines()
        assert len(lines) == 6 and f" job {job.uuid} Complete finished_at " in lines[5]
        assert text.endswith("\n")
        events = body(
            stream(client, job, active[1], accept="text/event-stream", since=0, follow=follow_on)
        )
        assert "id: 2\ndata: no newline at the end\n\nevent: end\ndata: {" in events
    # a tail that starts inside the last chunk, at its line
    tail = body(stream(client, job, active[1], buffer_size=25)).splitlines()
    assert tail[0] == "no newline at the end" and " Complete finished_at " in tail[1]


def test_every_reader_of_a_log_ends_a_chunk_without_a_newline(
    client: Any, active: tuple[Any, str]
) -> None:
    """A chunk that lacks its final newline (a script's last line) ends a line for every
    reader, so that a system note after it starts a line of its own everywhere."""
    job = make_job(active[0], state="Running", started_at=timezone.now())
    add_chunks(job, ["line 0\n", "no newline at the end"])
    runs.job_log_note(job_uuid=job.uuid, message="the worker went away")
    lines = runs.job_log_text(job_uuid=job.uuid).splitlines()  # the saved log collection
    assert lines[:2] == ["line 0", "no newline at the end"]
    assert lines[2].endswith(" crunch: the worker went away") and len(lines) == 3
    assert runs.job_log_text(job_uuid=job.uuid).endswith("\n")
    streamed = body(stream(client, job, active[1], since=0, follow="false"))
    assert streamed.splitlines() == lines


def test_follow_false_on_a_running_job_sends_what_is_there(
    client: Any, active: tuple[Any, str]
) -> None:
    job = make_job(active[0], state="Running", started_at=timezone.now())
    add_chunks(job, ["line 0\n", "line 1\n"])
    assert body(stream(client, job, active[1], since=1, follow="false")) == "line 1\n"


def test_json_pointer_without_text(client: Any, active: tuple[Any, str]) -> None:
    job = finished(active[0])
    for accept in ("application/json", ""):
        response = stream(client, job, active[1], accept=accept)
        assert response.status_code == 200
        answer = response.json()
        assert answer["href"].endswith(f"/arvados/v1/jobs/{job.uuid}")
        assert "Accept: text/plain" in answer["comment"]


def test_errors(client: Any, active: tuple[Any, str], spectator: tuple[Any, str]) -> None:
    job = finished(active[0])
    url = f"/arvados/v1/jobs/{job.uuid}/log_tail_follow"
    no_token = client.get(url, HTTP_ACCEPT="text/plain")
    assert no_token.status_code == 401 and no_token.json()["errors"] == ["Not logged in"]
    hidden = stream(client, job, spectator[1])
    assert hidden.status_code == 404 and "error_token" in hidden.json()
    missing = client.get(
        "/arvados/v1/jobs/zzzzz-8i9sb-000000000000000/log_tail_follow",
        HTTP_AUTHORIZATION=f"Bearer {active[1]}",
    )
    assert missing.status_code == 404
    for params in (
        {"buffer_size": "lots"},
        {"buffer_size": "-1"},
        {"since": "1e3"},
        {"since": "-2"},
        {"follow": "perhaps"},
    ):
        bad = stream(client, job, active[1], **params)
        assert bad.status_code == 422, params
        assert bad.json()["errors"][0].startswith(next(iter(params)))
    bad_header = client.get(
        url,
        HTTP_AUTHORIZATION=f"Bearer {active[1]}",
        HTTP_ACCEPT="text/event-stream",
        HTTP_LAST_EVENT_ID="x; rm -rf /",
    )
    assert bad_header.status_code == 422
    assert client.delete(url, HTTP_AUTHORIZATION=f"Bearer {active[1]}").status_code == 404


class NumberedLines(Format):
    """Another door's format: each chunk's lines numbered by chunk, and a plain end."""

    def chunk(self, seq: int, text: str) -> bytes:
        return "".join(f"{seq}| {line}\n" for line in text.splitlines()).encode()

    def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
        return f"waiting, {status.position} ahead\n".encode()

    def end(self, view: follow.JobView | None) -> bytes:
        return f"ended {view.state if view else 'deleted'}\n".encode()


@pytest.mark.parametrize("follow_on", [True, False])
def test_the_follow_engine_streams_in_a_doors_own_format(
    active: tuple[Any, str], follow_on: bool
) -> None:
    job = finished(active[0])
    start = Start(since=1, buffer_size=0)
    parts = synchronous(follow_log(job.uuid, start, NumberedLines(job.uuid), follow=follow_on))
    assert b"".join(parts).decode() == ("1| line 2\n1| line 3\n2| line 4\nended Complete\n")
    queued = make_job(active[0])
    add_chunks(queued, ["requeued: the worker went away\n"])
    parts = synchronous(
        follow_log(
            queued.uuid, Start(since=0, buffer_size=0), NumberedLines(queued.uuid), follow=False
        )
    )
    assert b"".join(parts).decode() == "waiting, 0 ahead\n0| requeued: the worker went away\n"
