"""The sweeper's decisions (spec: lose nothing): silent workers' jobs fail with the reason in
their log, jobs no node can run say why, hints nobody picked up are sent again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Job, Node
from jobs.placement import live_nodes
from jobs.services import runs
from jobs.services.executions import execution_start
from jobs.services.tokens import system_user

pytestmark = pytest.mark.django_db

SENT: list[str] = []


def record(job_uuid: str) -> None:
    SENT.append(job_uuid)


def make_job(**fields: Any) -> Job:
    now = timezone.now()
    values = {
        "uuid": Job.new_uuid(),
        "owner_uuid": system_user().uuid,
        "created_at": now,
        "modified_at": now,
        "repository": "x/y",
        "script": "s",
        "script_version": "a" * 40,
        "script_parameters": {},
        "script_parameters_digest": "d",
        "state": "Queued",
    } | fields
    return Job.objects.create(**values)


def node(
    name: str, *, cores: int = 2, ram_mb: int = 4096, labels: tuple[str, ...] = (), age: float = 0
) -> Node:
    made = runs.node_register(
        hostname=name,
        cpus=cores,
        ram_bytes=ram_mb * 1024 * 1024,
        gpus=0,
        labels=dict.fromkeys(labels, "true"),
        slots=1,
    )
    Node.objects.filter(pk=made.pk).update(last_ping_at=timezone.now() - dt.timedelta(seconds=age))
    made.refresh_from_db()
    return made


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.CRUNCH_WORKER_TTL = 30
    settings.CRUNCH_REQUEUE_SECONDS = 30
    settings.CRUNCH_DISPATCHER = "tests.jobs.test_sweep.record"
    SENT.clear()


def test_a_silent_workers_running_job_fails_with_the_reason() -> None:
    silent = node("gone@host", age=120)
    alive = node("here@host")
    system = system_user()
    lost = make_job(
        state="Running",
        running=True,
        is_locked_by_uuid=system.uuid,
        worker_node_uuid=silent.uuid,
        started_at=timezone.now(),
    )
    fine = make_job(
        state="Running",
        running=True,
        is_locked_by_uuid=system.uuid,
        worker_node_uuid=alive.uuid,
        started_at=timezone.now(),
    )
    attempt = execution_start(job=lost, node_uuid=silent.uuid, hostname=None, log_seq=0)
    running = execution_start(job=fine, node_uuid=alive.uuid, hostname=None, log_seq=0)
    report = runs.sweep()
    assert report is not None and report.failed == [lost.uuid]
    lost.refresh_from_db()
    assert (lost.state, lost.success, lost.running) == ("Failed", False, False)
    assert lost.finished_at is not None
    assert "its worker gone@host stopped heartbeating" in runs.job_log_text(job_uuid=lost.uuid)
    attempt.refresh_from_db()
    assert (attempt.state, attempt.exit_code) == ("Lost", None)
    assert attempt.reason.startswith("its worker gone@host stopped heartbeating (last seen ")
    fine.refresh_from_db()
    running.refresh_from_db()
    assert fine.state == running.state == "Running"


def test_a_just_claimed_job_is_given_time() -> None:
    system = system_user()
    fresh = make_job(
        state="Running",
        running=True,
        is_locked_by_uuid=system.uuid,
        worker_node_uuid=None,
        started_at=timezone.now(),
    )
    assert runs.sweep().failed == []
    Job.objects.filter(pk=fresh.pk).update(started_at=timezone.now() - dt.timedelta(minutes=5))
    assert runs.sweep().failed == [fresh.uuid]


def test_jobs_no_node_can_run_say_why_and_placement_respects_constraints() -> None:
    node("small@host", cores=2, ram_mb=1024, labels=("cpu",))
    big = make_job(runtime_constraints={"min_cores_per_node": 64})
    gpu = make_job(runtime_constraints={"constraints": ["gpu"]})
    fits = make_job(runtime_constraints={"min_ram_mb_per_node": 512, "constraints": ["cpu"]})
    report = runs.sweep()
    assert sorted(report.unplaceable) == sorted([big.uuid, gpu.uuid])
    big.refresh_from_db()
    assert big.scheduling_status == (
        "no suitable node: requested 1, available 1, suitable 0; small@host: cpus 2 < 64"
    )
    assert Job.objects.get(pk=gpu.pk).scheduling_status.endswith("small@host: no label gpu")
    assert Job.objects.get(pk=fits.pk).scheduling_status is None
    assert "small@host: cpus 2 < 64" in runs.job_log_text(job_uuid=big.uuid)
    # the note is written once, not on every sweep
    runs.sweep()
    assert runs.job_log_text(job_uuid=big.uuid).count("cpus 2 < 64") == 1
    # a node that fits clears it; claiming respects constraints
    small = Node.objects.get(hostname="small@host")
    claimed = runs.job_claim(worker="w", node_uuid=small.uuid)
    assert claimed is not None and claimed.uuid == fits.uuid
    assert claimed.worker_node_uuid == small.uuid
    assert runs.job_claim(worker="w", node_uuid=small.uuid) is None  # the rest cannot run here
    huge = node("huge@host", cores=128, labels=("gpu",))
    runs.sweep()
    assert Job.objects.get(pk=big.pk).scheduling_status is None
    assert runs.job_claim(worker="w", node_uuid=huge.uuid).uuid in (big.uuid, gpu.uuid)


def test_unclaimed_queued_jobs_get_their_hint_again() -> None:
    node("idle@host")
    old = make_job(created_at=timezone.now() - dt.timedelta(minutes=5))
    new = make_job()
    report = runs.sweep()
    assert report.resent == [old.uuid] and SENT == [old.uuid]
    assert new.uuid not in SENT


def test_no_live_node_no_hints_and_no_verdict() -> None:
    node("dead@host", age=600)
    make_job(
        created_at=timezone.now() - dt.timedelta(minutes=5),
        runtime_constraints={"min_cores_per_node": 64},
    )
    report = runs.sweep()
    assert report.resent == [] and report.unplaceable == []


def test_claim_order_is_priority_then_age() -> None:
    first = make_job(priority=1, created_at=timezone.now() - dt.timedelta(minutes=3))
    urgent = make_job(priority=5)
    second = make_job(priority=1, created_at=timezone.now() - dt.timedelta(minutes=1))
    order = [runs.job_claim(worker="w").uuid for _ in range(3)]
    assert order == [urgent.uuid, first.uuid, second.uuid]
    assert runs.job_claim(worker="w") is None


def test_every_start_is_a_new_node_and_silent_nodes_are_marked_down() -> None:
    old = node("w@host", age=120)
    new = node("w@host")
    assert old.uuid != new.uuid
    assert {n.uuid for n in live_nodes()} == {new.uuid}
    report = runs.sweep()
    assert report.down == [old.uuid]
    assert Node.objects.get(pk=old.pk).info["state"] == "down"
    assert Node.objects.get(pk=new.pk).info["state"] == "up"
    assert runs.sweep().down == []  # once
    runs.node_down(node_uuid=new.uuid)  # a worker that stops says so
    assert list(live_nodes()) == []


def test_stored_constraints_that_cannot_be_read_make_a_job_unplaceable() -> None:
    here = node("here@host")
    bad = make_job(runtime_constraints={"constraints": [{"key": "k", "operator": "~"}]})
    runs.sweep()
    bad.refresh_from_db()
    assert bad.scheduling_status.startswith("no suitable node: runtime_constraints.constraints")
    assert runs.job_claim(worker="w", node_uuid=here.uuid) is None


def test_a_claimed_job_loses_its_verdict_and_its_log_goes_on() -> None:
    small = node("small@host", cores=2)
    job = make_job(runtime_constraints={"vcpus": 4})
    runs.sweep()
    assert Job.objects.get(pk=job.pk).scheduling_status is not None
    assert runs.job_log_next_seq(job_uuid=job.uuid) == 1
    bigger = node("bigger@host", cores=8)
    assert runs.job_claim(worker="w", node_uuid=small.uuid) is None
    claimed = runs.job_claim(worker="w", node_uuid=bigger.uuid)
    assert claimed is not None and claimed.uuid == job.uuid
    assert claimed.scheduling_status is None


def test_a_hint_a_node_cannot_use_goes_to_the_least_busy_node_that_can() -> None:
    plain = node("plain@host")
    gpu_busy = node("gpu-busy@host", labels=("gpu",))
    gpu_idle = node("gpu-idle@host", labels=("gpu",))
    node("gpu-dead@host", labels=("gpu",), age=600)
    system = system_user()
    make_job(
        state="Running",
        running=True,
        is_locked_by_uuid=system.uuid,
        worker_node_uuid=gpu_busy.uuid,
        started_at=timezone.now(),
    )
    wants_gpu = make_job(runtime_constraints={"constraints": ["gpu"]})
    assert runs.hint_target(job_uuid=wants_gpu.uuid, node_uuid=plain.uuid) == (
        wants_gpu.uuid,
        "gpu-idle@host",
    )
    # a node that can run the job keeps the hint; so does one with no other node to ask
    assert runs.hint_target(job_uuid=wants_gpu.uuid, node_uuid=gpu_idle.uuid) is None
    # a hint for a job already taken passes on for the first job this node cannot run
    anything = make_job()
    assert runs.hint_target(job_uuid=anything.uuid, node_uuid=plain.uuid) == (
        wants_gpu.uuid,
        "gpu-idle@host",
    )
    Job.objects.filter(pk=wants_gpu.pk).update(state="Cancelled")
    assert runs.hint_target(job_uuid=wants_gpu.uuid, node_uuid=plain.uuid) is None
    nowhere = make_job(runtime_constraints={"constraints": ["fpga"]})
    assert runs.hint_target(job_uuid=nowhere.uuid, node_uuid=plain.uuid) is None
