"""The Bacalhau-style door driven by the real `bacalhau-apiclient` (1.4.1) and by `crunch job
run|list|logs|stop` as separate processes, against a live `crunch serve` with workers that
run each task in a Podman container (on PostgreSQL and Redis when they are configured, as
in CI). Two workers: `us` (region=us, tier=gpu, rank=5) and `eu` (region=eu, rank=1)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings

from tests.api.test_bacalhau_api import fuzzed_jobs
from tests.api.test_bacalhau_api import values as any_values
from tests.crunch.podman import IMAGE_TAG, RUN_ARGS, Podman
from tests.crunch.stack import Stack, running_stack
from tests.crunch.test_nomad_door import _kind

bacalhau_apiclient = pytest.importorskip("bacalhau_apiclient")
from bacalhau_apiclient.api.orchestrator_api import OrchestratorApi  # noqa: E402
from bacalhau_apiclient.models.api_put_job_request import ApiPutJobRequest  # noqa: E402
from bacalhau_apiclient.models.job import Job  # noqa: E402
from bacalhau_apiclient.models.label_selector_requirement import (  # noqa: E402
    LabelSelectorRequirement,
)
from bacalhau_apiclient.models.spec_config import SpecConfig  # noqa: E402
from bacalhau_apiclient.models.task import Task  # noqa: E402
from bacalhau_apiclient.rest import ApiException  # noqa: E402

BASE = "/api/v1/orchestrator"
LABELS = {"us": "region=us,tier=gpu,rank=5", "eu": "region=eu,rank=1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, podman: Podman) -> Iterator[Stack]:
    extra = podman.env | {
        "CRUNCH_CONTAINER_CLI": podman.cli,
        "CRUNCH_CONTAINER_RUN_ARGS": RUN_ARGS,
        "CRUNCH_WORKER_HEARTBEAT": "1",
        "CRUNCH_SWEEP_SECONDS": "1",
        "CRUNCH_URL_INPUTS_PRIVATE": "true",  # the test serves its input on loopback
    }
    with running_stack(
        _kind(),
        tmp_path_factory.mktemp("bacalhau-stack"),
        {"noop": "#!/bin/sh\ntrue\n"},
        extra_env=extra,
        workers=0,
    ) as running:
        for name, labels in LABELS.items():
            running.start_worker(name, {"CRUNCH_WORKER_LABELS": labels})
        stored = running.crunch("keepdocker", str(podman.archive), IMAGE_TAG)
        assert stored.returncode == 0, stored.stderr
        deadline = time.monotonic() + 60
        while len(nodes_of(running)) < 2:
            assert time.monotonic() < deadline, "the workers did not register"
            time.sleep(0.3)
        yield running


def nodes_of(stack: Stack) -> list[dict[str, Any]]:
    response = requests.get(
        f"{stack.url}{BASE}/nodes", headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
    )
    return response.json()["Nodes"]


def client_for(stack: Stack, token: str | None = None) -> OrchestratorApi:
    config = bacalhau_apiclient.Configuration()
    config.host = stack.url
    api = bacalhau_apiclient.ApiClient(config)
    api.set_default_header("Authorization", f"Bearer {token or stack.token}")
    return OrchestratorApi(api)


@pytest.fixture
def b(stack: Stack) -> OrchestratorApi:
    return client_for(stack)


def task(script: str, **extra: Any) -> Task:
    return Task(
        name="main",
        engine=SpecConfig(
            type="docker",
            params={"Image": IMAGE_TAG, "Entrypoint": ["sh", "-c"], "Parameters": [script]},
        ),
        **extra,
    )


def job(script: str, job_type: str = "batch", count: int | None = 1, **extra: Any) -> Job:
    return Job(type=job_type, count=count, tasks=[task(script)], **extra)


def put(b: OrchestratorApi, spec: Job) -> Any:
    return b.orchestratorput_job(ApiPutJobRequest(job=spec))


def wait_state(
    b: OrchestratorApi, job_id: str, states: tuple[str, ...], timeout: float = 120
) -> tuple[Any, list[int]]:
    """The job once in one of `states`, and every Revision seen on the way."""
    deadline = time.monotonic() + timeout
    revisions: list[int] = []
    while True:
        got = b.orchestratorget_job(job_id).job
        if not revisions or revisions[-1] != got.revision:
            revisions.append(got.revision)
        if got.state.state_type in states:
            return got, revisions
        assert time.monotonic() < deadline, (job_id, got.state)
        time.sleep(0.2)


def node_names(stack: Stack) -> dict[str, str]:
    return {n["Info"]["NodeID"]: n["Info"]["Labels"]["region"] for n in nodes_of(stack)}


def test_a_batch_job_with_count_2_runs_two_executions(b: OrchestratorApi, stack: Stack) -> None:
    answer = put(b, job("echo hello from $BACALHAU_JOB_ID", count=2, labels={"env": "test"}))
    assert answer.job_id.startswith("j-") and answer.warnings == []
    done, revisions = wait_state(b, answer.job_id, ("Completed", "Failed"))
    assert done.state.state_type == "Completed", done
    assert revisions == sorted(revisions) and len(revisions) >= 2  # each change bumps it
    executions = b.orchestratorjob_executions(answer.job_id, order_by="").items
    assert len(executions) == 2
    for execution in executions:
        assert execution.compute_state.state_type == "Completed"
        assert execution.run_output.exit_code == 0
        assert execution.run_output.stdout == f"hello from {answer.job_id}\n"
        assert execution.node_id in node_names(stack)
    history = b.orchestratorjob_history(answer.job_id, event_type="all").items
    assert [h.new_revision for h in history] == list(range(1, done.revision + 1))
    # the instances are Crunch jobs like any other, with their door
    listed = stack.call("GET", "jobs", params={"filters": '[["door", "=", "bacalhau"]]'})
    assert len([j for j in listed["items"] if j["state"] == "Complete"]) >= 2


def test_constraints_pick_the_nodes_of_ops_jobs(b: OrchestratorApi, stack: Stack) -> None:
    cases = {
        ("region", "=", ("us",)): {"us"},
        ("region", "!=", ("us",)): {"eu"},
        ("region", "in", ("us", "eu")): {"us", "eu"},
        ("region", "notin", ("us",)): {"eu"},
        ("tier", "exists", ()): {"us"},
        ("rank", "gt", ("3",)): {"us"},
    }
    submitted = {}
    for (key, op, values), _ in cases.items():
        requirement = LabelSelectorRequirement(key=key, operator=op, values=list(values) or None)
        answer = put(b, job("echo ops", job_type="ops", count=None, constraints=[requirement]))
        submitted[(key, op, values)] = answer.job_id
    regions = node_names(stack)
    for case, job_id in submitted.items():
        done, _ = wait_state(b, job_id, ("Completed", "Failed"))
        assert done.state.state_type == "Completed", (case, done)
        executions = b.orchestratorjob_executions(job_id, order_by="").items
        assert {regions[e.node_id] for e in executions} == cases[case], case
        assert len(executions) == len(cases[case])


def test_a_service_job_is_restarted_until_stopped(b: OrchestratorApi, stack: Stack) -> None:
    answer = put(b, job("echo tick; sleep 1", job_type="service", count=1))
    deadline = time.monotonic() + 90
    while True:
        executions = b.orchestratorjob_executions(answer.job_id, order_by="").items
        ended = [e for e in executions if e.compute_state.state_type == "Completed"]
        if len(ended) >= 2:
            break
        assert time.monotonic() < deadline, [e.compute_state for e in executions]
        time.sleep(0.3)
    running = b.orchestratorget_job(answer.job_id).job
    assert running.state.state_type == "Running"
    b.orchestratorstop_job(answer.job_id, reason="None")
    stopped, _ = wait_state(b, answer.job_id, ("Stopped",), timeout=30)
    assert stopped.revision > running.revision
    time.sleep(2.5)  # two sweeps: nothing new starts
    after = b.orchestratorjob_executions(answer.job_id, order_by="").items
    assert all(e.desired_state.state_type == "Stopped" for e in after)
    assert {e.compute_state.state_type for e in after} <= {"Completed", "Cancelled"}


def test_resubmitting_by_name_bumps_the_version(b: OrchestratorApi) -> None:
    first = put(b, job("echo one", name="versioned"))
    again = put(b, job("echo two", name="versioned"))
    assert again.job_id == first.job_id
    done, _ = wait_state(b, first.job_id, ("Completed", "Failed"))
    assert done.version == 1 and done.state.state_type == "Completed"
    outputs = [
        e.run_output.stdout
        for e in b.orchestratorjob_executions(first.job_id, order_by="").items
        if e.run_output is not None
    ]
    assert "two\n" in outputs


def test_inputs_and_results_round_trip(b: OrchestratorApi, stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("twelve bytes")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.txt"
    spec = {
        "Type": "batch",
        "Count": 2,
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "docker",
                    "Params": {
                        "Image": IMAGE_TAG,
                        "Entrypoint": ["sh", "-c"],
                        "Parameters": [
                            "cp /inputs/data.txt /outputs/copy.txt; wc -c < /inputs/data.txt"
                        ],
                    },
                },
                "InputSources": [
                    {"Source": {"Type": "urlDownload", "Params": {"URL": url}}, "Target": "/inputs"}
                ],
                "Publisher": {"Type": "local"},
                "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
            }
        ],
    }
    try:
        spec_file = tmp_path / "job.json"
        spec_file.write_text(json.dumps(spec))
        ran = stack.crunch("job", "run", str(spec_file), "--wait")
    finally:
        server.shutdown()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    job_id = ran.stdout.split("Job ID: ")[1].split()[0]
    results = b.orchestratorjob_results(job_id).items
    assert len(results) == 2
    pdh = results[0].params["PDH"]
    fetched = stack.crunch("get", f"{pdh}/outputs/copy.txt", str(tmp_path / "copy.txt"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "copy.txt").read_text() == "twelve bytes"
    outputs = [e.run_output.stdout for e in b.orchestratorjob_executions(job_id, order_by="").items]
    assert outputs == ["12\n", "12\n"]
    downloads = stack.call(
        "GET", "collections", params={"filters": f'[["name", "=", "Download of {url}"]]'}
    )
    assert len(downloads["items"]) == 1  # fetched once, whatever Count


def test_the_cli_lists_by_labels_follows_logs_and_exits_2_when_unplaceable(
    stack: Stack, tmp_path: Path
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "Name: cli-job\nType: batch\nCount: 1\nLabels:\n  team: cli\nTasks:\n  - Name: main\n"
        "    Engine:\n      Type: docker\n      Params:\n"
        f"        Image: {IMAGE_TAG}\n        Entrypoint: [sh, -c]\n"
        "        Parameters: ['for i in 1 2 3; do echo line $i; done']\n"
    )
    ran = stack.crunch("job", "run", str(spec), "--id-only", "--wait")
    assert ran.returncode == 0, ran.stderr
    job_id = ran.stdout.strip()
    assert job_id.startswith("j-") and "\n" not in job_id
    listed = stack.crunch("job", "list", "--labels", "team=cli")
    assert listed.returncode == 0 and "cli-job" in listed.stdout, listed.stdout
    assert "cli-job" not in stack.crunch("job", "list", "--labels", "team!=cli").stdout
    logs = stack.crunch("job", "logs", job_id, "--follow")
    assert logs.returncode == 0, logs.stderr
    assert "line 1\nline 2\nline 3\n" in logs.stdout
    history = stack.crunch("job", "history", job_id)
    assert "Completed" in history.stdout
    spec.write_text(
        spec.read_text().replace("Name: cli-job", "Name: nowhere")
        + "Constraints:\n  - Key: region\n    Operator: '='\n    Values: [mars]\n"
    )
    refused = stack.crunch("job", "run", str(spec))
    assert refused.returncode == 2, refused.stderr
    assert "not enough nodes to run job. requested: 1, available: 2, suitable: 0." in refused.stderr
    assert "region=eu does not satisfy region = mars" in refused.stderr


def test_refusals_reach_the_apiclient_as_4xx(b: OrchestratorApi, stack: Stack) -> None:
    with pytest.raises(ApiException) as caught:
        put(b, job("echo", count=None))
    assert caught.value.status == 400
    assert "job count must be > 0" in json.loads(caught.value.body)["message"]
    with pytest.raises(ApiException) as caught:
        b.orchestratorget_job("j-does-not-exist")
    assert caught.value.status == 404
    with pytest.raises(ApiException) as caught:
        put(b, job("echo", namespace="no-such-project"))
    assert caught.value.status == 404


def test_a_daemon_job_starts_on_a_node_that_joins_later(b: OrchestratorApi, stack: Stack) -> None:
    requirement = LabelSelectorRequirement(key="tier", operator="=", values=["gpu"])
    answer = put(
        b,
        job(
            "echo daemon on $CRUNCH_TEMPLATE_SLOT",
            job_type="daemon",
            count=None,
            constraints=[requirement],
        ),
    )
    first = b.orchestratorjob_executions(answer.job_id, order_by="").items
    assert len(first) == 1
    stack.start_worker("late", {"CRUNCH_WORKER_LABELS": "region=us,tier=gpu"})
    deadline = time.monotonic() + 90
    while True:
        executions = b.orchestratorjob_executions(answer.job_id, order_by="").items
        if len({e.node_id for e in executions if e.node_id}) == 2 and all(
            e.compute_state.state_type == "Completed" for e in executions
        ):
            break
        assert time.monotonic() < deadline, [(e.node_id, e.compute_state) for e in executions]
        time.sleep(0.3)
    assert len(executions) == 2
    assert b.orchestratorget_job(answer.job_id).job.state.state_type == "Running"
    b.orchestratorstop_job(answer.job_id, reason="done")
    assert b.orchestratorget_job(answer.job_id).job.state.state_type == "Stopped"


def test_logs_stream_over_the_websocket_as_bacalhaus_frames(
    b: OrchestratorApi, stack: Stack
) -> None:
    import asyncio

    import websockets

    answer = put(b, job("for i in 1 2 3; do echo tick $i; sleep 0.3; done"))
    url = stack.url.replace("http://", "ws://") + f"{BASE}/jobs/{answer.job_id}/logs?follow=true"

    async def read() -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {stack.token}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            return [json.loads(frame) async for frame in ws]

    frames = asyncio.run(asyncio.wait_for(read(), 120))
    assert [f["value"]["Line"] for f in frames] == ["tick 1\n", "tick 2\n", "tick 3\n"]
    assert {f["value"]["Type"] for f in frames} == {1} and {f["error"] for f in frames} == {None}
    # the apiclient's plain GET of the same endpoint gets the text
    assert b.orchestratorlogs(answer.job_id) == "tick 1\ntick 2\ntick 3\n"

    async def refused() -> int:
        try:
            async with websockets.connect(url.replace(answer.job_id, "j-nope")):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(refused()) == 401  # no token


def test_a_namespace_the_caller_cannot_write_is_a_403(b: OrchestratorApi, stack: Stack) -> None:
    project = stack.call(
        "POST", "groups", json={"group": {"name": "lab", "group_class": "project"}}
    )
    reader_token = stack.reader_of(project["uuid"])
    answer = put(b, job("echo in the lab", namespace="lab"))
    reader = client_for(stack, reader_token)
    assert reader.orchestratorget_job(answer.job_id).job.namespace == "lab"
    with pytest.raises(ApiException) as caught:
        put(reader, job("echo not allowed", namespace="lab"))
    assert caught.value.status == 403
    assert "permission denied" in json.loads(caught.value.body)["message"]
    with pytest.raises(ApiException) as caught:
        reader.orchestratorstop_job(answer.job_id, reason="None")
    assert caught.value.status == 403


def _counts(stack: Stack) -> tuple[int, int]:
    """Bacalhau jobs and Crunch jobs (collections are left out: jobs accepted earlier in the
    run store their logs meanwhile)."""

    listed = requests.get(
        f"{stack.url}{BASE}/jobs",
        params={"namespace": "*"},
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=30,
    ).json()
    jobs = stack.call("GET", "jobs", params={"limit": "0"})
    return len(listed["Items"]), int(jobs["items_available"])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(job_spec=fuzzed_jobs | any_values)
def test_fuzzed_specs_through_the_apiclient_are_4xx_and_create_nothing(
    stack: Stack, job_spec: Any
) -> None:
    b = client_for(stack)
    before = _counts(stack)
    body = {"Job": job_spec} if isinstance(job_spec, dict) else job_spec
    assume(body is not None)  # the client refuses to send no body at all, by itself
    try:
        answer = b.orchestratorput_job(body)
    except ApiException as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.body)
        assert set(json.loads(exc.body)) == {"message", "error"}
        assert _counts(stack) == before
    else:  # an acceptable spec: a job, which is stopped so that it runs no further
        b.orchestratorstop_job(answer.job_id, reason="fuzzed")
