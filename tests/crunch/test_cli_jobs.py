"""The `crunch` job commands as users run them, against a real stack (`crunch serve` and a
`crunch worker`, tests/crunch/stack.py): get, list, queue, cancel, whoami, submit and logs,
in their plain, terminal and JSON forms, with their exit codes.

Most calls go through `crunch.cli.main` in this process (stdout captured, so not a
terminal); the terminal form runs the real entry point under a pseudo-terminal. The CLI is
the same on both kinds of stack, so these use the embedded one.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from crunch.cli import main
from tests.crunch.stack import ROOT, Stack, manage, running_stack

SCRIPTS = {
    "count": """#!/bin/sh
i=1
while [ "$i" -le "${JOB_PARAMETER_N:-3}" ]; do
  echo "line $i"
  i=$((i + 1))
  sleep "${JOB_PARAMETER_PAUSE:-0}"
done
""",
    "fail": """#!/bin/sh
echo "about to fail"
exit 3
""",
    "partial": """#!/bin/sh
echo "first"
printf 'no newline at the end'
""",
    "copy": """#!/bin/sh
echo "copied $JOB_PARAMETER_INPUT" > "$CRUNCH_OUTPUT/out.txt"
""",
}

ANSI = re.compile(r"\x1b\[")
UNPLACEABLE = {"runtime_constraints": {"min_ram_mb_per_node": 10**9}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    quick_sweeps = {"CRUNCH_SWEEP_SECONDS": "1", "CRUNCH_WORKER_HEARTBEAT": "1"}
    with running_stack(
        "embedded", tmp_path_factory.mktemp("cli-stack"), SCRIPTS, extra_env=quick_sweeps
    ) as running:
        yield running


class Cli:
    """`crunch ...` in this process, as alice against the stack."""

    def __init__(self, stack: Stack, capsys: Any) -> None:
        self.stack = stack
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err, err
        return code, out, err

    def submit(self, script: str, *args: str) -> str:
        base = ["submit", "--repository", self.stack.repo, "--version", "main"]
        code, out, err = self(*base, "--script", script, *args)
        assert code == 0, err
        return out.split()[0]


@pytest.fixture
def cli(stack: Stack, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("ARVADOS_API_HOST", stack.url)
    monkeypatch.setenv("ARVADOS_API_TOKEN", stack.token)
    for name in ("FORCE_COLOR", "NO_COLOR", "ARVADOS_API_HOST_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    return Cli(stack, capsys)


def queued_unplaceable(stack: Stack, **params: Any) -> str:
    """A job no node can run (it asks for a petabyte of memory): it stays Queued."""
    job = stack.submit("count", params, job=dict(UNPLACEABLE))
    return str(job["uuid"])


# --- get, list, queue, cancel, whoami -------------------------------------------------------


def test_whoami(cli: Cli, stack: Stack) -> None:
    code, out, _ = cli("whoami")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["username"].strip() == "alice"
    assert fields["admin"].strip() == "no"
    assert fields["api host"].strip() == stack.url
    assert re.fullmatch(r"zzzzz-tpzed-[a-z0-9]{15}", fields["uuid"].strip())
    code, out, _ = cli("whoami", "--json")
    user = json.loads(out)
    assert (code, user["username"], user["is_admin"]) == (0, "alice", False)
    assert user["uuid"] == fields["uuid"].strip() and user["api_host"] == stack.url


def test_get_a_job_plain_json_and_errors(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    uuid = cli.submit("count", "n:=2", "label=get")
    job = stack.wait(uuid)
    code, out, _ = cli("get", uuid)
    assert code == 0
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["uuid"] == uuid and fields["state"] == "Complete"
    assert fields["script"] == "count" and fields["repository"] == stack.repo
    assert fields["version"] == f"{job['script_version']} (main)"
    assert json.loads(fields["parameters"]) == {"label": "get", "n": 2}
    assert fields["created"] == job["created_at"] and fields["log"] == job["log"]
    assert fields["output"] == job["output"]
    code, out, _ = cli("get", uuid, "--json")
    assert code == 0 and json.loads(out) == job
    # a failed job is shown like any other: the command worked
    failed = cli.submit("fail")
    stack.wait(failed)
    code, out, _ = cli("get", failed)
    assert code == 0 and re.search(r"^state:\s+Failed$", out, re.M)
    # unknown, malformed, and a job with a DEST
    code, out, err = cli("get", "zzzzz-8i9sb-000000000000000")
    assert (code, out) == (1, "") and "404" in err
    code, _, err = cli("get", uuid, "dest")
    assert code == 1 and "is a job" in err
    # a collection still goes to a DEST
    code, out, err = cli("get", job["output"], str(tmp_path / "copy"))
    assert (code, out) == (0, ""), err


def test_put_ls_get_and_keepdocker_in_json(cli: Cli, tmp_path: Path) -> None:
    from tests.crunch.test_docker_submit_cli import image_archive

    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "sub" / "b.txt").write_text("beta beta\n")
    code, out, _ = cli("put", "--json", str(source))
    collection = json.loads(out)
    pdh = collection["portable_data_hash"]
    assert code == 0 and collection["uuid"].startswith("zzzzz-4zz18-")
    code, out, _ = cli("put", str(source))
    assert (code, out) == (0, f"{pdh}\n")
    code, out, _ = cli("ls", "--json", pdh)
    assert json.loads(out) == [
        {"path": "./data/a.txt", "size": 6},
        {"path": "./data/sub/b.txt", "size": 10},
    ]
    code, out, _ = cli("get", "--json", f"{pdh}/data", str(tmp_path / "back"))
    assert code == 0 and json.loads(out) == {
        "source": f"{pdh}/data",
        "destination": str(tmp_path / "back"),
        "files": [
            {"path": str(tmp_path / "back" / "a.txt"), "size": 6},
            {"path": str(tmp_path / "back" / "sub" / "b.txt"), "size": 10},
        ],
    }
    assert (tmp_path / "back" / "sub" / "b.txt").read_text() == "beta beta\n"
    archive = tmp_path / "image.tar"
    image_id = image_archive(
        archive, repo_tag="lab/json:v1", created="2026-01-02T03:04:05Z", content=b"json\n"
    )
    code, out, err = cli("keepdocker", "--json", str(archive))
    assert code == 0, err
    image = json.loads(out)
    assert image["uuid"].startswith("zzzzz-4zz18-")
    code, out, _ = cli("ls", image["portable_data_hash"])
    assert out == f"./sha256:{image_id}.tar\n"


def test_list_newest_first_with_filters_state_limit_and_order(cli: Cli, stack: Stack) -> None:
    first = cli.submit("count", "n:=1", "label=list-a")
    second = cli.submit("fail", "label=list-b")
    stack.wait(first)
    stack.wait(second)
    code, out, _ = cli("list")
    assert code == 0 and not ANSI.search(out)
    rows = [line.split() for line in out.splitlines()]
    assert all(len(row) == 7 for row in rows), out  # parseable: one token per column
    uuids = [row[0] for row in rows]
    assert uuids.index(second) < uuids.index(first)
    assert rows[uuids.index(second)][1:4] == ["Failed", "fail", stack.repo]
    code, out, _ = cli("list", "--state", "failed", "--limit", "50")
    assert code == 0 and {line.split()[1] for line in out.splitlines()} == {"Failed"}
    assert second in out and first not in out
    code, out, _ = cli(
        "list",
        "--filter",
        '["script","=","count"]',
        "--filter",
        f'["uuid","<=","{first}"]',
        "--limit",
        "1000",
    )
    rows = [line.split() for line in out.splitlines()]
    assert first in [row[0] for row in rows] and {row[2] for row in rows} == {"count"}
    code, out, _ = cli("list", "--filter", f'["uuid","=","{first}"]')
    assert [line.split()[0] for line in out.splitlines()] == [first]
    code, out, _ = cli("list", "--limit", "1", "--order", "created_at asc", "--json")
    answer = json.loads(out)
    assert code == 0 and len(answer["items"]) == 1 and answer["items_available"] >= 2
    oldest = min(
        (j for j in stack.call("GET", "jobs", params={"limit": 1000})["items"]),
        key=lambda j: j["created_at"],
    )
    assert answer["items"][0]["uuid"] == oldest["uuid"]
    code, _, err = cli("list", "--filter", '["no_such_attribute","=","x"]')
    assert code == 1 and "no_such_attribute" in err


def test_queue_in_run_order_and_cancel(cli: Cli, stack: Stack) -> None:
    low = queued_unplaceable(stack, label="queue-low")
    high = stack.submit("count", {"label": "queue-high"}, job={**UNPLACEABLE, "priority": 5})[
        "uuid"
    ]
    try:
        code, out, _ = cli("queue")
        assert code == 0 and not ANSI.search(out)
        rows = [line.split(None, 6) for line in out.splitlines()]
        order = [row[1] for row in rows]
        assert order.index(high) < order.index(low)
        assert [row[0] for row in rows] == [str(n) for n in range(1, len(rows) + 1)]
        assert rows[order.index(high)][2] == "5"
        code, out, _ = cli("queue", "--json")
        items = json.loads(out)["items"]
        assert [j["uuid"] for j in items] == order
        assert all(j["state"] == "Queued" for j in items)
    finally:
        code, out, err = cli("cancel", low, high)
    assert code == 0, err
    assert out.splitlines() == [f"{low}  Cancelled", f"{high}  Cancelled"]
    code, out, _ = cli("queue")
    assert low not in out and high not in out
    # cancelling a failed job is refused (exit 1); the other one is still cancelled
    failed = stack.wait(cli.submit("fail", "label=queue-failed"))["uuid"]
    third = queued_unplaceable(stack, label="queue-third")
    code, out, err = cli("cancel", failed, third, "--json")
    assert code == 1 and f"crunch cancel: {failed}: " in err
    assert [j["uuid"] for j in json.loads(out)] == [third]
    assert stack.call("GET", f"jobs/{third}")["state"] == "Cancelled"


# --- what a terminal shows, and what a pipe gets -------------------------------------------


def in_terminal(stack: Stack, *argv: str, **env: str) -> tuple[int, str]:
    """The real `crunch` entry point with a pseudo-terminal as stdin, stdout and stderr."""
    import pty

    controller, terminal = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    environ |= {"ARVADOS_API_HOST": stack.url, "ARVADOS_API_TOKEN": stack.token, "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "crunch.cli", *argv],
        cwd=ROOT,
        env=environ | env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        output += data
    os.close(controller)
    return process.wait(timeout=30), output.decode()


def test_colour_on_a_terminal_plain_text_in_a_pipe(cli: Cli, stack: Stack) -> None:
    uuid = cli.submit("fail", "label=colours")
    stack.wait(uuid)
    code, shown = in_terminal(stack, "list", "--limit", "100")
    assert code == 0
    assert "\x1b[31mFailed\x1b[0m" in shown  # Failed in red
    assert "\x1b[1mUUID" in shown  # a bold header
    relative = re.compile(r"just now|\d+ s ago|\d+ min ago")
    assert relative.search(shown)
    code, shown = in_terminal(stack, "list", "--limit", "100", NO_COLOR="1")
    assert code == 0 and not ANSI.search(shown) and "UUID" in shown and relative.search(shown)
    piped = stack.crunch("list", "--limit", "100")
    assert piped.returncode == 0 and not ANSI.search(piped.stdout + piped.stderr)
    assert uuid in piped.stdout and "UUID" not in piped.stdout
    assert not relative.search(piped.stdout)
    job_view = stack.crunch("get", uuid)
    assert job_view.returncode == 0 and not ANSI.search(job_view.stdout)


# --- following logs --------------------------------------------------------------------------


def log_lines(out: str) -> list[str]:
    """The script's own lines in a followed log (crunch adds stamped lines of its own)."""
    return [line for line in out.splitlines() if re.fullmatch(r"line \d+|about to fail", line)]


