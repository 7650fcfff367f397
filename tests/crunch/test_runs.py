"""Jobs run for real: a `crunch serve` and a `crunch worker` process sharing a fresh database,
scripts pushed over git HTTP, results read back through the API (tests/crunch/stack.py).

Two stacks: the embedded one (SQLite, a filesystem broker: what `make run` uses) and the
production one (PostgreSQL and Redis), which needs those servers.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.crunch.stack import STACK_KINDS, Stack, alive, running_stack

SCRIPTS = {
    "hog": """#!/bin/sh
x=$(head -c 200000000 /dev/zero | tr '\\0' a) && echo "allocated ${#x}"
""",
    "hello": """#!/bin/sh
echo "hello from $JOB_SCRIPT, name=$JOB_PARAMETER_NAME"
echo "to stderr" >&2
printf 'hello %s\\n' "$JOB_PARAMETER_NAME" > "$CRUNCH_OUTPUT/out.txt"
mkdir -p "$CRUNCH_OUTPUT/sub" && echo "$JOB_PARAMETERS" > "$CRUNCH_OUTPUT/sub/params.json"
""",
    "fail": """#!/bin/sh
echo "about to fail"
echo "something went wrong: $JOB_PARAMETER_WHY" >&2
exit 3
""",
    "random": """#!/bin/sh
head -c 16 /dev/urandom | od -An -tx1 > "$CRUNCH_OUTPUT/random.txt"
""",
    "sleepy": """#!/bin/sh
echo $$ > "$JOB_PARAMETER_PIDFILE"
sleep 300 &
echo $! >> "$JOB_PARAMETER_PIDFILE"
echo "sleeping"
wait
""",
    "flaky": """#!/bin/sh
