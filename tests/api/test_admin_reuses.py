"""find_or_create leaves a record each time it hands back an existing job (JobReuse): the
operator's "reused" filter and a job's reuse events are built on it."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import JobReuse
from tests.api.admin_helpers import hosted_foo

pytestmark = pytest.mark.django_db


def test_find_or_create_records_a_hit_once_and_a_miss_never(
    api: Any, active: Any, tmp_path: Any
) -> None:
    user, token = active
    hosted_foo(api, token, tmp_path)
    job = {"repository": "active/foo", "script": "hash", "script_version": "master"}
    job["script_parameters"] = {"n": 1}

    created = api.ok(
        "POST", "jobs", params={"find_or_create": True}, body={"job": job}, token=token
    )
    assert JobReuse.objects.count() == 0  # a miss: a new job, nothing recorded

    hit = api.ok("POST", "jobs", params={"find_or_create": True}, body={"job": job}, token=token)
    assert hit["uuid"] == created["uuid"]
    [reuse] = JobReuse.objects.all()
    assert (reuse.job_uuid, reuse.reused_by_user_uuid) == (created["uuid"], user.uuid)
    assert (reuse.supplied_script_version, reuse.filters) == ("master", None)

    filters = [["repository", "=", "active/foo"], ["script", "=", "hash"]]
    explained = api.ok(
        "POST",
        "jobs",
        params={"find_or_create": True, "explain": True, "filters": filters},
        body={"job": job},
        token=token,
    )
    assert explained["uuid"] == created["uuid"]
    assert JobReuse.objects.count() == 2
    assert JobReuse.objects.latest("id").filters == filters

    api.ok("POST", "jobs", body={"job": job}, token=token)  # without find_or_create
    assert JobReuse.objects.count() == 2