def test_submit_follow_exits_with_the_jobs_state(cli: Cli, stack: Stack) -> None:
    base = ["--follow", "--find-or-create", "n:=5", "pause:=0.1", "label=follow"]
    code, out, err = cli(
        "submit", "--repository", stack.repo, "--version", "main", "--script", "count", *base
    )
    assert code == 0, err
    first, *rest = out.splitlines()
    uuid, state, outcome = first.split()
    assert (state, outcome) == ("Queued", "new")
    assert log_lines("\n".join(rest)) == [f"line {n}" for n in range(1, 6)]
    assert re.search(rf"job {uuid} Complete finished_at \S+ output \S+ log \S+", err)
    assert stack.call("GET", f"jobs/{uuid}")["state"] == "Complete"
    # the same again is reused, already finished: its log and end state at once, exit 0
    code, out, err = cli(
        "submit", "--repository", stack.repo, "--version", "main", "--script", "count", *base
    )
    assert code == 0 and out.splitlines()[0].split() == [uuid, "Complete", "reused"]
    assert log_lines(out) == [f"line {n}" for n in range(1, 6)]
    assert f"job {uuid} Complete" in err
    # a failing job: its log, then exit 2
    code, out, err = cli(
        "submit", "--repository", stack.repo, "--version", "main", "--script", "fail", "-f"
    )
    assert code == 2 and log_lines(out) == ["about to fail"]
    assert re.search(r"job \S+ Failed finished_at", err)


