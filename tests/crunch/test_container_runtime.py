"""The container runtime for real: jobs with `runtime_constraints.docker_image` run in a
Podman container of an image stored with `crunch keepdocker`.

The image is built here without a network: `podman import` of a root file system holding
only a static busybox, then `podman save --format docker-archive`. It is built in one
Podman store and run by the worker from another (both under a tmp dir, configured through
CONTAINERS_CONF and CONTAINERS_STORAGE_CONF), so the first job loads it from Keep.

Skipped, with the reason, when Podman cannot run containers here (`apt-get install podman
runc busybox-static`); with CRUNCH_REQUIRE_SERVICES=1 (CI) that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crunch.podman import IMAGE_TAG, RUN_ARGS, Podman
from tests.crunch.stack import STACK_KINDS, Stack, alive, running_stack

SCRIPTS = {
    "hello": """#!/bin/sh
printf 'hello %s\\n' "$JOB_PARAMETER_NAME" > "$CRUNCH_OUTPUT/out.txt"
""",
    "inside": """#!/bin/sh
echo "inside the image"
echo "to stderr" >&2
{
  echo "container=$container"
  echo "sh=$(readlink /bin/sh)"
  echo "pwd=$(pwd)"
  for name in CRUNCH_SRC CRUNCH_OUTPUT CRUNCH_TMP JOB_WORK TASK_WORK HOME TASK_KEEPMOUNT; do
    eval "echo $name=\\$$name"
  done
  echo "CRUNCH_DATA_DIR=${CRUNCH_DATA_DIR-unset}"
  test -n "$ARVADOS_API_TOKEN" && echo "token=set"
  test -x /crunch/src/crunch_scripts/inside && echo "src=mounted"
  touch /crunch/src/new 2>/dev/null && echo "src=writable" || echo "src=read-only"
  touch "$TASK_KEEPMOUNT/$JOB_PARAMETER_INPUT/new" 2>/dev/null && echo "keep=writable" \\
    || echo "keep=read-only"
  touch "$JOB_WORK/x" "$TASK_WORK/y" && echo "work=writable"
} > "$CRUNCH_OUTPUT/where.txt"
printf '%s' "$JOB_PARAMETER_TEXT" > "$CRUNCH_OUTPUT/text.txt"
mkdir "$CRUNCH_OUTPUT/sub"
cat "$TASK_KEEPMOUNT/$JOB_PARAMETER_INPUT/out.txt" > "$CRUNCH_OUTPUT/sub/copy.txt"
""",
    "flaky": """#!/bin/sh