n=$(cat "$JOB_WORK/tries" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$JOB_WORK/tries"
echo "try $n"
[ "$n" -ge 3 ] || exit 111
echo "third time lucky" > "$CRUNCH_OUTPUT/out.txt"
""",
    "whoami": """#!/bin/sh
echo "ids=$(id -u) $(id -g) $(id -G)"
touch "$CRUNCH_SRC/new" 2>/dev/null && echo "src writable" || echo "src read-only"
touch "$CRUNCH_OUTPUT/new" && echo "output writable"
""",
    "reader": """#!/bin/sh
cat "$TASK_KEEPMOUNT/$JOB_PARAMETER_INPUT/out.txt" > "$CRUNCH_OUTPUT/copy.txt"
touch "$TASK_KEEPMOUNT/$JOB_PARAMETER_INPUT/new" 2>/dev/null && echo writable || echo read-only
""",
}


@pytest.fixture(scope="module", params=STACK_KINDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"stack-{request.param}")
    with running_stack(request.param, work, SCRIPTS) as running:
        yield running


def test_a_job_runs_and_its_output_is_the_right_bytes(stack: Stack) -> None:
    job = stack.wait(stack.submit("hello", {"name": "world", "n": 3})["uuid"])
    assert job["state"] == "Complete", job
    assert (job["success"], job["running"]) == (True, False)
    assert job["started_at"] and job["finished_at"] and job["output"] and job["log"]
    assert stack.file(job["output"], "out.txt") == b"hello world\n"
    assert json.loads(stack.file(job["output"], "sub/params.json")) == {"name": "world", "n": 3}
    log_text = stack.file(job["log"], f"{job['uuid']}.log.txt").decode()
    assert "hello from hello, name=world" in log_text and "to stderr" in log_text
    # the same submission with find_or_create is reused
    again = stack.submit("hello", {"name": "world", "n": 3}, find_or_create=True)
    assert again["uuid"] == job["uuid"]


def test_a_failing_script_ends_failed_with_its_stderr(stack: Stack) -> None:
    job = stack.wait(stack.submit("fail", {"why": "bad input"})["uuid"])
    assert job["state"] == "Failed" and job["success"] is False and job["output"] is None
    log_text = stack.file(job["log"], f"{job['uuid']}.log.txt").decode()
    assert "something went wrong: bad input" in log_text
    assert "the script failed with exit code 3" in log_text


def test_each_attempt_is_an_execution(stack: Stack) -> None:
    """Exit 111 twice, then 0: three executions, each with its exit code and the chunk where
    its part of the log begins."""
    job = stack.wait(stack.submit("flaky", {})["uuid"])
    assert job["state"] == "Complete", stack.log_text(stack.wait_for_log(job["uuid"]))
    assert stack.file(job["output"], "out.txt") == b"third time lucky\n"
    listed = stack.call("GET", f"jobs/{job['uuid']}/executions")
    assert listed["kind"] == "arvados#executionList" and listed["items_available"] == 3
    runs = listed["items"]
    assert [e["attempt"] for e in runs] == [1, 2, 3]
    assert [e["exit_code"] for e in runs] == [111, 111, 0]
    assert [e["state"] for e in runs] == ["Failed", "Failed", "Complete"]
    seqs = [e["log_seq"] for e in runs]
    assert seqs[0] == 0 and seqs[0] < seqs[1] < seqs[2], seqs
    node = {e["node_uuid"] for e in runs}
    assert len(node) == 1 and None not in node and all(e["hostname"] for e in runs)
    assert all(e["finished_at"] >= e["started_at"] for e in runs)
    assert "tried again" in runs[0]["reason"] and runs[2]["reason"] is None
    # each attempt's part of the log begins with what its script printed first
    for attempt, seq in ((2, seqs[1]), (3, seqs[2])):
        response = requests.get(
            f"{stack.url}/arvados/v1/jobs/{job['uuid']}/log_tail_follow",
            params={"since": seq, "follow": "false"},
            headers={"Authorization": f"Bearer {stack.token}", "Accept": "text/plain"},
            timeout=60,
        )
        assert response.status_code == 200
        assert response.text.splitlines()[0] == f"try {attempt}", response.text[:300]


def test_disagreeing_outputs_are_not_reused(stack: Stack) -> None:
    first = stack.wait(stack.submit("random", {})["uuid"])
    second = stack.wait(stack.submit("random", {})["uuid"])
    assert first["output"] != second["output"]
    third = stack.submit("random", {}, find_or_create=True)
    assert third["uuid"] not in (first["uuid"], second["uuid"])
    stack.wait(third["uuid"])


def test_inputs_are_mounted_read_only_by_pdh(stack: Stack) -> None:
    made = stack.wait(stack.submit("hello", {"name": "input"})["uuid"])
    job = stack.wait(stack.submit("reader", {"input": made["output"]})["uuid"])
    assert job["state"] == "Complete"
    assert stack.file(job["output"], "copy.txt") == b"hello input\n"
    assert "read-only" in stack.file(job["log"], f"{job['uuid']}.log.txt").decode()


def test_cancel_kills_the_process_group(stack: Stack) -> None:
    shared = Path(tempfile.mkdtemp(prefix="crunch-pids-"))
    shared.chmod(0o777)  # the script may run as an unprivileged user
    pidfile = shared / "pids"
    job = stack.submit("sleepy", {"pidfile": str(pidfile)})
    stack.wait(job["uuid"], states=("Running",))
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and len(pidfile.read_text().split()) == 2):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pids = [int(p) for p in pidfile.read_text().split()]
    stack.call("POST", f"jobs/{job['uuid']}/cancel")
    started = time.monotonic()
    done = stack.wait(job["uuid"], states=("Cancelled",))
    while any(alive(pid) for pid in pids):
        assert time.monotonic() - started < 5, "the script outlived its cancellation by 5 s"
        time.sleep(0.1)
    # the partial log is kept
    deadline = time.monotonic() + 30
    while done["log"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
        done = stack.call("GET", f"jobs/{job['uuid']}")
    assert "sleeping" in stack.file(done["log"], f"{job['uuid']}.log.txt").decode()
    (execution,) = stack.call("GET", f"jobs/{job['uuid']}/executions")["items"]
    assert execution["state"] == "Cancelled" and execution["finished_at"]
    assert execution["reason"].startswith("the job was cancelled")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_a_local_run_gets_the_memory_it_asked_for(stack: Stack) -> None:
    job = {
        "repository": stack.repo,
        "script": "hog",
        "script_version": "main",
        "script_parameters": {},
        "runtime_constraints": {"min_ram_mb_per_node": 64},
    }
    capped = stack.wait(stack.call("POST", "jobs", json={"job": job})["uuid"])
    assert capped["state"] == "Failed"
    job["runtime_constraints"] = {"min_ram_mb_per_node": 1024}
    roomy = stack.wait(stack.call("POST", "jobs", json={"job": job})["uuid"])
    assert roomy["state"] == "Complete"
    assert "allocated 200000000" in stack.log_text(roomy)


def expected_ids() -> tuple[int, int]:
    """Who scripts run as: CRUNCH_RUN_AS (default nobody) under a root worker, else the
    worker's own user (crunch.runtimes.run_as)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(os.environ.get("CRUNCH_RUN_AS") or "nobody")
        return entry.pw_uid, entry.pw_gid
    return os.getuid(), os.getgid()


def test_a_script_runs_as_the_run_user_with_no_other_groups(stack: Stack) -> None:
    job = stack.wait(stack.submit("whoami", {})["uuid"])
    assert job["state"] == "Complete", stack.log_text(job)
    log_text = stack.log_text(job)
    uid, gid = expected_ids()
    if os.geteuid() == 0:
        assert f"ids={uid} {gid} {gid}\n" in log_text, log_text
        assert "src read-only" in log_text  # the checkout belongs to the worker
    else:
        assert f"ids={uid} {gid} " in log_text, log_text
    assert "output writable" in log_text


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs a worker running as root")
@pytest.mark.parametrize("with_setpriv", [True, False])
def test_both_ways_of_changing_user_give_the_same_ids(
    with_setpriv: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With util-linux setpriv (the program's own process changes user) and without it
    (subprocess changes user in the child it forks): the same user, group and no
    supplementary groups, and the program is looked up in PATH as that user: one in a
    directory only root can enter is passed over."""
    from crunch import runtimes

    if with_setpriv and shutil.which("setpriv") is None:
        pytest.skip("needs util-linux setpriv")
    if not with_setpriv:
        monkeypatch.setattr(runtimes, "_setpriv", lambda: None)
    entry = pwd.getpwnam("nobody")
    prefix, owner = runtimes.owner_prefix((entry.pw_uid, entry.pw_gid))
    assert bool(prefix) is with_setpriv and bool(owner) is not with_setpriv
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    (hidden / "sh").write_text("#!/bin/sh\necho not the shell the user can reach\n")
    (hidden / "sh").chmod(0o755)
    done = subprocess.run(
        [*prefix, "sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"'],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
        cwd="/",
        env={"PATH": f"{hidden}:/usr/bin:/bin"},
        **owner,
    )
    assert done.stdout == f"{entry.pw_uid} {entry.pw_gid} {entry.pw_gid}\n"
    assert runtimes.owner_prefix(None) == ([], {})


@pytest.mark.parametrize("with_pidfd", [True, False])
def test_exit_watch_returns_when_the_program_ends(
    with_pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ExitWatch.wait` returns once the program has ended, not at the end of its timeout
    (an hour here; the wait runs on a thread given a minute), and leaves a running program
    running; with pidfds and without (Popen's own polling)."""
    import threading

    from crunch.runtimes import ExitWatch

    if with_pidfd and not hasattr(os, "pidfd_open"):
        pytest.skip("this Python or kernel has no pidfds")
    if not with_pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    process = subprocess.Popen(["sh", "-c", "read line"], stdin=subprocess.PIPE)
    watch = ExitWatch(process)
    try:
        assert (watch._poll is not None) is with_pidfd
        watch.wait(0.05)
        assert process.poll() is None  # still waiting for its line
        waiter = threading.Thread(target=watch.wait, args=(3600,), daemon=True)
        waiter.start()
        assert process.stdin is not None
        process.stdin.close()  # `read` sees the end of its input: the program ends
        waiter.join(60)
        assert not waiter.is_alive(), "the wait did not return when the program ended"
        assert process.poll() == 1  # ended (read found no line), and reaped now
    finally:
        watch.close()
        watch.close()  # twice is harmless
        if process.poll() is None:
            process.kill()
            process.wait()