def test_a_last_line_without_a_newline_is_a_line_of_its_own(cli: Cli, stack: Stack) -> None:
    code, out, err = cli(
        "submit", "--repository", stack.repo, "--version", "main", "--script", "partial", "-f"
    )
    assert code == 0, err
    uuid = out.split()[0]
    assert "first\nno newline at the end\n" in out
    assert re.search(rf"^\S+ job {uuid} Complete finished_at ", err, re.MULTILINE)
    # The saved log: crunch's own line after the script's last one starts a new line.
    text = stack.log_text(stack.wait_for_log(uuid))
    assert re.search(r"\nno newline at the end\n\S+ crunch: the script succeeded\n$", text)
    # On a terminal, where the log and the end state share the screen.
    code, shown = in_terminal(stack, "logs", uuid)
    assert code == 0
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line) for line in shown.splitlines()]
    last = lines.index("no newline at the end")
    assert lines[last + 1].endswith(" crunch: the script succeeded")
    assert lines[last + 2].startswith("● Complete") and uuid in lines[last + 2]


def test_logs_whole_follow_since_and_json(cli: Cli, stack: Stack) -> None:
    uuid = cli.submit("count", "n:=6", "label=logs")
    code, out, err = cli("logs", "--follow", uuid)
    assert code == 0, err
    assert log_lines(out) == [f"line {n}" for n in range(1, 7)]
    assert f"job {uuid} Complete" in err
    # without --follow: the whole log, exit 0 whatever the state
    code, whole, err = cli("logs", uuid)
    assert code == 0 and whole == out and f"job {uuid} Complete" in err
    failed = stack.wait(cli.submit("fail", "label=logs-failed"))["uuid"]
    code, out, _ = cli("logs", failed)
    assert code == 0 and log_lines(out) == ["about to fail"]
    code, out, _ = cli("logs", "-f", failed)
    assert code == 2 and log_lines(out) == ["about to fail"]
    # --json: one object per event, chunks numbered in order, the end last
    code, out, _ = cli("logs", "--json", "--all", uuid)
    events = [json.loads(line) for line in out.splitlines()]
    chunks = [e for e in events if e["event"] == "log"]
    assert [e["id"] for e in chunks] == sorted(e["id"] for e in chunks)
    assert log_lines("\n".join(x for e in chunks for x in e["lines"])) == log_lines(whole)
    assert events[-1]["event"] == "end" and events[-1]["state"] == "Complete"
    assert events[-1]["uuid"] == uuid
    # --since N: from chunk N on
    middle = next(e for e in chunks if "line 3" in e["lines"])
    code, out, _ = cli("logs", "--follow", "--since", str(middle["id"]), uuid)
    later = [x for e in chunks if e["id"] >= middle["id"] for x in e["lines"]]
    assert code == 0 and out.splitlines() == later
    # unknown job
    code, out, err = cli("logs", "-f", "zzzzz-8i9sb-000000000000000")
    assert (code, out) == (1, "") and "404" in err


