"""`log_tail_follow` against a real `crunch serve` and worker: every line exactly once, in
order, from a queued start, a mid-run join, a resume, and an end during the hand-over; and
200 followers at once while the API keeps answering (its latency is printed).

On the embedded stack followers poll the chunk table; on the services stack Redis wakes them.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.crunch.stack import STACK_KINDS, Stack, running_stack

SCRIPTS = {
    # N numbered lines as fast as the shell can print them.
    "count": '#!/bin/sh\nseq 0 $((JOB_PARAMETER_N - 1)) | sed "s/^/line /"\n',
    # N numbered lines, one every JOB_PARAMETER_PAUSE seconds.
    "drip": (
        "#!/bin/sh\ni=0\n"
        'while [ $i -lt "$JOB_PARAMETER_N" ]; do echo "line $i"; i=$((i + 1)); '
        'sleep "$JOB_PARAMETER_PAUSE"; done\n'
    ),
}


@pytest.fixture(scope="module", params=STACK_KINDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"follow-{request.param}")
    # No worker yet: the first test follows a job while it is queued, then starts one.
    quick_sweeps = {"CRUNCH_SWEEP_SECONDS": "1", "CRUNCH_WORKER_HEARTBEAT": "1"}
    with running_stack(
        request.param, Path(work), SCRIPTS, workers=0, extra_env=quick_sweeps
    ) as running:
        yield running


def ensure_worker(stack: Stack) -> None:
    if not any(
        p.args[-1].startswith("follow") for p in stack.processes if isinstance(p.args, list)
    ):
        stack.start_worker("follow")


def open_stream(
    stack: Stack,
    uuid: str,
    *,
    accept: str = "text/plain",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> requests.Response:
    response = requests.get(
        f"{stack.url}/arvados/v1/jobs/{uuid}/log_tail_follow",
        params=params,
        headers={"Authorization": f"Bearer {stack.token}", "Accept": accept, **(headers or {})},
        stream=True,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response


def numbers(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("line ")]


def is_end(line: str, uuid: str) -> bool:
    return f" job {uuid} " in line and " finished_at " in line


def sse_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    event: dict[str, Any] = {"data": []}
    for raw in response.iter_lines(decode_unicode=True):
        if raw == "":
            if event.get("data") or event.get("event"):
                yield event
            event = {"data": []}
        elif raw.startswith(":"):
            continue
        else:
            name, _, value = raw.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                event["data"].append(value)
            else:
                event[name] = value


def test_a_follower_from_queued_gets_every_line_once_then_the_end(stack: Stack) -> None:
    job = stack.submit("count", {"N": "20000"})
    uuid = job["uuid"]
    stream = open_stream(stack, uuid)
    lines = []
    for line in stream.iter_lines(decode_unicode=True):
        lines.append(line)
        if len(lines) == 1:
            # Nothing can run it yet: the stream says where it waits, then it starts.
            assert f"job {uuid} queue_position 0 queue_size " in line
            assert "nodes_idle 0 nodes_alloc 0" in line
            ensure_worker(stack)
    assert numbers(lines) == list(range(20000))
    assert is_end(lines[-1], uuid) and " Complete " in lines[-1], lines[-3:]
    done = stack.wait(uuid)
    assert f"output {done['output']} log {done['log']}" in lines[-1]
    # Everything between the status line(s) and the end is the stored log, exactly.
    body = [line for line in lines if "queue_position" not in line][:-1]
    assert "\n".join(body) + "\n" == stack.log_text(done)


def test_a_follower_joining_mid_run_gets_the_tail_then_live_lines(stack: Stack) -> None:
    ensure_worker(stack)
    job = stack.submit("drip", {"N": "300", "PAUSE": "0.01", "tag": "join"})
    uuid = job["uuid"]
    deadline = time.monotonic() + 60
    while True:  # wait until a good part of the log is written
        so_far = open_stream(stack, uuid, follow="false", since="0").text
        if len(numbers(so_far.splitlines())) >= 60:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    lines = list(open_stream(stack, uuid, buffer_size="100").iter_lines(decode_unicode=True))
    got = numbers(lines)
    first = got[0]
    # At least 60 lines were written; 100 bytes hold about 12 of them: the backlog is the
    # tail, starting at a whole line, and the live lines follow it without a gap.
    assert first >= 60 - 13, first
    assert lines[0] == f"line {first}"
    assert got == list(range(first, 300))
    assert is_end(lines[-1], uuid)


def test_resuming_continues_exactly(stack: Stack) -> None:
    ensure_worker(stack)
    job = stack.submit("drip", {"N": "200", "PAUSE": "0.005", "tag": "resume"})
    uuid = job["uuid"]
    # Server-Sent Events: take a few chunks, hang up, come back with Last-Event-ID.
    first = open_stream(stack, uuid, accept="text/event-stream", since="0")
    taken: list[dict[str, Any]] = []
    for event in sse_events(first):
        if "id" in event:
            taken.append(event)
        if len(taken) == 3:
            break
    first.close()
    last_id = taken[-1]["id"]
    second = open_stream(
        stack, uuid, accept="text/event-stream", headers={"Last-Event-ID": last_id}
    )
    rest = list(sse_events(second))
    assert rest[-1]["event"] == "end"
    end = json.loads(rest[-1]["data"][0])
    assert end["state"] == "Complete" and end["uuid"] == uuid
    chunks = taken + [e for e in rest if "id" in e]
    ids = [int(e["id"]) for e in chunks]
    assert ids == list(range(ids[0], ids[0] + len(ids))) and ids[0] == 0
    lines = [line for e in chunks for line in e["data"]]
    assert numbers(lines) == list(range(200))
    done = stack.wait_for_log(uuid)
    assert "\n".join(lines) + "\n" == stack.log_text(done)
    # Plain text from a chunk number on is the same lines from that chunk on.
    middle = ids[len(ids) // 2]
    tail = open_stream(stack, uuid, since=str(middle)).text.splitlines()
    expected = [line for e in chunks if int(e["id"]) >= middle for line in e["data"]]
    assert tail[:-1] == expected and is_end(tail[-1], uuid)


def test_followers_joining_while_the_job_ends_all_get_the_end(stack: Stack) -> None:
    """Followers that start around the job's end (backlog → live hand-over, the original's
    gap) each get a gap-free run of lines up to the last, then the end line."""
    ensure_worker(stack)
    job = stack.submit("count", {"N": "3000", "tag": "ending"})
    uuid = job["uuid"]
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def one(buffer_size: str) -> None:
        try:
            response = open_stream(stack, uuid, buffer_size=buffer_size)
            results.append(list(response.iter_lines(decode_unicode=True)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = []
    for number in range(40):
        thread = threading.Thread(target=one, args=(("0", "64", "8192")[number % 3],))
        thread.start()
        threads.append(thread)
        time.sleep(0.02)
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(results) == 40
    for lines in results:
        assert is_end(lines[-1], uuid), lines[-3:]
        got = numbers(lines)
        if got:
            assert got == list(range(got[0], 3000)), (got[:3], got[-3:])
        assert sum(1 for line in lines if is_end(line, uuid)) == 1


def test_a_job_no_node_can_run_says_why_then_ends_when_cancelled(stack: Stack) -> None:
    ensure_worker(stack)
    job = stack.submit(
        "count",
        {"N": "1", "tag": "huge"},
        job={"runtime_constraints": {"min_cores_per_node": 4096}},
    )
    uuid = job["uuid"]
    response = open_stream(stack, uuid, accept="text/event-stream")
    notes = []
    for event in sse_events(response):
        if "id" in event:  # the sweeper also says it in the log
            notes += event["data"]
            continue
        assert event.get("event") == "status", event
        status = json.loads(event["data"][0])
        assert status["state"] == "Queued" and status["queue_size"] >= 1
        if status["cannot_run"]:
            break
    response.close()
    assert status["cannot_run"].startswith("no suitable node: requested 1, available 1,")
    assert re.search(r"; [^;]+: cpus \d+ < 4096\Z", status["cannot_run"]), status["cannot_run"]
    assert all("no suitable node" in note for note in notes)
    assert status["line"].endswith(f"nodes_alloc 0 cannot_run: {status['cannot_run']}")
    assert status["nodes_idle"] == 1
    stack.call("POST", f"jobs/{uuid}/cancel")
    lines = open_stream(stack, uuid).text.splitlines()
    assert is_end(lines[-1], uuid) and f"job {uuid} Cancelled finished_at - " in lines[-1]
    assert any("no suitable node" in line for line in lines[:-1])


def test_two_hundred_followers_while_the_api_stays_responsive(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_worker(stack)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {stack.token}"}

    def api_latency(samples: int) -> float:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            response = session.get(f"{stack.url}/arvados/v1/users/current", headers=headers)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.01)
        return statistics.median(times)

    api_latency(5)  # warm up
    idle = api_latency(40)
    # Long enough (8 s) for 200 followers to connect and the latency to be sampled on a
    # loaded machine, while the job still runs.
    job = stack.submit("drip", {"N": "400", "PAUSE": "0.02", "tag": "crowd"})
    uuid = job["uuid"]
    complete: list[bool] = []
    errors: list[BaseException] = []
    connected = threading.Semaphore(0)

    def follower() -> None:
        try:
            response = open_stream(stack, uuid, since="0")
            lines = []
            for line in response.iter_lines(decode_unicode=True):
                if not lines:
                    connected.release()
                lines.append(line)
            complete.append(numbers(lines) == list(range(400)) and is_end(lines[-1], uuid))
        except BaseException as exc:
            errors.append(exc)
            connected.release()

    threads = [threading.Thread(target=follower) for _ in range(200)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert connected.acquire(timeout=60)
    busy = api_latency(40)
    still_running = stack.call("GET", f"jobs/{uuid}")["state"] == "Running"
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]
    assert len(complete) == 200 and all(complete)
    with capsys.disabled():
        print(
            f"\n[{stack.url}] API median latency: idle {idle * 1000:.2f} ms, with 200 followers "
            f"{busy * 1000:.2f} ms ({busy / idle:.2f}x); job still running while measured: "
            f"{still_running}"
        )
    assert still_running, "the measurement must overlap the followers' live phase"
    # The latency ratio is printed, not asserted: timings on a shared machine are noise
    # to a test. What must hold is above: every request answered while 200 streams ran,
    # and every stream complete.
