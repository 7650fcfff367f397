"""Placement with real processes: workers with different CRUNCH_WORKER_LABELS on one stack,
jobs whose constraints use each operator landing on the node that satisfies them, a job no
node can run explaining why node by node (scheduling_status, its log, `crunch submit
--follow`), and workers finding the API where clients do (CRUNCH_EXTERNAL_URL)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.crunch.stack import ROOT, STACK_KINDS, Stack, manage, running_stack
from tests.keep_server import free_port

SCRIPTS = {"hello": '#!/bin/sh\necho "$JOB_PARAMETER_NAME" > "$CRUNCH_OUTPUT/out.txt"\n'}
FAST = {
    "CRUNCH_WORKER_HEARTBEAT": "1",
    "CRUNCH_WORKER_TTL": "6",
    "CRUNCH_SWEEP_SECONDS": "1",
}
# How soon the sweeper re-sends a hint. On Redis, never during these tests: a hint that
# reaches a worker which cannot run the job must be passed on to one that can. The
# filesystem broker does not pass hints on; there the sweeper's re-sending places jobs.
REQUEUE = {"embedded": "1", "services": "3600"}
WEST = "region=us-west-2,tier=gold,disk=100"
EUROPE = "region=eu-west-1,tier=silver,disk=500,spot"


@dataclass
class Placed:
    stack: Stack
    admin: str

    def node(self, uuid: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.stack.url}/arvados/v1/nodes/{uuid}",
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def nodes(self, hostname: str) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.stack.url}/arvados/v1/nodes",
            params={"filters": f'[["hostname","=","{hostname}"]]', "order": "created_at"},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@pytest.fixture(scope="module", params=STACK_KINDS)
def placed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Placed]:
    work = tmp_path_factory.mktemp(f"placement-{request.param}")
    extra = FAST | {"CRUNCH_REQUEUE_SECONDS": REQUEUE[request.param]}
    with running_stack(request.param, work, SCRIPTS, extra_env=extra, workers=0) as stack:
        admin = manage(stack.env, "create_api_token", "root", "--admin")
        stack.start_worker("west", {"CRUNCH_WORKER_LABELS": WEST})
        stack.start_worker("europe", {"CRUNCH_WORKER_LABELS": EUROPE})
        yield Placed(stack, admin)


def landed_on(placed: Placed, job: dict[str, Any]) -> str:
    """The worker name of the node that ran `job` (`west`, `europe`), from its log."""
    text = placed.stack.log_text(placed.stack.wait_for_log(job["uuid"]))
    found = re.search(r" crunch: on node (\S+)@\S+ \(([a-z0-9-]{27})\)\n", text)
    assert found, text
    assert placed.node(found[2])["hostname"].startswith(f"{found[1]}@")
    return found[1]


CASES = [
    # (constraints as the job gives them, where it must run)
    ([{"key": "region", "operator": "=", "values": ["us-west-2"]}], "west"),
    ([{"key": "region", "operator": "!=", "values": ["us-west-2"]}], "europe"),
    ([{"key": "tier", "operator": "in", "values": ["silver", "bronze"]}], "europe"),
    ([{"key": "tier", "operator": "notin", "values": ["silver"]}], "west"),
    ([{"key": "spot", "operator": "exists"}], "europe"),
    ([{"key": "spot", "operator": "!exists", "values": []}], "west"),
    ([{"key": "disk", "operator": "gt", "values": ["200"]}], "europe"),
    ([{"key": "disk", "operator": "lt", "values": [200]}], "west"),
    (["spot"], "europe"),  # the original list of labels
    (["region=us-west-2", "!spot", "os=linux"], "west"),  # selector text, automatic labels
]


def test_each_operator_places_jobs_on_the_node_that_satisfies_it(placed: Placed) -> None:
    stack = placed.stack
    submitted = [
        (
            stack.submit(
                "hello",
                {"name": f"case-{index}"},
                job={"runtime_constraints": {"constraints": constraints}},
            ),
            where,
        )
        for index, (constraints, where) in enumerate(CASES)
    ]
    for job, where in submitted:
        done = stack.wait(job["uuid"], timeout=120)
        assert done["state"] == "Complete", done
        assert landed_on(placed, done) == where, (done["runtime_constraints"], where)
    # two workers on one host are two nodes, each with its labels and the automatic ones
    west = placed.nodes(next(n for n in _hostnames(placed) if n.startswith("west@")))
    europe = placed.nodes(next(n for n in _hostnames(placed) if n.startswith("europe@")))
    assert len(west) == len(europe) == 1 and west[0]["uuid"] != europe[0]["uuid"]
    labels = west[0]["info"]["labels"]
    assert {"region": "us-west-2", "tier": "gold", "disk": "100"}.items() <= labels.items()
    assert set(labels) >= {"arch", "os", "hostname", "cpus", "memory", "gpus"}
    assert europe[0]["info"]["labels"]["spot"] == "true"


def _hostnames(placed: Placed) -> list[str]:
    response = requests.get(
        f"{placed.stack.url}/arvados/v1/nodes",
        params={"limit": "1000"},
        headers={"Authorization": f"Bearer {placed.admin}"},
        timeout=30,
    )
    return [n["hostname"] for n in response.json()["items"]]


def test_crunch_submit_constraint_places_the_job(placed: Placed) -> None:
    stack = placed.stack
    result = stack.crunch(
        "submit",
        "--repository",
        stack.repo,
        "--script",
        "hello",
        "--version",
        "main",
        "name=cli",
        "--constraint",
        "tier in (gold, platinum)",
        "--constraint",
        "disk<200",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    job = stack.wait(json.loads(result.stdout)["uuid"])
    assert job["runtime_constraints"]["constraints"] == [
        {"key": "tier", "operator": "in", "values": ["gold", "platinum"]},
        {"key": "disk", "operator": "lt", "values": ["200"]},
    ]
    assert job["state"] == "Complete" and landed_on(placed, job) == "west"
    bad = stack.crunch(
        "submit", "--repository", stack.repo, "--script", "hello", "--constraint", "tier in ()"
    )
    assert bad.returncode == 1 and "--constraint 'tier in ()'" in bad.stderr, bad.stderr


def test_a_job_no_node_can_run_says_why_node_by_node(placed: Placed) -> None:
    stack = placed.stack
    result = stack.crunch(
        "submit",
        "--repository",
        stack.repo,
        "--script",
        "hello",
        "--version",
        "main",
        "name=nowhere",
        "--constraint",
        "region=ap-south-1",
        "--follow",
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    uuid = result.stdout.split()[0]
    reason = re.compile(
        r"no suitable node: requested 1, available \d+, suitable 0; "
        r"europe@[^:;]+: region=eu-west-1 does not satisfy region = ap-south-1; "
        r"west@[^:;]+: region=us-west-2 does not satisfy region = ap-south-1"
    )
    assert f"crunch submit: {uuid} cannot be placed: " in result.stderr
    assert reason.search(result.stderr), result.stderr
    job = stack.call("GET", f"jobs/{uuid}")
    assert job["state"] == "Queued" and reason.fullmatch(job["scheduling_status"]), job
    log = requests.get(
        f"{stack.url}/arvados/v1/jobs/{uuid}/log_tail_follow",
        params={"since": "0", "follow": "false"},
        headers={"Authorization": f"Bearer {stack.token}", "Accept": "text/plain"},
        timeout=30,
    ).text
    assert reason.search(log), log
    stack.call("POST", f"jobs/{uuid}/cancel")


def test_a_worker_with_only_the_external_url_runs_jobs(placed: Placed) -> None:
    stack = placed.stack
    stack.start_worker(
        "outside",
        {
            "CRUNCH_API_URL": None,
            "CRUNCH_EXTERNAL_URL": stack.url,
            "CRUNCH_WORKER_LABELS": "role=outside",
        },
    )
    job = stack.submit(
        "hello", {"name": "outside"}, job={"runtime_constraints": {"constraints": ["role"]}}
    )
    done = stack.wait(job["uuid"], timeout=120)
    assert done["state"] == "Complete", stack.log_text(stack.wait_for_log(done["uuid"]))
    assert landed_on(placed, done) == "outside"
    assert stack.file(done["output"], "out.txt") == b"outside\n"


def test_no_worker_shares_a_database_connection_with_its_pool(placed: Placed) -> None:
    for log in placed.stack.logs.glob("*.log"):
        assert "server closed the connection unexpectedly" not in log.read_text(), log.name


def test_a_worker_that_cannot_reach_the_api_exits_naming_the_variable(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "CRUNCH_DATA_DIR": str(tmp_path),
        "CRUNCH_API_URL": f"http://127.0.0.1:{free_port()}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "crunch.cli", "worker", "--api-wait", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"crunch worker: cannot reach the API at {env['CRUNCH_API_URL']}")
    assert "CRUNCH_API_URL" in last and "CRUNCH_EXTERNAL_URL" in last
