"""The job state table (jobs/transitions.py) on the real database: every allowed edge with
its flags and timestamp, illegal edges refused loudly, lost races returning None; and the
operations built on it (claim, finish, cancel, lock) with the executions they end."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from typing import Any

import pytest
from django.db import connection

from jobs.exceptions import InvalidRequest, InvalidTransition
from jobs.models import Execution, Job, JobState
from jobs.services import runs
from jobs.services.executions import (
    execution_finish,
    execution_start,
    executions_end_running,
)
from jobs.services.jobs import job_cancel, job_lock
from jobs.services.objects import Actor
from jobs.services.tokens import system_user
from jobs.transitions import (
    ALLOWED_TRANSITIONS,
    STATE_EFFECTS,
    job_settle,
    job_transition,
)
from tests.rows import make_job

pytestmark = pytest.mark.django_db

STATES = [str(s) for s in JobState.values]
EDGES = sorted((frm, to) for frm, tos in ALLOWED_TRANSITIONS.items() for to in tos)
NOT_EDGES = sorted(
    (frm, to) for frm, to in itertools.product(STATES, STATES) if (frm, to) not in EDGES
)
LOG = "d41d8cd98f00b204e9800998ecf8427e+0"


def test_the_table_is_the_spec_s() -> None:
    assert set(EDGES) == {
        ("Queued", "Running"),
        ("Queued", "Complete"),
        ("Queued", "Failed"),
        ("Queued", "Cancelled"),
        ("Running", "Complete"),
        ("Running", "Failed"),
        ("Running", "Cancelled"),
    }
    assert set(STATE_EFFECTS) == set(STATES)
    # the model module still exports the one table
    from jobs.models import jobs as job_models

    assert job_models.ALLOWED_TRANSITIONS is ALLOWED_TRANSITIONS


@pytest.mark.parametrize(("frm", "to"), EDGES)
def test_every_edge_sets_the_state_flags_and_stamp(active: Any, frm: str, to: str) -> None:
    user = active[0]
    job = make_job(user, state=frm)
    moved = job_transition(job_uuid=job.uuid, frm=frm, to=to, by=user.uuid)
    assert moved is not None
    stored = Job.objects.get(pk=job.pk)
    running, success, stamp = STATE_EFFECTS[to]
    assert (stored.state, stored.running, stored.success) == (to, running, success)
    assert stamp is not None and getattr(stored, stamp) is not None
    assert stored.modified_by_user_uuid == user.uuid
    assert stored.modified_at > job.modified_at
    assert moved.state == to


def test_a_recorded_stamp_is_kept(active: Any) -> None:
    then = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    job = make_job(active[0], state="Running", started_at=then, finished_at=then)
    done = job_transition(job_uuid=job.uuid, frm="Running", to="Complete", by=None)
    assert done is not None and done.finished_at == then
    assert done.modified_by_user_uuid == job.modified_by_user_uuid  # by=None leaves it


@pytest.mark.parametrize(("frm", "to"), NOT_EDGES)
def test_an_illegal_edge_is_loud_and_changes_nothing(active: Any, frm: str, to: str) -> None:
    job = make_job(active[0], state=frm)
    with pytest.raises(InvalidTransition) as raised:
        job_transition(job_uuid=job.uuid, frm=frm, to=to, by=active[0].uuid)
    assert raised.value.messages == [f"State invalid change from {frm} to {to}"]
    assert isinstance(raised.value, InvalidRequest)  # a 422 through the API
    assert Job.objects.get(pk=job.pk).state == frm


@pytest.mark.parametrize("returning", [True, False], ids=["update-returning", "update-then-read"])
def test_the_job_handed_back_is_the_row_as_stored(
    active: Any, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """In one statement (UPDATE ... RETURNING) where the database can, else the UPDATE and a
    read: either way every field of the answer is what the row now holds."""
    if returning and not connection.features.can_return_columns_from_insert:
        pytest.skip(f"{connection.vendor} here cannot return updated rows")
    job = make_job(active[0], state="Queued", parameters={"a": [1, {"b": None}]})
    if not returning:  # (after the INSERT, which asks the same of the database)
        monkeypatch.setattr(connection.features, "can_return_columns_from_insert", False)
    moved = job_transition(
        job_uuid=job.uuid,
        frm="Queued",
        to="Running",
        by=active[0].uuid,
        fields={"is_locked_by_uuid": active[0].uuid},
    )
    assert moved is not None
    stored = Job.objects.get(pk=job.pk)
    for field in Job._meta.concrete_fields:
        assert getattr(moved, field.attname) == getattr(stored, field.attname), field.name
    assert moved.script_parameters == {"a": [1, {"b": None}]}
    assert moved.state == "Running" and moved.started_at is not None
    # a row that does not meet the conditions: nothing changes, nothing comes back
    assert job_transition(job_uuid=job.uuid, frm="Queued", to="Running", by=None) is None
    settled = job_settle(job_uuid=job.uuid, by=None)
    assert settled is None  # Running is not a final state
    assert Job.objects.get(pk=job.pk).modified_at == stored.modified_at


def test_one_illegal_state_among_several_is_loud(active: Any) -> None:
    job = make_job(active[0], state="Queued")
    with pytest.raises(InvalidTransition, match="from Complete to Cancelled"):
        job_transition(job_uuid=job.uuid, frm={"Queued", "Complete"}, to="Cancelled", by=None)
    assert Job.objects.get(pk=job.pk).state == "Queued"


def test_a_lost_race_returns_none_and_changes_nothing(active: Any) -> None:
    job = make_job(active[0], state="Queued")
    system = system_user().uuid
    claim: dict[str, Any] = {
        "job_uuid": job.uuid,
        "frm": "Queued",
        "to": "Running",
        "by": system,
        "guard": {"is_locked_by_uuid__isnull": True},
        "fields": {"is_locked_by_uuid": system},
    }
    first = job_transition(**claim)
    assert first is not None and first.is_locked_by_uuid == system
    assert job_transition(**claim) is None  # the second claim of one job loses
    # a guard that fails loses too: a locked Queued job is not claimed
    locked = make_job(active[0], state="Queued", is_locked_by_uuid=active[0].uuid)
    assert job_transition(**(claim | {"job_uuid": locked.uuid})) is None
    assert Job.objects.get(pk=locked.pk).state == "Queued"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_one_job_have_one_winner(active: Any) -> None:
    """Workers in threads, each with its own connection, claim at once: one gets the job."""
    job = make_job(active[0], state="Queued")
    system_user()  # created before the threads race to create it
    rounds = 5
    for _ in range(rounds):
        Job.objects.filter(pk=job.pk).update(
            state="Queued", is_locked_by_uuid=None, running=False, started_at=None
        )
        start = threading.Barrier(4)
        won: list[Any] = []
        threads = [threading.Thread(target=_claim, args=(f"w{n}", start, won)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(won) == 4
        assert [j.uuid for j in won if j is not None] == [job.uuid]


def _claim(worker: str, start: threading.Barrier, won: list[Any]) -> None:
    try:
        start.wait()
        won.append(runs.job_claim(worker=worker))
    finally:
        connection.close()


# --- the operations on the table --------------------------------------------------------------


def test_claim_then_finish(active: Any) -> None:
    job = make_job(active[0], state="Queued")
    claimed = runs.job_claim(worker="w")
    assert claimed is not None and claimed.uuid == job.uuid
    assert (claimed.state, claimed.running, claimed.is_locked_by_uuid) == (
        "Running",
        True,
        system_user().uuid,
    )
    assert claimed.started_at is not None
    done = runs.job_finish(
        job_uuid=job.uuid, success=True, output=LOG, log_pdh=LOG, tasks_summary={"done": 1}
    )
    assert (done.state, done.success, done.running, done.output, done.log) == (
        "Complete",
        True,
        False,
        LOG,
        LOG,
    )
    assert done.finished_at is not None and done.tasks_summary == {"done": 1}


def test_a_failed_run_keeps_no_output(active: Any) -> None:
    job = make_job(active[0], state="Running", is_locked_by_uuid=system_user().uuid)
    done = runs.job_finish(job_uuid=job.uuid, success=False, output=LOG, log_pdh=None)
    assert (done.state, done.success, done.output, done.log) == ("Failed", False, None, None)


def test_cancel_raced_with_completion_stays_cancelled(active: Any) -> None:
    """Cancelled while its run was ending: the job stays Cancelled, gets finished_at and
    the partial log; its execution ended Cancelled and the runner's end changes nothing."""
    user = active[0]
    job = make_job(
        user,
        state="Running",
        started_at=dt.datetime.now(dt.UTC),
        is_locked_by_uuid=system_user().uuid,
    )
    execution = execution_start(job=job, node_uuid=None, hostname="w1", log_seq=0)
    cancelled = job_cancel(actor=Actor(user=user), job=job)
    assert (cancelled.state, cancelled.cancelled_by_user_uuid) == ("Cancelled", user.uuid)
    assert cancelled.cancelled_at is not None and cancelled.finished_at is None
    execution.refresh_from_db()
    assert execution.state == "Cancelled" and execution.finished_at is not None
    assert execution.reason == f"the job was cancelled by {user.uuid}"

    done = runs.job_finish(job_uuid=job.uuid, success=True, output=LOG, log_pdh=LOG)
    assert (done.state, done.success, done.running, done.output) == (
        "Cancelled",
        False,
        False,
        None,
    )
    assert done.finished_at is not None and done.log == LOG
    execution = execution_finish(execution=execution, state="Complete", exit_code=0)
    assert (execution.state, execution.exit_code) == ("Cancelled", None)