n=$(cat "$JOB_WORK/tries" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$JOB_WORK/tries"
echo "try $n"
if [ "$n" -lt 3 ]; then exit 111; fi
echo "succeeded on try $n" > "$CRUNCH_OUTPUT/tries.txt"
""",
    "sleepy": """#!/bin/sh
echo "sleeping"
touch "$CRUNCH_OUTPUT/started"
sleep 300 &
wait
""",
}


@pytest.fixture(scope="module", params=STACK_KINDS)
def container_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, podman: Podman
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"container-stack-{request.param}")
    extra = podman.env | {
        "CRUNCH_CONTAINER_CLI": podman.cli,
        "CRUNCH_CONTAINER_RUN_ARGS": RUN_ARGS,
    }
    with running_stack(request.param, work, SCRIPTS, extra_env=extra) as stack:
        stored = stack.crunch("keepdocker", str(podman.archive), IMAGE_TAG)
        assert stored.returncode == 0, stored.stderr
        yield stack


def in_image(stack: Stack, script: str, params: dict[str, object]) -> dict[str, object]:
    return stack.submit(script, params, job={"runtime_constraints": {"docker_image": IMAGE_TAG}})


def test_the_container_runtime_runs_a_script_inside_a_podman_image(
    container_stack: Stack, podman: Podman
) -> None:
    stack = container_stack
    made = stack.wait(stack.submit("hello", {"name": "input"})["uuid"])  # the local runtime
    assert made["state"] == "Complete" and made["docker_image_locator"] is None
    text = 'it\'s "quoted" $HOME `id` ; rm -rf /\nline two\t\u00e9'
    job = stack.wait(in_image(stack, "inside", {"input": made["output"], "text": text})["uuid"])
    log_text = stack.log_text(job)
    assert job["state"] == "Complete", log_text
    [collection] = stack.call(
        "GET",
        "collections",
        params={"filters": f'[["portable_data_hash", "=", "{job["docker_image_locator"]}"]]'},
    )["items"]
    assert f":sha256\\072{podman.image_id}.tar" in collection["manifest_text"]  # ':' escaped
    assert stack.file(job["output"], "where.txt").decode().splitlines() == [
        "container=podman",  # set by Podman in its containers
        "sh=busybox",  # the image's /bin/sh, not the host's
        "pwd=/crunch",
        "CRUNCH_SRC=/crunch/src",
        "CRUNCH_OUTPUT=/crunch/output",
        "CRUNCH_TMP=/crunch",
        "JOB_WORK=/tmp/crunch-job-work",
        "TASK_WORK=/tmp/crunch-job-task-work",
        "HOME=/tmp/crunch-job-task-work",
        "TASK_KEEPMOUNT=/keep",
        "CRUNCH_DATA_DIR=unset",  # the worker's own variables stay outside
        "token=set",
        "src=mounted",
        "src=read-only",
        "keep=read-only",
        "work=writable",
    ]
    assert stack.file(job["output"], "text.txt") == text.encode()
    assert stack.file(job["output"], "sub/copy.txt") == b"hello input\n"
    assert "inside the image" in log_text and "to stderr" in log_text
    assert podman("image", "exists", podman.image_id).returncode == 0
    assert podman("container", "exists", f"crunch-{job['uuid']}").returncode == 1


def test_a_command_job_runs_as_the_images_entrypoint_in_its_writable_workdir(
    container_stack: Stack, tmp_path: Path
) -> None:
    stack = container_stack
    project = tmp_path / "project"
    project.mkdir()
    (project / "run.sh").write_text(
        'echo "args=$*" > "$CRUNCH_OUTPUT/args.txt"\n'
        'echo "greeting=$GREETING pwd=$(pwd) sh=$(readlink /bin/sh)" >> "$CRUNCH_OUTPUT/args.txt"\n'
        'touch made-here && echo "workdir=writable" >> "$CRUNCH_OUTPUT/args.txt"\n'
    )
    done = stack.crunch(
        "submit",
        "--json",
        "--workdir",
        str(project),
        "--image",
        IMAGE_TAG,
        "--env",
        "GREETING=it's $HOME; `id`",
        "--",
        "sh",
        "run.sh",
        "two words",
        "--flag",
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr
    job = stack.wait(json.loads(done.stdout)["uuid"])
    assert job["state"] == "Complete", stack.log_text(stack.wait_for_log(job["uuid"]))
    assert job["docker_image_locator"]
    assert stack.file(job["output"], "args.txt").decode().splitlines() == [
        "args=two words --flag",
        "greeting=it's $HOME; `id` pwd=/crunch/src sh=busybox",
        "workdir=writable",
    ]


def test_a_temporary_failure_in_a_container_is_tried_again(container_stack: Stack) -> None:
    stack = container_stack
    job = stack.wait(in_image(stack, "flaky", {})["uuid"])
    log_text = stack.log_text(job)
    assert job["state"] == "Complete", log_text
    assert stack.file(job["output"], "tries.txt") == b"succeeded on try 3\n"
    assert "try 1" in log_text and "try 2" in log_text
    assert "image sha256:" in log_text  # the image was loaded or found, and said so


def test_cancel_stops_the_container(container_stack: Stack, podman: Podman) -> None:
    stack = container_stack
    job = in_image(stack, "sleepy", {})
    name = f"crunch-{job['uuid']}"
    started_file = stack.work_dir / job["uuid"] / "output" / "started"
    deadline = time.monotonic() + 60
    while not started_file.exists():
        assert time.monotonic() < deadline, stack.call("GET", f"jobs/{job['uuid']}")
        time.sleep(0.1)
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
    assert pid > 0 and alive(pid)
    stack.call("POST", f"jobs/{job['uuid']}/cancel")
    cancelled = time.monotonic()
    stack.wait(job["uuid"], states=("Cancelled",))
    while alive(pid) or podman("container", "exists", name).returncode == 0:
        assert time.monotonic() - cancelled < 5, "the container outlived its cancellation by 5 s"
        time.sleep(0.1)
    done = stack.wait_for_log(job["uuid"])
    log_text = stack.log_text(done)
    assert "sleeping" in log_text and "stopped: the job was cancelled" in log_text


def test_the_engine_command_carries_no_secret_and_no_user_text(
    tmp_path: Path, settings: Any
) -> None:
    """What the runtime asks of the engine, recorded by a stand-in CLI: every argument a list
    element, variable values only in its environment, the image as its hex id."""
    from crunch.runner import ContainerRuntime, Runner
    from jobs.models import Job

    record = tmp_path / "calls.jsonl"
    fake = tmp_path / "engine"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps([sys.argv[1:], dict(os.environ)]) + '\\n')\n"
    )
    fake.chmod(0o755)
    settings.CRUNCH_WORK_DIR = tmp_path / "runs"
    settings.CRUNCH_CONTAINER_RUN_ARGS = ["--network", "none", "--label", "a b"]
    job = Job(
        uuid="zzzzz-8i9sb-000000000000001",
        script="tool.sh",
        script_version="0" * 40,
        repository="alice/tools",
        docker_image_locator="d41d8cd98f00b204e9800998ecf8427e+0",
        script_parameters={},
    )
    runner = Runner(job)
    runtime = runner.runtime
    assert isinstance(runtime, ContainerRuntime)
    for name in ("src", "output_dir", "job_work", "task_work", "keep"):
        setattr(runner, name, runner.dir / name)
        (runner.dir / name).mkdir(parents=True)
    runner.user = (65534, 65534)
    runtime.cli, runtime.image_id = str(fake), "ab" * 32
    nasty = "$(id); `id` ' \" \n--privileged"
    process = runtime.start(
        {"ARVADOS_API_TOKEN": "s3cret", "JOB_PARAMETER_X": nasty, "HOME": "/ignored", "PATH": "/x"}
    )
    assert process.wait(timeout=30) == 0
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0][0] == ["rm", "--force", f"crunch-{job.uuid}"]
    assert calls[1][0] == [
        "run",
        "--rm",
        "--name",
        f"crunch-{job.uuid}",
        "--pull",
        "never",
        "--user",
        "65534:65534",
        "--network",
        "none",
        "--label",
        "a b",
        "--volume",
        f"{runner.dir}/src:/crunch/src:ro",
        "--volume",
        f"{runner.dir}/keep:/keep:ro",
        "--volume",
        f"{runner.dir}/output_dir:/crunch/output:rw",
        "--volume",
        f"{runner.dir}/job_work:/tmp/crunch-job-work:rw",
        "--volume",
        f"{runner.dir}/task_work:/tmp/crunch-job-task-work:rw",
        "--env",
        "ARVADOS_API_TOKEN",
        "--env",
        "JOB_PARAMETER_X",
        "--env",
        "HOME=/tmp/crunch-job-task-work",
        "--workdir",
        "/crunch",
        "--entrypoint",
        "/crunch/src/crunch_scripts/tool.sh",
        "ab" * 32,
    ]
    env = calls[1][1]
    assert env["ARVADOS_API_TOKEN"] == "s3cret" and env["JOB_PARAMETER_X"] == nasty
    assert env.get("PATH") != "/x" and env.get("HOME") != "/ignored"  # the engine's own


def test_local_runs_are_limited_to_what_the_job_asked_for() -> None:
    from crunch.runner import limit_prefix

    assert limit_prefix({}) == []
    assert limit_prefix({"min_ram_mb_per_node": 64})[:2] == ["prlimit", "--data=67108864:67108864"]
    assert limit_prefix({"min_ram_mb_per_node": True}) == []
    if (os.cpu_count() or 1) > 1:
        assert limit_prefix({"min_cores_per_node": 1}) == ["taskset", "--cpu-list", "0-0"]
    assert limit_prefix({"min_cores_per_node": 10_000}) == []  # asks for more than there is
    assert limit_prefix({"ram": 512 * 1024**2})[:2] == ["prlimit", "--data=536870912:536870912"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        assert limit_prefix({"vcpus": 0.5}) == ["taskset", "--cpu-list", "0-0"]
