"""Command jobs as users run them: `crunch submit --workdir DIR -- COMMAND...` against a real
stack (serve and a worker; embedded, and PostgreSQL with Redis). The directory is uploaded
(unchanged files are not sent again), the command runs in a writable copy of it, its output
collection holds what it left in $CRUNCH_OUTPUT, and resubmitting reuses the job until one
byte of one file, the argv or an environment value changes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crunch.stack import STACK_KINDS, Stack, running_stack

TRAIN = """\
import json, os, sys
data = open("data.txt").read()
result = {"argv": sys.argv[1:], "seed": os.environ.get("SEED"), "data": data.upper(),
          "nested": open("sub/dir/notes.txt").read()}
with open(os.path.join(os.environ["CRUNCH_OUTPUT"], "result.json"), "w") as out:
    json.dump(result, out)
open("scratch.txt", "w").write("the copy is writable")
print("trained on", len(data), "bytes")
print("no newline at the end", end="")
"""


@pytest.fixture(scope="module", params=STACK_KINDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        request.param,
        tmp_path_factory.mktemp(f"command-{request.param}"),
        {"noop": "#!/bin/sh\ntrue\n"},
        extra_env={
            "CRUNCH_SWEEP_SECONDS": "1",
            "CRUNCH_WORKER_HEARTBEAT": "1",
            "CRUNCH_REQUEUE_SECONDS": "1",
        },
    ) as running:
        yield running


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "sub" / "dir").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "train.py").write_text(TRAIN)
    (root / "data.txt").write_text("hello data\n")
    (root / "sub" / "dir" / "notes.txt").write_text("nested file\n")
    return root


class Submitter:
    def __init__(self, stack: Stack, project: Path, cache: Path) -> None:
        self.stack, self.project, self.cache = stack, project, cache

    def __call__(self, *command: str, env: tuple[str, ...] = ("SEED=7",)) -> tuple[str, str, str]:
        """Submit with --find-or-create; the job uuid, "new" or "reused", and stderr."""
        options = [o for pair in env for o in ("--env", pair)]
        done = self.stack.crunch(
            "submit",
            "--workdir",
            str(self.project),
            *options,
            "--find-or-create",
            "--",
            *command,
            env={"XDG_CACHE_HOME": str(self.cache)},
        )
        assert done.returncode == 0, done.stderr
        uuid, _state, outcome = done.stdout.split()[:3]
        return uuid, outcome, done.stderr


def sent(stderr: str) -> int:
    match = re.search(r"(\d+) files, (\d+) sent", stderr)
    assert match, stderr
    return int(match.group(2))


def test_a_command_over_an_uploaded_directory_runs_and_is_reused(
    stack: Stack, project: Path, tmp_path: Path
) -> None:
    submit = Submitter(stack, project, tmp_path / "cache")
    command = ("python3", "train.py", "--epochs", "3")
    uuid, outcome, err = submit(*command)
    assert outcome == "new" and sent(err) == 3 and "left out .git" in err
    job = stack.wait(uuid)
    assert job["state"] == "Complete", stack.log_text(stack.wait_for_log(uuid))
    assert job["command"] == list(command) and job["environment"] == {"SEED": "7"}
    assert job["script"] is None and job["working_dir"]
    result = json.loads(stack.file(job["output"], "result.json"))
    assert result == {
        "argv": ["--epochs", "3"],
        "seed": "7",
        "data": "HELLO DATA\n",
        "nested": "nested file\n",
    }
    log = stack.log_text(stack.wait_for_log(uuid))
    assert "trained on 11 bytes" in log and "python3 train.py --epochs 3" in log
    # The uploaded tree is unchanged by the run, and .git was not part of it.
    files = stack.call("GET", f"collections/{job['working_dir']}")["manifest_text"]
    assert "scratch.txt" not in files and ".git" not in files and "notes.txt" in files

    # The same again: reused, and nothing is sent.
    again, outcome, err = submit(*command)
    assert (again, outcome) == (uuid, "reused") and sent(err) == 0

    # One byte of one file: a new job, and only that file is sent.
    (project / "data.txt").write_text("hello date\n")
    changed, outcome, err = submit(*command)
    assert outcome == "new" and changed != uuid and sent(err) == 1
    assert json.loads(stack.file(stack.wait(changed)["output"], "result.json"))["data"] == (
        "HELLO DATE\n"
    )
    (project / "data.txt").write_text("hello data\n")
    back, outcome, _ = submit(*command)
    assert (back, outcome) == (uuid, "reused")  # the same tree has the same hash

    # The argv, or an environment value: new jobs.
    other_argv, outcome, _ = submit("python3", "train.py", "--epochs", "4")
    assert outcome == "new" and other_argv != uuid
    other_env, outcome, _ = submit(*command, env=("SEED=8",))
    assert outcome == "new" and other_env not in (uuid, other_argv)
    assert json.loads(stack.file(stack.wait(other_env)["output"], "result.json"))["seed"] == "8"


def test_a_failing_command_fails_the_job_with_its_exit_code(stack: Stack, tmp_path: Path) -> None:
    done = stack.crunch("submit", "--json", "--", "sh", "-c", "echo oops >&2; exit 4")
    assert done.returncode == 0, done.stderr
    job: dict[str, Any] = stack.wait(json.loads(done.stdout)["uuid"])
    assert job["state"] == "Failed" and job["working_dir"] is None
    log = stack.log_text(stack.wait_for_log(job["uuid"]))
    assert "oops" in log and "exit code 4" in log


def test_submit_refuses_command_options_on_script_jobs(stack: Stack) -> None:
    done = stack.crunch("submit", "--repository", "x", "--script", "y", "--env", "A=1")
    assert done.returncode == 1 and "--env is for command jobs" in done.stderr
    done = stack.crunch("submit", "--script", "y", "--", "true")
    assert done.returncode == 1 and "--script is for script jobs" in done.stderr
    done = stack.crunch("submit", "--memory", "lots", "--", "true")
    assert done.returncode == 1 and "'lots' is not an amount of memory" in done.stderr


def test_a_job_that_waited_for_a_node_keeps_the_notes_of_its_wait(stack: Stack) -> None:
    """The sweeper notes in the log why a queued job cannot run; once it can, its run's log
    goes on after those notes."""
    huge = {"runtime_constraints": {"min_ram_mb_per_node": 10**9}}
    job = stack.call("POST", "jobs", json={"job": {"command": ["echo", "ran"], **huge}})
    deadline = time.monotonic() + 30
    while not stack.call("GET", f"jobs/{job['uuid']}")["scheduling_status"]:
        assert time.monotonic() < deadline, "the sweeper never explained the job"
        time.sleep(0.2)
    stack.call("PUT", f"jobs/{job['uuid']}", json={"job": {"runtime_constraints": {}}})
    done = stack.wait(job["uuid"])
    log = stack.log_text(stack.wait_for_log(job["uuid"]))
    assert done["state"] == "Complete", log
    assert log.index("no suitable node") < log.index("ran\n")
