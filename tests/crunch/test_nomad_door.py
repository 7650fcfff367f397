"""The Nomad-style door driven by the real python-nomad client (2.1.0) and by `crunch job
register|dispatch` as separate processes, against a live `crunch serve` with a worker (on
PostgreSQL and Redis when they are configured, as in CI). The worker is labelled
region=us."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.crunch.stack import Stack, running_stack

nomad = pytest.importorskip("nomad")
from nomad.api import exceptions as nomad_errors  # noqa: E402

TASK = "cat local/input.json; echo; env | grep '^NOMAD_' | sort; echo MODE=$MODE"


def parameterized(job_id: str = "encode", **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "ID": job_id,
        "Type": "batch",
        "Meta": {"quality": "720p"},
        "ParameterizedJob": {
            "Payload": "required",
            "MetaRequired": ["input"],
            "MetaOptional": ["quality", "s3-extra"],
        },
        "TaskGroups": [
            {
                "Name": "video",
                "Tasks": [
                    {
                        "Name": "run",
                        "Driver": "raw_exec",
                        "Config": {"command": "sh", "args": ["-c", TASK]},
                        "Env": {"MODE": "fast"},
                        "DispatchPayload": {"File": "input.json"},
                        "Resources": {"CPU": 100, "MemoryMB": 64},
                    }
                ],
            }
        ],
    }
    job.update(extra)
    return {"Job": job}


def _kind() -> str:
    services = settings.CRUNCH_DB_IS_POSTGRES and os.environ.get("REDIS_URL")
    return "services" if services else "embedded"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for name in ("NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_NAMESPACE", "NOMAD_REGION"):
        os.environ.pop(name, None)
    with running_stack(
        _kind(),
        tmp_path_factory.mktemp("nomad-stack"),
        {"noop": "#!/bin/sh\ntrue\n"},
        extra_env={"CRUNCH_WORKER_LABELS": "region=us", "CRUNCH_WORKER_HEARTBEAT": "1"},
    ) as running:
        yield running


def client_for(stack: Stack, token: str | None = None, namespace: str | None = None) -> Any:
    url = stack.url.removeprefix("http://")
    host, port = url.split(":")
    return nomad.Nomad(
        host=host, port=int(port), token=token or stack.token, timeout=5, namespace=namespace
    )


@pytest.fixture
def n(stack: Stack) -> Any:
    return client_for(stack)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_dead(n: Any, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = n.job.get_job(job_id)
        if job["Status"] == "dead":
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def refused(call: Any) -> tuple[str, str]:
    with pytest.raises(nomad_errors.BaseNomadException) as caught:
        call()
    return type(caught.value).__name__, caught.value.nomad_resp.text


# --- register, dispatch, read -------------------------------------------------------------


def test_register_dispatch_and_read_evaluation_allocation_logs(n: Any, stack: Stack) -> None:
    answer = n.jobs.register_job(parameterized())
    assert answer["EvalID"] == ""
    listed = {j["ID"]: j for j in n.jobs.get_jobs()}
    assert listed["encode"]["ParameterizedJob"] is True and listed["encode"]["Status"] == "running"
    assert n.job.get_job("encode")["ParameterizedJob"]["MetaRequired"] == ["input"]

    payload = b'{"frames": 240}'
    dispatched = n.job.dispatch_job(
        "encode", payload=b64(payload), meta={"input": "s3://bucket/a", "s3-extra": "x"}
    )
    child = dispatched["DispatchedJobID"]
    assert child.startswith("encode/dispatch-") and dispatched["EvalID"]
    job = wait_dead(n, child)
    assert job["ParentID"] == "encode" and job["Dispatched"] is True
    assert job["Meta"] == {"quality": "720p", "input": "s3://bucket/a", "s3-extra": "x"}
    evaluation = n.evaluation.get_evaluation(dispatched["EvalID"])
    assert evaluation["Status"] == "complete" and evaluation["JobID"] == child
    assert evaluation["FailedTGAllocs"] is None
    allocations = n.job.get_allocations(child)
    assert len(allocations) == 1
    alloc = allocations[0]
    assert alloc["ClientStatus"] == "complete" and alloc["TaskStates"]["run"]["State"] == "dead"
    assert n.evaluation.get_allocations(dispatched["EvalID"])[0]["ID"] == alloc["ID"]
    assert n.allocation.get_allocation(alloc["ID"])["Job"]["ID"] == child
    logs = n.client.stream_logs.stream(alloc["ID"], "run", "stdout", plain=True)
    assert payload.decode() in logs  # the payload file's bytes
    for line in (
        "NOMAD_META_input=s3://bucket/a",
        "NOMAD_META_INPUT=s3://bucket/a",
        "NOMAD_META_quality=720p",
        "NOMAD_META_s3_extra=x",
        "NOMAD_META_S3_EXTRA=x",
        f"NOMAD_JOB_ID={child}",
        "NOMAD_JOB_PARENT_ID=encode",
        f"NOMAD_ALLOC_ID={alloc['ID']}",
        "NOMAD_TASK_NAME=run",
        "NOMAD_TASK_DIR=local",
        "MODE=fast",
    ):
        assert line in logs.splitlines(), line
    # JSON frames, offsets, and a followed stream that ends with the task.
    frames = n.client.stream_logs.stream(alloc["ID"], "run", "stdout")
    assert '"Data"' in frames and '"File": "alloc/logs/run.stdout.0"' in frames
    tail = n.client.stream_logs.stream(
        alloc["ID"], "run", "stdout", plain=True, origin="end", offset=10
    )
    assert len(tail.encode()) == 10 and logs.endswith(tail)
    followed = n.client.stream_logs.stream(alloc["ID"], "run", "stdout", follow=True, plain=True)
    assert payload.decode() in followed
    # A Crunch job like any other, recording where it came from.
    crunch = stack.call("GET", f"jobs/{job['Crunch']['uuid']}")
    assert crunch["door"] == "nomad" and crunch["template_version"] == 0
    assert "NOMAD_JOB_ID" not in (crunch["environment"] or {})  # not part of its identity


def test_optional_meta_not_given_is_set_empty_and_reregistering_bumps_the_version(
    n: Any,
) -> None:
    n.jobs.register_job(parameterized("versions"))
    assert n.job.get_job("versions")["Version"] == 0
    n.jobs.register_job(parameterized("versions"))  # unchanged: same version
    assert n.job.get_job("versions")["Version"] == 0
    changed = parameterized("versions", Meta={"quality": "1080p"})
    n.job.register_job("versions", changed)
    assert n.job.get_job("versions")["Version"] == 1
    child = n.job.dispatch_job("versions", payload=b64(b"{}"), meta={"input": "i"})
    alloc_job = wait_dead(n, child["DispatchedJobID"])
    assert alloc_job["Version"] == 1 and alloc_job["Meta"]["quality"] == "1080p"
    alloc = n.job.get_allocations(child["DispatchedJobID"])[0]
    logs = n.client.stream_logs.stream(alloc["ID"], "run", "stdout", plain=True)
    assert "NOMAD_META_s3_extra=" in logs.splitlines()


@pytest.mark.parametrize(
    ("call", "kind", "text"),
    [
        (
            lambda n: n.job.dispatch_job("encode", meta={"input": "x"}),
            "BadRequestNomadException",
            "Payload is not provided but required by parameterized job",
        ),
        (
            lambda n: n.job.dispatch_job("encode", payload=b64(b"x" * 20000), meta={"input": "x"}),
            "BadRequestNomadException",
            "Payload exceeds maximum size; 20000 > 16384",
        ),
        (
            lambda n: n.job.dispatch_job(
                "encode", payload=b64(b"1"), meta={"input": "x", "x": "1"}
            ),
            "BadRequestNomadException",
            "Dispatch request included unpermitted metadata keys: [x]",
        ),
        (
            lambda n: n.job.dispatch_job("encode", payload=b64(b"1"), meta={"quality": "1"}),
            "BadRequestNomadException",
            "Dispatch did not provide required meta keys: [input]",
        ),
        (
            lambda n: n.job.dispatch_job("encode", payload="not base64!!", meta={"input": "x"}),
            "BadRequestNomadException",
            "Payload must be base64 text: it cannot be decoded",
        ),
        (
            lambda n: n.job.dispatch_job("missing", payload=b64(b"1")),
            "URLNotFoundNomadException",
            "parameterized job not found",
        ),
        (
            lambda n: n.jobs.register_job({"Job": {"ID": "svc", "TaskGroups": []}}),
            "BadRequestNomadException",
            "Only parameterized jobs can be registered here",
        ),
        (
            lambda n: n.jobs.register_job(parameterized("svc", Type="service")),
            "BadRequestNomadException",
            'Parameterized job can only be used with "batch" or "sysbatch" scheduler',
        ),
        (
            lambda n: n.jobs.register_job(
                parameterized(
                    "both", ParameterizedJob={"MetaRequired": ["a"], "MetaOptional": ["a"]}
                )
            ),
            "BadRequestNomadException",
            "Required and optional meta keys should be disjoint. Following keys exist in both: [a]",
        ),
        (
            lambda n: n.jobs.register_job(
                parameterized("p", ParameterizedJob={"Payload": "sometimes"})
            ),
            "BadRequestNomadException",
            'Unknown payload requirement: "sometimes"',
        ),
    ],
)
def test_every_refusal_uses_nomads_words(n: Any, call: Any, kind: str, text: str) -> None:
    n.jobs.register_job(parameterized())
    before = len(n.jobs.get_jobs())
    got_kind, body = refused(lambda: call(n))
    assert got_kind == kind and text in body
    assert len(n.jobs.get_jobs()) == before


def test_sixteen_concurrent_dispatches_with_one_token_make_one_job(n: Any, stack: Stack) -> None:
    n.jobs.register_job(parameterized("idem"))
    results: list[Any] = []

    def dispatch() -> None:
        own = client_for(stack)
        try:
            answer = own.job.dispatch_job(
                "idem", payload=b64(b"{}"), meta={"input": "i"}, idempotency_token="tok-1"
            )
            results.append(answer["DispatchedJobID"])
        except nomad_errors.BaseNomadException as exc:  # a failure of the test below
            results.append(exc.nomad_resp.text)

    threads = [threading.Thread(target=dispatch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16 and len(set(results)) == 1, results
    children = [j for j in n.jobs.get_jobs(prefix="idem/") if j["ParentID"] == "idem"]
    assert [j["ID"] for j in children] == results[:1]
    again = n.job.dispatch_job(
        "idem", payload=b64(b"{}"), meta={"input": "i"}, idempotency_token="tok-1"
    )
    assert again["DispatchedJobID"] == results[0] and again["EvalID"] == ""


def test_identical_dispatches_of_a_reusing_job_are_reused(n: Any, stack: Stack) -> None:
    n.jobs.register_job(parameterized("cached", Meta={"crunch.reuse": "true"}))
    first = n.job.dispatch_job("cached", payload=b64(b"same"), meta={"input": "i"})
    wait_dead(n, first["DispatchedJobID"])
    second = n.job.dispatch_job("cached", payload=b64(b"same"), meta={"input": "i"})
    assert second["DispatchedJobID"] == first["DispatchedJobID"]
    third = n.job.dispatch_job("cached", payload=b64(b"other"), meta={"input": "i"})
    assert third["DispatchedJobID"] != first["DispatchedJobID"]


def test_namespaces_are_projects_and_dispatch_needs_write(n: Any, stack: Stack) -> None:
    project = stack.call(
        "POST", "groups", json={"group": {"name": "media", "group_class": "project"}}
    )
    n.jobs.register_job(parameterized("shared", Namespace="media"))
    in_ns = client_for(stack, namespace="media")
    reader_token = stack.reader_of(project["uuid"])
    reader = client_for(stack, reader_token, namespace="media")
    assert reader.job.get_job("shared")["ID"] == "shared"
    kind, text = refused(
        lambda: reader.job.dispatch_job("shared", payload=b64(b"1"), meta={"input": "x"})
    )
    assert kind == "URLNotAuthorizedNomadException" and "Permission denied" in text
    ok = in_ns.job.dispatch_job("shared", payload=b64(b"1"), meta={"input": "x"})
    assert ok["DispatchedJobID"].startswith("shared/dispatch-")
    assert "job not found" in refused(lambda: n.job.get_job("shared"))[1]  # not in default


def test_deregister_stops_the_parameterized_job(n: Any) -> None:
    n.jobs.register_job(parameterized("gone"))
    n.job.deregister_job("gone")
    assert n.job.get_job("gone")["Status"] == "dead"
    kind, text = refused(lambda: n.job.dispatch_job("gone", payload=b64(b"1"), meta={"input": "x"}))
    assert 'Specified job "gone" is stopped' in text


# --- crunch job register | dispatch ------------------------------------------------------------

HCL = """
job "hcl-job" {
  type = "batch"
  meta {
    quality = "low"
  }
  parameterized {
    payload       = "optional"
    meta_required = ["input"]
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "sh"
        args    = ["-c", "echo payload: $(cat local/in.txt); echo input=$NOMAD_META_input"]
      }
      dispatch_payload {
        file = "in.txt"
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
"""


def crunch(
    stack: Stack, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARVADOS_")}
    env |= {"ARVADOS_API_HOST": stack.url, "ARVADOS_API_TOKEN": stack.token}
    return subprocess.run(
        [sys.executable, "-m", "crunch.cli", "job", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_crunch_job_register_and_dispatch_print_the_seed_format(
    stack: Stack, n: Any, tmp_path: Path
) -> None:
    job_file = tmp_path / "job.nomad"
    job_file.write_text(HCL)
    done = crunch(stack, "register", str(job_file))
    assert done.returncode == 0, done.stderr
    assert b"Job registration successful" in done.stdout

    done = crunch(stack, "dispatch", "-meta", "input=from-stdin", "hcl-job", "-", stdin=b"hello")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    lines = out.splitlines()
    assert lines[0].startswith("Dispatched Job ID = hcl-job/dispatch-")
    assert lines[1].startswith("Evaluation ID     = ") and len(lines[1].split("= ")[1]) == 8
    assert "==> " in out and 'Monitoring evaluation "' in out
    assert 'Allocation "' in out and "created: node" in out and 'group "g"' in out
    assert out.rstrip().endswith('finished with status "complete"')
    child = lines[0].split("= ")[1]
    wait_dead(n, child)
    alloc = n.job.get_allocations(child)[0]
    logs = n.client.stream_logs.stream(alloc["ID"], "t", "stdout", plain=True)
    assert "payload: hello" in logs and "input=from-stdin" in logs

    payload = tmp_path / "payload.txt"
    payload.write_bytes(b"from a file")
    done = crunch(stack, "dispatch", "-detach", "-meta", "input=f", "hcl-job", str(payload))
    assert done.returncode == 0 and len(done.stdout.decode().splitlines()) == 2


def test_crunch_job_dispatch_exits_2_when_unplaceable_and_1_on_errors(stack: Stack, n: Any) -> None:
    n.jobs.register_job(
        parameterized(
            "eu-only",
            Constraints=[{"LTarget": "${meta.region}", "RTarget": "eu", "Operand": "="}],
        )
    )
    done = crunch(stack, "dispatch", "-meta", "input=x", "eu-only", "-", stdin=b"{}")
    out = done.stdout.decode()
    assert done.returncode == 2, (out, done.stderr)
    assert "but failed to place all allocations:" in out
    assert 'Task Group "video" (failed to place 1 allocation):' in out
    assert '* Constraint "region = eu": 1 nodes excluded by filter' in out
    assert "waiting for additional capacity to place remainder" in out

    missing = crunch(stack, "dispatch", "nope")
    assert missing.returncode == 1
    assert b'No parameterized job(s) with prefix or ID "nope" found' in missing.stderr
    bad_meta = crunch(stack, "dispatch", "-meta", "novalue", "encode")
    assert bad_meta.returncode == 1 and b"Error parsing meta value: novalue" in bad_meta.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARVADOS_")}
    env |= {"ARVADOS_API_HOST": "http://127.0.0.1:9", "ARVADOS_API_TOKEN": "x"}
    unreachable = subprocess.run(
        [sys.executable, "-m", "crunch.cli", "job", "dispatch", "encode"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert unreachable.returncode == 1 and b"Cannot reach" in unreachable.stderr
