"""Written-out row reads and inserts (`jobs.rowsql`) give what the ORM gives: every field's
value as a queryset would read it (JSON decoded, datetimes and booleans as on each database),
and an insert the ORM reads back unchanged."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from jobs import rowsql
from jobs.models import ApiClientAuthorization, Job, JobReuse, User
from jobs.services.tokens import token_authenticate, token_create
from tests.rows import make_job

pytestmark = pytest.mark.django_db


def values(obj: Any) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_a_job_reads_as_the_orm_reads_it(active: Any) -> None:
    job = make_job(
        active[0],
        state="Complete",
        parameters={"input": "x", "n": [1, 2.5, None], "nested": {"ok": True}},
        runtime_constraints={"min_nodes": 2, "docker_image": "python:3.11"},
        nondeterministic=True,
        finished_at=timezone.now(),
    )
    jobs = rowsql.reader(Job)
    row = rowsql.fetch_one(f"SELECT {jobs.columns('j')} FROM jobs j WHERE j.id = %s", [job.pk])
    assert row is not None
    read = jobs.build(row)
    expected = Job.objects.get(pk=job.pk)
    assert values(read) == values(expected)
    assert read.script_parameters == {"input": "x", "n": [1, 2.5, None], "nested": {"ok": True}}
    assert read.nondeterministic is True
    assert isinstance(read.created_at, dt.datetime) and read.created_at.tzinfo is not None
    assert not read._state.adding and read._state.db == connection.alias
    assert rowsql.fetch_one("SELECT id FROM jobs WHERE id = %s", [job.pk + 10_000]) is None


def test_a_token_reads_with_its_user(active: Any) -> None:
    user = User.objects.get(uuid=active[0].uuid)
    auth = token_create(user=user, scopes=["GET /arvados/v1/jobs/"])
    found = token_authenticate(presented=auth.api_token, ip_address="10.0.0.1")
    assert found is not None
    assert values(found) == values(ApiClientAuthorization.objects.get(pk=auth.pk))
    assert values(found.user) == values(user)
    assert found.scopes == ["GET /arvados/v1/jobs/"]
    assert token_authenticate(presented=auth.api_token + "x", ip_address=None) is None


def test_an_insert_reads_back_unchanged(active: Any) -> None:
    record = JobReuse(
        job_uuid="zzzzz-8i9sb-000000000000001",
        reused_by_user_uuid=active[0].uuid,
        created_at=timezone.now(),
        filters=[["script_version", "in git", "v1.2"]],
        door="nomad",
        saved_core_seconds=12.5,
    )
    sql, params = rowsql.reader(JobReuse).insert(record)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    stored = JobReuse.objects.get(job_uuid=record.job_uuid)
    assert {k: v for k, v in values(stored).items() if k != "id"} == {
        k: v for k, v in values(record).items() if k != "id"
    }


def test_some_fields_read_as_only_reads_them(active: Any) -> None:
    job = make_job(active[0], runtime_constraints={"min_ram_mb_per_node": 512})
    fields = ("id", "uuid", "runtime_constraints")
    jobs = rowsql.reader(Job, fields)
    row = rowsql.fetch_one(f"SELECT {jobs.columns()} FROM jobs WHERE id = %s", [job.pk])
    assert row is not None
    read = jobs.build(row)
    assert (read.pk, read.uuid, read.runtime_constraints) == (
        job.pk,
        job.uuid,
        {"min_ram_mb_per_node": 512},
    )
    assert (
        read.get_deferred_fields() == Job.objects.only(*fields).get(pk=job.pk).get_deferred_fields()
    )
    assert read.script == job.script  # a deferred field is read when asked for, as with only()
    with pytest.raises(ValueError):
        jobs.insert(job)


def test_order_sql_orders_as_order_by(active: Any) -> None:
    now = timezone.now()
    for priority, age in ((1, 3), (5, 1), (5, 2), (1, 1), (5, 2)):
        make_job(active[0], priority=priority, created_at=now - dt.timedelta(minutes=age))
    order = ("-priority", "created_at", "id")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT uuid FROM jobs ORDER BY {rowsql.order_sql(Job, order)}")
        written = [uuid for (uuid,) in cursor.fetchall()]
    assert written == list(Job.objects.order_by(*order).values_list("uuid", flat=True))
    assert rowsql.column_sql(Job, ("pk", "uuid")) == (
        f"{connection.ops.quote_name('id')}, {connection.ops.quote_name('uuid')}"
    )