def test_follow_of_a_job_that_cannot_be_placed_exits_2(cli: Cli, stack: Stack) -> None:
    uuid = queued_unplaceable(stack, label="unplaceable")
    try:
        code, out, err = cli("logs", "--follow", uuid)
        assert code == 2 and log_lines(out) == []
        assert f"crunch logs: {uuid} cannot be placed: no suitable node: requested 1" in err
        assert "GiB < 976562.5 GiB" in err
    finally:
        stack.call("POST", f"jobs/{uuid}/cancel")


class CuttingProxy:
    """A TCP proxy to the stack that cuts the first connection whose answer contains
    `marker`, just after it (in the middle of an event), and passes others through. With no
    marker, it closes every connection at once. `requests` holds what each client sent."""

    def __init__(self, port: int, marker: bytes | None) -> None:
        self.target = port
        self.marker = marker
        self.cut = False
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.marker is None:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.requests.append(b"")
            number = len(self.requests) - 1
            for args in ((client, upstream, number), (upstream, client, None)):
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, request: int | None) -> None:
        seen = b""
        try:
            while data := source.recv(65536):
                if request is not None:
                    self.requests[request] += data
                elif not self.cut and self.marker is not None:
                    seen += data
                    at = seen.find(self.marker)
                    if at >= 0:
                        self.cut = True
                        sink.sendall(data[: at + len(self.marker) - (len(seen) - len(data))])
                        break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_follow_resumes_after_a_dropped_connection_with_no_gap_or_repeat(
    cli: Cli, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    uuid = cli.submit("count", "n:=12", "pause:=0.2", "label=reconnect")
    proxy = CuttingProxy(int(stack.url.rsplit(":", 1)[1]), b"data: line 5\n")
    monkeypatch.setenv("ARVADOS_API_HOST", f"http://127.0.0.1:{proxy.port}")
    try:
        code, out, err = cli("logs", "--follow", "--all", uuid)
    finally:
        proxy.close()
    assert code == 0, err
    assert proxy.cut and "reconnecting" in err
    assert log_lines(out) == [f"line {n}" for n in range(1, 13)]
    # the second request resumed after the last whole chunk shown
    resumed = proxy.requests[1].decode()
    last = re.search(r"Last-Event-ID: (\d+)", resumed)
    assert last and f"since={int(last.group(1)) + 1}" in resumed
    assert f"job {uuid} Complete" in err


def test_follow_gives_up_after_a_few_attempts(
    cli: Cli, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crunch.jobscli

    uuid = stack.wait(cli.submit("count", "n:=1", "label=give-up"))["uuid"]
    proxy = CuttingProxy(int(stack.url.rsplit(":", 1)[1]), None)
    monkeypatch.setenv("ARVADOS_API_HOST", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setattr(crunch.jobscli, "RECONNECT_PAUSE", 0.01)
    try:
        code, out, err = cli("logs", "--follow", uuid)
    finally:
        proxy.close()
    assert (code, out) == (1, "")
    assert err.count("reconnecting") == crunch.jobscli.RECONNECT_ATTEMPTS
    assert f"crunch logs: lost the log stream of {uuid}" in err


# --- provenance and reuse ---------------------------------------------------------------------


def test_provenance_of_a_result_as_a_tree_dot_and_json_and_what_reuse_saved(
    cli: Cli, stack: Stack
) -> None:
    first = stack.wait(stack.submit("copy", {"input": "seed"})["uuid"])
    second = stack.submit("copy", {"input": first["output"]}, find_or_create=True)
    second = stack.wait(second["uuid"])
    again = stack.submit("copy", {"input": first["output"]}, find_or_create=True)
    assert again["uuid"] == second["uuid"]

    code, out, err = cli("provenance", second["output"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"collection {second['output']}")
    assert lines[1].startswith(f"  output of: job {second['uuid']} Complete [arvados] copy ")
    assert any(line.startswith("    reused by ") and "via arvados" in line for line in lines)
    assert any(line.startswith(f"    input: collection {first['output']} ") for line in lines)
    assert any(line.startswith(f"      output of: job {first['uuid']} Complete") for line in lines)
    assert any(line.startswith("        ran: commit ") for line in lines)
    assert not ANSI.search(out)  # piped: plain text

    code, out, _ = cli("provenance", first["output"], "--downstream", "--json")
    graph = json.loads(out)
    assert graph["direction"] == "downstream"
    assert {(e["from"], e["to"], e["kind"]) for e in graph["edges"] if e["kind"] == "input"} == {
        (first["output"], second["uuid"], "input")
    }
    code, out, _ = cli("provenance", second["uuid"], "--dot", "--depth", "1")
    assert out.startswith("digraph provenance {") and out.rstrip().endswith("}")
    assert f'"{first["output"]}" -> "{second["uuid"]}" [label="input"];' in out
    assert f'"{first["uuid"]}" [' not in out  # depth 1: the job itself, not the one before

    code, out, err = cli("reuse", "--since", "7d", "--by", "door")
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert int(fields["hits"]) >= 1 and int(fields["misses"]) >= 1
    rows = [line.split() for line in out.splitlines() if line.startswith("arvados")]
    assert len(rows) == 1 and int(rows[0][1]) >= 1

    code, out, err = cli("provenance", "0" * 32 + "+0")
    assert code == 1 and "not found" in err.lower(), err


def test_metrics_gather_what_the_server_and_the_worker_recorded(stack: Stack) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    job = stack.wait(stack.submit("count", {"N": "1"})["uuid"])
    assert job["state"] == "Complete"
    admin = manage(stack.env, "create_api_token", "root", "--admin")
    url = f"{stack.url}/metrics"
    assert requests.get(url, timeout=30).status_code == 401
    refused = requests.get(url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30)
    assert refused.status_code == 403, refused.text
    answer = requests.get(url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    # Recorded by the worker process (the job's start and end), read by the server's scrape.
    runs = samples[("crunch_job_run_seconds_count", (("door", "arvados"), ("state", "Complete")))]
    waits = samples[("crunch_job_queue_wait_seconds_count", (("door", "arvados"),))]
    assert runs >= 1 and waits >= 1
    assert samples[("crunch_jobs", (("door", "arvados"), ("state", "Complete")))] >= 1
    assert samples[("crunch_nodes_live", ())] >= 1
