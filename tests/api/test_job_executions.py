"""GET /arvados/v1/jobs/{uuid}/executions: each attempt to run a job, readable with the job
(404 in the Arvados envelope otherwise)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jobs.models import Link
from jobs.services.executions import execution_finish, execution_start
from tests.api.test_conventions import assert_error
from tests.rows import make_job

pytestmark = pytest.mark.django_db

FIELDS = {
    "uuid",
    "job_uuid",
    "attempt",
    "replica",
    "node_uuid",
    "hostname",
    "state",
    "exit_code",
    "started_at",
    "finished_at",
    "log_seq",
    "reason",
}


def test_a_jobs_executions_in_order(api: Any, active: Any) -> None:
    user, token = active
    job = make_job(user, state="Running", started_at=dt.datetime.now(dt.UTC))
    first = execution_start(job=job, node_uuid=None, hostname="w1", log_seq=0)
    execution_finish(execution=first, state="Failed", exit_code=111, reason="tried again")
    execution_start(job=job, node_uuid=None, hostname="w1", log_seq=3)
    execution_start(job=make_job(user), node_uuid=None, hostname="w2", log_seq=0)  # another job

    body = api.ok("GET", f"jobs/{job.uuid}/executions", token=token)
    assert body["kind"] == "arvados#executionList" and body["items_available"] == 2
    one, two = body["items"]
    assert set(one) == FIELDS | {"kind", "etag"} and one["kind"] == "arvados#execution"
    assert (one["attempt"], one["state"], one["exit_code"], one["log_seq"]) == (
        1,
        "Failed",
        111,
        0,
    )
    assert one["reason"] == "tried again" and one["finished_at"].endswith("Z")
    assert (two["attempt"], two["state"], two["exit_code"], two["log_seq"]) == (
        2,
        "Running",
        None,
        3,
    )
    assert two["finished_at"] is None and one["uuid"] != two["uuid"]
    assert {one["job_uuid"], two["job_uuid"]} == {job.uuid}
    # a job that never ran has none; the job's own shape is unchanged
    queued = make_job(user)
    assert api.ok("GET", f"jobs/{queued.uuid}/executions", token=token)["items"] == []
    assert "executions" not in api.ok("GET", f"jobs/{job.uuid}", token=token)


def test_readable_iff_the_job_is(api: Any, active: Any, spectator: Any) -> None:
    user, token = active
    reader, reader_token = spectator
    job = make_job(user, state="Running")
    execution_start(job=job, node_uuid=None, hostname="w1", log_seq=0)
    assert_error(*api.get(f"jobs/{job.uuid}/executions", token=reader_token), 404)
    assert_error(*api.get("jobs/zzzzz-8i9sb-000000000000000/executions", token=token), 404)
    assert api.get(f"jobs/{job.uuid}/executions")[0] == 401
    now = dt.datetime.now(dt.UTC)
    Link.objects.create(
        uuid=Link.new_uuid(),
        owner_uuid=user.uuid,
        created_at=now,
        modified_at=now,
        link_class="permission",
        name="can_read",
        tail_uuid=reader.uuid,
        head_uuid=job.uuid,
    )
    body = api.ok("GET", f"jobs/{job.uuid}/executions", token=reader_token)
    assert [e["hostname"] for e in body["items"]] == ["w1"]