def test_settle_leaves_an_active_job_alone(active: Any) -> None:
    job = make_job(active[0], state="Running")
    assert job_settle(job_uuid=job.uuid, by=None, fields={"log": LOG}) is None
    assert Job.objects.get(pk=job.pk).log is None


def test_cancel_of_a_finished_job_is_the_transition_error(active: Any) -> None:
    user = active[0]
    done = make_job(user, state="Complete")
    with pytest.raises(InvalidTransition, match="State invalid change from Complete to Cancelled"):
        job_cancel(actor=Actor(user=user), job=done)
    cancelled = make_job(user, state="Cancelled")
    assert job_cancel(actor=Actor(user=user), job=cancelled).state == "Cancelled"


def test_lock_is_one_compare_and_set(active: Any) -> None:
    user = active[0]
    job = make_job(user, state="Queued")
    locked = job_lock(actor=Actor(user=user), job=job)
    assert (locked.state, locked.is_locked_by_uuid, locked.running) == ("Running", user.uuid, True)
    with pytest.raises(InvalidRequest, match="cannot be locked: it is Running and locked by"):
        job_lock(actor=Actor(user=user), job=job)


# --- executions ----------------------------------------------------------------------------


def test_executions_number_their_attempts_and_end_once(active: Any) -> None:
    job = make_job(active[0], state="Running")
    node = runs.node_register(
        hostname="w1@box", cpus=2, ram_bytes=1024**3, gpus=0, labels={}, slots=1
    )
    first = execution_start(job=job, node_uuid=node.uuid, hostname=None, log_seq=0)
    assert (first.attempt, first.replica, first.hostname, first.state) == (
        1,
        0,
        "w1@box",
        "Running",
    )
    assert first.uuid.split("-")[1] == Execution.infix() and first.exit_code is None
    first = execution_finish(
        execution=first, state="Failed", exit_code=111, reason="temporary failure"
    )
    assert (first.state, first.exit_code, first.reason) == ("Failed", 111, "temporary failure")
    assert first.finished_at is not None
    stored = Execution.objects.get(pk=first.pk)  # what was handed back is what the row holds
    assert [getattr(stored, f.attname) for f in Execution._meta.concrete_fields] == [
        getattr(first, f.attname) for f in Execution._meta.concrete_fields
    ]
    # ending it again changes nothing
    assert execution_finish(execution=first, state="Complete", exit_code=0).state == "Failed"
    second = execution_start(job=job, node_uuid=node.uuid, hostname=None, log_seq=4)
    other_replica = execution_start(job=job, node_uuid=None, hostname="h", log_seq=4, replica=1)
    assert (second.attempt, other_replica.attempt) == (2, 1)
    assert executions_end_running(job_uuid=job.uuid, state="Lost", reason="gone") == 2
    assert set(Execution.objects.filter(job_uuid=job.uuid).values_list("state", flat=True)) == {
        "Failed",
        "Lost",
    }
    with pytest.raises(ValueError):
        execution_finish(execution=second, state="Running", exit_code=None)


def test_a_cancel_through_put_ends_the_running_execution_too(active: Any) -> None:
    from jobs.services.jobs import SERVICE

    user = active[0]
    job = make_job(user, state="Running", is_locked_by_uuid=system_user().uuid)
    execution = execution_start(job=job, node_uuid=None, hostname="w1", log_seq=0)
    SERVICE.update(actor=Actor(user=user), obj=job, attrs={"state": "Cancelled"})
    execution.refresh_from_db()
    assert (execution.state, execution.reason) == (
        "Cancelled",
        f"the job was cancelled by {user.uuid}",
    )
