"""The Ray-style door driven by Ray's own client: `JobSubmissionClient` and the `ray job` CLI
(ray 2.60.0, with aiohttp and pydantic) against a live `crunch serve` with a worker, on
PostgreSQL and Redis when they are configured (as in CI), else on the embedded stack.

The worker offers the label pool=blue and the custom resource NPU=2, so placement refusals
have something to compare with."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from tests.crunch.stack import Stack, manage, running_stack

ray_submission = pytest.importorskip("ray.job_submission")
JobSubmissionClient = ray_submission.JobSubmissionClient
JobStatus = ray_submission.JobStatus

RAY = str(Path(sys.executable).parent / "ray")
MAIN = """\
import os, sys
print("hello from", os.path.basename(os.getcwd()) != "", os.environ.get("GREETING"))
open("scratch.txt", "w").write("the copy is writable")
print("data:", open("data/input.txt").read().strip())
"""


def _kind() -> str:
    services = settings.CRUNCH_DB_IS_POSTGRES and os.environ.get("REDIS_URL")
    return "services" if services else "embedded"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_JOB_HEADERS"):
        os.environ.pop(name, None)
    with running_stack(
        _kind(),
        tmp_path_factory.mktemp("ray-stack"),
        {"noop": "#!/bin/sh\ntrue\n"},
        extra_env={
            "CRUNCH_WORKER_LABELS": "pool=blue",
            "CRUNCH_WORKER_RESOURCES": "NPU=2",
            "CRUNCH_WORKER_HEARTBEAT": "1",
        },
    ) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Any:
    return JobSubmissionClient(stack.url, headers={"Authorization": f"Bearer {stack.token}"})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "main.py").write_text(MAIN)
    (folder / "data" / "input.txt").write_text("forty-two\n")
    return folder


def wait(client: Any, job_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        info = client.get_job_info(job_id)
        if info.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return info
        assert time.monotonic() < deadline, f"{job_id} still {info.status}"
        time.sleep(0.2)


def tail(client: Any, job_id: str) -> str:
    async def read() -> str:
        frames = []
        async for text in client.tail_job_logs(job_id):
            frames.append(text)
        return "".join(frames)

    return asyncio.run(read())


def refusal(call: Any) -> str:
    with pytest.raises(RuntimeError) as caught:
        call()
    return str(caught.value)


# --- submit, follow, read -----------------------------------------------------------------


def test_submit_a_working_dir_with_env_vars_and_pip_then_tail_status_and_logs(
    client: Any, stack: Stack, workdir: Path
) -> None:
    (workdir / "usesix.py").write_text(
        "import os, six\nprint('six', six.__version__, os.environ['VIRTUAL_ENV'] != '')\n"
    )
    job_id = client.submit_job(
        entrypoint="python main.py && python usesix.py",
        runtime_env={
            "working_dir": str(workdir),
            "env_vars": {"GREETING": "hi there"},
            "pip": ["six==1.16.0"],
        },
        metadata={"team": "vision"},
    )
    assert job_id.startswith("app-")
    text = tail(client, job_id)  # from the first line to a normal close
    assert "hello from True hi there" in text and "data: forty-two" in text
    assert "six 1.16.0 True" in text and "Successfully installed six-1.16.0" in text
    info = client.get_job_info(job_id)
    assert info.status == JobStatus.SUCCEEDED and info.message == "Job finished successfully."
    assert info.driver_exit_code == 0 and info.entrypoint == "python main.py && python usesix.py"
    assert info.metadata == {"team": "vision"}
    assert info.start_time <= info.end_time and info.end_time > 1_700_000_000_000
    assert info.runtime_env["env_vars"] == {"GREETING": "hi there"}
    assert info.runtime_env["working_dir"].startswith("keep:")
    assert client.get_job_logs(job_id).count("data: forty-two") == 1
    # A Crunch job like any other: the door, the working tree by PDH, what pip resolved.
    raw = requests.get(
        f"{stack.url}/api/jobs/{job_id}",
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=30,
    ).json()["crunch"]
    job = stack.call("GET", f"jobs/{raw['uuid']}")
    assert job["door"] == "ray" and job["working_dir"] == info.runtime_env["working_dir"][5:]
    assert job["resolved_packages"]["six"] == "1.16.0"
    assert job["python_requirements"] == ["six==1.16.0"]

    # The same list again: the environment is reused, not rebuilt.
    again = client.submit_job(
        entrypoint="python usesix.py",
        runtime_env={"working_dir": str(workdir), "pip": ["six==1.16.0"]},
    )
    assert wait(client, again).status == JobStatus.SUCCEEDED
    logs = client.get_job_logs(again)
    assert "reusing the Python environment" in logs and "Successfully installed" not in logs


def test_a_failed_install_and_a_failing_entrypoint_say_why(client: Any, workdir: Path) -> None:
    broken = client.submit_job(
        entrypoint="python main.py",
        runtime_env={"working_dir": str(workdir), "pip": ["no-such-package-crunch-test==0.0.1"]},
    )
    info = wait(client, broken)
    assert info.status == JobStatus.FAILED
    assert "pip install failed" in info.message and "no-such-package-crunch-test" in info.message
    failing = client.submit_job(entrypoint="echo about to fail; exit 3")
    info = wait(client, failing)
    assert info.status == JobStatus.FAILED and info.driver_exit_code == 3
    assert info.message.startswith(
        "Job entrypoint command failed with exit code 3, last available logs"
    )
    assert "about to fail" in info.message


def test_stop_kills_the_process_tree_and_delete_only_finished_jobs(
    client: Any, stack: Stack
) -> None:
    job_id = client.submit_job(entrypoint="sleep 417 & sleep 418; wait")
    deadline = time.monotonic() + 60
    while client.get_job_status(job_id) != JobStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    while subprocess.run(["pgrep", "-f", "sleep 41[78]"], capture_output=True).returncode:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    message = refusal(lambda: client.delete_job(job_id))
    assert "non-terminal state RUNNING" in message
    assert client.stop_job(job_id) is True
    stopped = time.monotonic()
    assert wait(client, job_id, timeout=30).status == JobStatus.STOPPED
    while subprocess.run(["pgrep", "-f", "sleep 41[78]"], capture_output=True).returncode == 0:
        assert time.monotonic() - stopped < 5, "the job's processes outlived the stop by 5 s"
        time.sleep(0.1)
    assert client.get_job_info(job_id).message == "Job was intentionally stopped."
    assert client.stop_job(job_id) is False
    assert client.delete_job(job_id) is True
    assert "does not exist" in refusal(lambda: client.get_job_info(job_id))
    assert job_id not in [j.submission_id for j in client.list_jobs()]


# --- headers: tenants and pools -----------------------------------------------------------


def test_tenants_pools_and_resources_through_headers(
    stack: Stack, client: Any, workdir: Path
) -> None:
    auth = {"Authorization": f"Bearer {stack.token}"}
    project = stack.call(
        "POST", "groups", json={"group": {"name": "vision", "group_class": "project"}}
    )
    tenant = JobSubmissionClient(
        stack.url, headers=auth | {"X-Tenant-Id": project["uuid"], "X-Pool-Label": "blue"}
    )
    job_id = tenant.submit_job(
        entrypoint="python3 main.py",
        runtime_env={"working_dir": str(workdir)},
        entrypoint_resources={"NPU": 1},
        entrypoint_num_cpus=0.5,
        entrypoint_memory=256 * 1024**2,
    )
    assert wait(tenant, job_id).status == JobStatus.SUCCEEDED
    by_name = JobSubmissionClient(stack.url, headers=auth | {"X-Tenant-Id": "vision"})
    assert [j.submission_id for j in by_name.list_jobs()] == [job_id]
    crunch = requests.get(f"{stack.url}/api/jobs/{job_id}", headers=auth, timeout=30).json()
    assert stack.call("GET", f"jobs/{crunch['crunch']['uuid']}")["owner_uuid"] == project["uuid"]

    red = JobSubmissionClient(stack.url, headers=auth | {"X-Pool-Label": "red"})
    message = refusal(lambda: red.submit_job(entrypoint="true", submission_id="red-one"))
    assert "create app failed, submissionId:[red-one], err:" in message
    assert "no available resource that meets the request requirements" in message
    assert "The reasons are as follows" in message and "pool" in message
    message = refusal(lambda: client.submit_job(entrypoint="true", entrypoint_resources={"NPU": 4}))
    assert "NPU 2 < 4" in message

    unknown = JobSubmissionClient(stack.url, headers=auth | {"X-Tenant-Id": "nope"})
    assert "Tenant nope does not exist" in refusal(lambda: unknown.submit_job(entrypoint="true"))


def test_packages_are_kept_per_tenant(stack: Stack) -> None:
    """A package uploaded for one tenant is not found under another: its client uploads its
    own instead of running what the first one planted."""
    import io
    import zipfile

    other_token = manage(stack.env, "create_api_token", "mallory")
    name = "_ray_pkg_0123456789abcdef.zip"
    url = f"{stack.url}/api/packages/gcs/{name}"
    planted = io.BytesIO()
    with zipfile.ZipFile(planted, "w") as archive:
        archive.writestr("main.py", "print('planted')\n")
    put = requests.put(
        url, data=planted.getvalue(), headers={"Authorization": f"Bearer {other_token}"}, timeout=30
    )
    assert put.status_code == 200, put.text
    mine = {"Authorization": f"Bearer {stack.token}"}
    assert requests.get(url, headers={"Authorization": f"Bearer {other_token}"}, timeout=30).ok
    assert requests.get(url, headers=mine, timeout=30).status_code == 404
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escape.py", "print('out')\n")
    refused = requests.put(url, data=evil.getvalue(), headers=mine, timeout=30)
    assert refused.status_code == 400 and "not a relative path" in refused.text
    assert requests.get(url, headers=mine, timeout=30).status_code == 404


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"entrypoint_num_cpus": 20}, "entrypoint_num_cpus must be between 0.3 and 16"),
        ({"entrypoint_num_cpus": 0.1}, "entrypoint_num_cpus must be between 0.3 and 16"),
        ({"entrypoint_memory": 1024}, "entrypoint_memory must be between 134217728 and"),
        ({"entrypoint_memory": 2**51}, "1125899906842624 bytes"),
        ({"submission_id": "Not_Valid"}, "must match ^[a-z0-9-]{1,64}$"),
        ({"submission_id": "x" * 65}, "must match ^[a-z0-9-]{1,64}$"),
        ({"runtime_env": {"conda": {"dependencies": ["numpy"]}}}, "runtime_env.conda is not"),
        ({"runtime_env": {"env_vars": {"1BAD": "x"}}}, "is not a variable name"),
        ({"runtime_env": {"pip": ["--index-url=http://evil"]}}, "is not a requirement"),
    ],
)
def test_each_range_and_format_refusal_names_the_field(
    client: Any, arguments: dict[str, Any], words: str
) -> None:
    before = len(client.list_jobs())
    assert words in refusal(lambda: client.submit_job(entrypoint="true", **arguments))
    assert len(client.list_jobs()) == before


def test_a_duplicate_submission_id_is_refused_even_under_concurrent_submits(
    client: Any, stack: Stack
) -> None:
    assert client.submit_job(entrypoint="true", submission_id="once") == "once"
    assert "Job with submission_id once already exists" in refusal(
        lambda: client.submit_job(entrypoint="true", submission_id="once")
    )
    results: list[Any] = []

    def submit() -> None:
        own = JobSubmissionClient(stack.url, headers={"Authorization": f"Bearer {stack.token}"})
        try:
            results.append(own.submit_job(entrypoint="true", submission_id="racing"))
        except RuntimeError as exc:
            results.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("racing") == 1
    assert all("already exists" in str(r) for r in results if r != "racing")


def test_opt_in_reuse_hands_back_the_earlier_submission(client: Any, workdir: Path) -> None:
    first = client.submit_job(
        entrypoint="python3 main.py",
        runtime_env={"working_dir": str(workdir), "env_vars": {"GREETING": "again"}},
        metadata={"crunch.reuse": "true"},
    )
    assert wait(client, first).status == JobStatus.SUCCEEDED
    second = client.submit_job(
        entrypoint="python3 main.py",
        runtime_env={"working_dir": str(workdir), "env_vars": {"GREETING": "again"}},
        metadata={"crunch.reuse": "true"},
    )
    assert second == first
    third = client.submit_job(
        entrypoint="python3 main.py",
        runtime_env={"working_dir": str(workdir), "env_vars": {"GREETING": "changed"}},
        metadata={"crunch.reuse": "true"},
    )
    assert third != first


# --- the ray job CLI ---------------------------------------------------------------------------


def test_the_ray_job_cli_submits_tails_and_reads(stack: Stack, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    headers = json.dumps({"Authorization": f"Bearer {stack.token}"})
    common = ["--address", stack.url, "--headers", headers]

    def ray(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RAY, "job", *args], capture_output=True, text=True, env=env, timeout=300
        )

    done = ray(
        "submit",
        *common,
        "--working-dir",
        str(workdir),
        "--submission-id",
        "cli-one",
        "--",
        "python3",
        "main.py",
    )
    assert done.returncode == 0, done.stderr
    assert "data: forty-two" in done.stdout
    assert "Job 'cli-one' succeeded" in done.stderr + done.stdout
    failed = ray("submit", *common, "--", "sh", "-c", "exit 4")
    assert failed.returncode == 1
    status = ray("status", *common, "cli-one")
    assert status.returncode == 0 and "Job 'cli-one' succeeded" in status.stdout + status.stderr
    logs = ray("logs", *common, "cli-one")
    assert logs.returncode == 0 and "data: forty-two" in logs.stdout
    listing = ray("list", *common)
    assert listing.returncode == 0 and "cli-one" in listing.stdout


# --- reuse across doors -------------------------------------------------------------------------


def test_the_same_work_through_two_doors_is_reused_and_the_lineage_shows_it(
    client: Any, stack: Stack, workdir: Path
) -> None:
    """A Ray submit and `crunch submit` (the Arvados door) of the same tree, argv and
    environment: the second gets the first's job, and its lineage shows the reuse."""
    ray_id = client.submit_job(
        entrypoint="python3 main.py",
        runtime_env={"working_dir": str(workdir), "env_vars": {"GREETING": "both doors"}},
        metadata={"crunch.reuse": "true"},
    )
    assert wait(client, ray_id).status == JobStatus.SUCCEEDED
    auth = {"Authorization": f"Bearer {stack.token}"}
    uuid = requests.get(f"{stack.url}/api/jobs/{ray_id}", headers=auth, timeout=30).json()[
        "crunch"
    ]["uuid"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARVADOS_")}
    env |= {"ARVADOS_API_HOST": stack.url, "ARVADOS_API_TOKEN": stack.token}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "crunch.cli",
            "submit",
            "--workdir",
            str(workdir),
            "--env",
            "GREETING=both doors",
            "--find-or-create",
            "--",
            "sh",
            "-c",
            "python3 main.py",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == uuid and done.stdout.split()[-1] == "reused", done.stdout
    graph = stack.call("GET", f"jobs/{uuid}/provenance")
    reuses = [n for n in graph["nodes"] if n["kind"] == "reuse"]
    assert [n["door"] for n in reuses] == ["arvados"]
    assert {"from": uuid, "to": reuses[0]["id"], "kind": "reused_by"} in graph["edges"]
    assert next(n for n in graph["nodes"] if n["id"] == uuid)["door"] == "ray"
