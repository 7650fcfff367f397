"""Command jobs in the jobs admin: the list and the job page show what runs, and a failed
command job is requeued with the same inputs."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from jobs.models import Job
from tests.api.test_admin_jobs import act
from tests.rows import make_collection

pytestmark = pytest.mark.django_db


@pytest.fixture
def command_job(api: Any, active: Any, admin: Any) -> Job:
    user, token = active
    workdir = make_collection(user, {"train.py": b"print('hi')\n"})
    body = {
        "command": ["python3", "train.py", "--epochs", "3"],
        "working_dir": workdir.portable_data_hash,
        "environment": {"SEED": "7"},
        "labels": {"team": "vision"},
        "meta": {"ticket": "T-1"},
        "runtime_constraints": {"vcpus": 0.5},
    }
    made = api.ok("POST", "jobs", body={"job": body}, token=token)
    api.ok("PUT", f"jobs/{made['uuid']}", body={"job": {"state": "Failed"}}, token=admin[1])
    return Job.objects.get(uuid=made["uuid"])


def test_the_list_and_the_page_show_the_command(staff: Any, command_job: Job) -> None:
    listed = staff.get(reverse("admin:jobs_job_changelist"))
    assert listed.status_code == 200
    assert "python3 train.py --epochs 3" in listed.content.decode()
    page = staff.get(reverse("admin:jobs_job_change", args=[command_job.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    for shown in ("train.py", command_job.working_dir, "SEED", "vision", "T-1"):
        assert shown in text


def test_a_failed_command_job_is_requeued_with_the_same_inputs(
    staff: Any, command_job: Job
) -> None:
    response = act(staff, "requeue_jobs", [command_job])
    assert response.status_code == 302
    new = Job.objects.exclude(pk=command_job.pk).get()
    assert new.state == "Queued"
    assert new.command == command_job.command and new.working_dir == command_job.working_dir
    assert new.environment == {"SEED": "7"} and new.labels == {"team": "vision"}
    assert new.reuse_key == command_job.reuse_key  # the same identity
