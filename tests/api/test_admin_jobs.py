"""The jobs admin without a browser: the queue page, list filters and search, the actions
(cancel, change priority, requeue), and the job page with its live log view."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from jobs.models import Execution, Job, JobReuse, Link
from jobs.services.executions import execution_start
from jobs.uuids import system_user_uuid
from tests.api.admin_helpers import (
    PASSWORD,
    hosted_foo,
    log_lines,
    make_node,
    with_password,
)
from tests.rows import make_collection, make_job

pytestmark = pytest.mark.django_db

QUEUE = "admin:jobs_job_queue"
CHANGELIST = "admin:jobs_job_changelist"


def notes(response: Any) -> list[tuple[str, str]]:
    """The messages a response leaves for the operator (shown on the next page after a
    redirect)."""
    if response.status_code == 302:
        response = response.client.get(response["Location"])
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def act(client: Any, action: str, jobs: list[Job], **extra: Any) -> Any:
    """Run a changelist action on `jobs` as the action bar does (without a browser)."""
    data = {"action": action, "index": "0", "_selected_action": [str(j.pk) for j in jobs]}
    return client.post(reverse(CHANGELIST), data | extra)


# --- the queue page -----------------------------------------------------------------------


def test_queue_is_in_the_dispatchers_order_with_positions(staff: Any, active: Any) -> None:
    user = active[0]
    low = make_job(user, priority=0, age=dt.timedelta(hours=3))
    high_new = make_job(user, priority=5, age=dt.timedelta(minutes=2))
    high_old = make_job(user, priority=5, age=dt.timedelta(minutes=30))
    stuck = make_job(
        user,
        priority=1,
        runtime_constraints={"min_ram_mb_per_node": 999999},
        scheduling_status="no registered node can run this job: it needs min_ram_mb_per_node",
    )
    make_job(user, state="Complete")
    node = make_node("worker-1", concurrency=2)
    make_node("worker-2")
    make_node("gone", alive=False)
    running = make_job(
        user, state="Running", started_at=dt.datetime.now(dt.UTC), worker_node_uuid=node.uuid
    )

    response = staff.get(reverse(QUEUE))
    assert response.status_code == 200
    rows = response.context["queued_rows"]
    assert [(r.position, r.job.uuid) for r in rows] == [
        (1, high_old.uuid),
        (2, high_new.uuid),
        (3, stuck.uuid),
        (4, low.uuid),
    ]
    assert [r.placeable for r in rows] == [True, True, False, True]
    assert rows[2].placement.startswith("no registered node can run this job")
    assert rows[0].placement == "waiting for a worker"
    assert rows[3].waiting.startswith("3h")
    assert rows[0].owner == "active"
    assert [r.job.uuid for r in response.context["running_rows"]] == [running.uuid]
    assert response.context["running_rows"][0].node.hostname == "worker-1"
    summary = {
        k: response.context[k]
        for k in ("queue_size", "running_count", "nodes_live", "nodes_busy", "nodes_idle")
    }
    assert summary == {
        "queue_size": 4,
        "running_count": 1,
        "nodes_live": 2,
        "nodes_busy": 1,
        "nodes_idle": 1,
    }
    assert (response.context["slots_used"], response.context["slots_total"]) == (1, 3)
    page = response.content.decode()
    assert "no registered node can run this job" in page and "worker-1" in page


def test_queue_without_live_workers_says_so(staff: Any, active: Any) -> None:
    make_job(active[0])
    response = staff.get(reverse(QUEUE))
    assert response.context["queued_rows"][0].placement == (
        "waiting for a worker (no worker is alive)"
    )
    assert "No job is running." in response.content.decode()


def test_queue_is_linked_from_the_index_and_the_job_list(staff: Any) -> None:
    queue = reverse(QUEUE)
    assert f'href="{queue}"' in staff.get(reverse("admin:index")).content.decode()
    assert f'href="{queue}"' in staff.get(reverse(CHANGELIST)).content.decode()


def test_queue_row_buttons_cancel_and_set_priority(staff: Any, active: Any) -> None:
    job = make_job(active[0], priority=1)
    other = make_job(active[0], priority=1)
    response = staff.post(reverse(QUEUE), {"uuid": job.uuid, "op": "priority", "priority": "9"})
    assert response.status_code == 302 and response["Location"] == reverse(QUEUE)
    job.refresh_from_db()
    assert job.priority == 9 and job.modified_by_user_uuid == staff.user.uuid
    assert notes(response) == [("success", f"Priority 9 for {job.uuid}.")]

    response = staff.post(reverse(QUEUE), {"uuid": job.uuid, "op": "priority", "priority": "x"})
    assert response.status_code == 302
    assert notes(response) == [("error", f"Priority of {job.uuid}: Enter a whole number.")]
    job.refresh_from_db()
    assert job.priority == 9

    response = staff.post(reverse(QUEUE), {"uuid": other.uuid, "op": "cancel"})
    other.refresh_from_db()
    assert other.state == "Cancelled" and other.cancelled_by_user_uuid == staff.user.uuid
    assert notes(response) == [("success", f"Cancelled {other.uuid}.")]

    response = staff.post(reverse(QUEUE), {"uuid": "zzzzz-8i9sb-000000000000000", "op": "cancel"})
    assert response.status_code == 302
    assert notes(response) == [("error", "No job 'zzzzz-8i9sb-000000000000000'.")]


# --- who may use it -------------------------------------------------------------------------


def test_non_staff_users_are_refused(client: Any, active: Any) -> None:
    user = with_password(active[0])
    job = make_job(user)
    assert client.login(username=user.username, password=PASSWORD)
    login = reverse("admin:login")
    for response in (
        client.get(reverse(QUEUE)),
        client.post(reverse(QUEUE), {"uuid": job.uuid, "op": "cancel"}),
        act(client, "cancel_jobs", [job]),
        client.get(reverse("admin:jobs_job_log", args=[job.pk])),
        client.get(reverse("admin:jobs_job_change", args=[job.pk])),
    ):
        assert response.status_code == 302 and response["Location"].startswith(login)
    job.refresh_from_db()
    assert job.state == "Queued"


def test_anonymous_visitors_are_sent_to_the_login_page(client: Any) -> None:
    response = client.get(reverse(QUEUE))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


# --- filters and search ---------------------------------------------------------------------


def changelist_uuids(client: Any, query: dict[str, str]) -> set[str]:
    response = client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    return {job.uuid for job in response.context["cl"].result_list}


def test_filters_and_search(staff: Any, active: Any, spectator: Any) -> None:
    alice, bob = active[0], spectator[0]
    a = make_job(alice, repository="active/foo", script="hash", script_version="1" * 40)
    b = make_job(
        alice,
        state="Failed",
        repository="active/bar",
        script="align",
        script_version="2" * 40,
        supplied_script_version="v1.2",
    )
    c = make_job(bob, state="Complete", repository="active/foo", script="align")
    JobReuse.objects.create(
        job_uuid=c.uuid, reused_by_user_uuid=alice.uuid, created_at=dt.datetime.now(dt.UTC)
    )
    assert changelist_uuids(staff, {"state__exact": "Failed"}) == {b.uuid}
    assert changelist_uuids(staff, {"repository__exact": "active/foo"}) == {a.uuid, c.uuid}
    assert changelist_uuids(staff, {"script__exact": "align"}) == {b.uuid, c.uuid}
    assert changelist_uuids(staff, {"owner": bob.uuid}) == {c.uuid}
    assert changelist_uuids(staff, {"reused": "yes"}) == {c.uuid}
    assert changelist_uuids(staff, {"reused": "no"}) == {a.uuid, b.uuid}
    assert changelist_uuids(staff, {"q": a.uuid}) == {a.uuid}
    assert changelist_uuids(staff, {"q": "align"}) == {b.uuid, c.uuid}
    assert changelist_uuids(staff, {"q": "2222222222"}) == {b.uuid}  # part of a commit
    assert changelist_uuids(staff, {"q": "v1.2"}) == {b.uuid}  # the version asked for
    owners = dict(staff.get(reverse(CHANGELIST)).context["cl"].filter_specs[3].lookup_choices)
    assert owners == {alice.uuid: "active", bob.uuid: "spectator"}


# --- actions --------------------------------------------------------------------------------


def test_cancel_action(staff: Any, active: Any) -> None:
    queued = make_job(active[0], age=dt.timedelta(minutes=10))
    running = make_job(
        active[0],
        state="Running",
        age=dt.timedelta(minutes=20),
        started_at=dt.datetime.now(dt.UTC),
    )
    done = make_job(active[0], state="Complete")
    response = act(staff, "cancel_jobs", [queued, running, done])
    assert response.status_code == 302
    assert notes(response) == [
        ("error", f"Could not cancel {done.uuid}: State invalid change from Complete to Cancelled"),
        (
            "success",
            f"Cancelled {running.uuid}, {queued.uuid}.",  # the queue's order: oldest first
        ),
    ]
    for job, state in ((queued, "Cancelled"), (running, "Cancelled"), (done, "Complete")):
        job.refresh_from_db()
        assert job.state == state
    queued.refresh_from_db()
    assert queued.cancelled_by_user_uuid == staff.user.uuid and queued.cancelled_at is not None


def test_change_priority_asks_then_applies(staff: Any, active: Any) -> None:
    jobs = [make_job(active[0], priority=3), make_job(active[0], priority=3)]
    page = act(staff, "change_priority", jobs)
    assert page.status_code == 200
    assert page.context["form"].initial == {"priority": 3}
    assert "New priority" in page.content.decode()

    confirm = {
        "action": "change_priority",
        "_selected_action": [str(j.pk) for j in jobs],
        "select_across": "0",
        "apply": "Change priority",
    }
    for bad, message in (
        ("high", "Enter a whole number."),
        (str(2**40), "Ensure this value is less than or equal to 2147483647."),
        ("", "This field is required."),
    ):
        response = staff.post(reverse(CHANGELIST), confirm | {"priority": bad})
        assert response.status_code == 200
        assert message in response.content.decode()
        assert notes(response) == [("error", "Please correct the priority below.")]
    assert {j.priority for j in Job.objects.filter(pk__in=[j.pk for j in jobs])} == {3}

    response = staff.post(reverse(CHANGELIST), confirm | {"priority": "-7"})
    assert response.status_code == 302
    for job in jobs:
        job.refresh_from_db()
        assert job.priority == -7 and job.modified_by_user_uuid == staff.user.uuid


DISPATCHED: list[str] = []


def record_dispatch(job_uuid: str) -> None:
    """A dispatcher (CRUNCH_DISPATCHER) that only notes which jobs it was told about."""
    DISPATCHED.append(job_uuid)


def test_requeue_makes_a_new_job_with_the_same_inputs(
    staff: Any,
    api: Any,
    active: Any,
    admin: Any,
    tmp_path: Any,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    user, token = active
    foo = hosted_foo(api, token, tmp_path)
    body = {
        "repository": "active/foo",
        "script": "hash",
        "script_version": "master",
        "script_parameters": {"input": "x", "n": 3},
        "runtime_constraints": {"min_ram_mb_per_node": 100},
        "nondeterministic": True,
        "priority": 4,
    }
    original = api.ok("POST", "jobs", body={"job": body}, token=token)
    api.ok("PUT", f"jobs/{original['uuid']}", body={"job": {"state": "Failed"}}, token=admin[1])
    failed = Job.objects.get(uuid=original["uuid"])
    complete = make_job(user, state="Complete")

    settings.CRUNCH_DISPATCHER = f"{__name__}.{record_dispatch.__name__}"
    DISPATCHED.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = act(staff, "requeue_jobs", [failed, complete])
    assert response.status_code == 302
    new = Job.objects.exclude(pk__in=[failed.pk, complete.pk]).get()
    assert new.state == "Queued" and new.uuid != failed.uuid
    assert (new.owner_uuid, new.modified_by_user_uuid) == (user.uuid, staff.user.uuid)
    assert new.script_version == failed.script_version == foo.c3
    assert new.supplied_script_version == "master"
    assert new.script_parameters == {"input": "x", "n": 3}
    assert new.runtime_constraints == {"min_ram_mb_per_node": 100}
    assert (new.nondeterministic, new.priority) == (True, 4)
    assert new.description.startswith(f"Requeue of {failed.uuid} (Failed) by admin.")
    assert DISPATCHED == [new.uuid]  # its dispatch hint, sent once the row committed
    assert sorted(notes(response)) == sorted(
        [
            (
                "error",
                f"{complete.uuid} is Complete: only failed or cancelled jobs are requeued.",
            ),
            (
                "success",
                f'Requeued {failed.uuid} as <a href="'
                f'{reverse("admin:jobs_job_change", args=[new.pk])}">{new.uuid}</a>.',
            ),
        ]
    )


def test_requeue_of_an_unresolvable_commit_is_an_error_message(staff: Any, active: Any) -> None:
    failed = make_job(active[0], state="Failed", repository="active/missing")
    response = act(staff, "requeue_jobs", [failed])
    assert response.status_code == 302
    [(level, text)] = notes(response)
    assert level == "error" and text.startswith(f"Could not requeue {failed.uuid}: ")
    assert Job.objects.count() == 1


# --- the job page ---------------------------------------------------------------------------


def test_job_page_shows_inputs_timings_log_and_reuse(staff: Any, active: Any) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    node = make_node("worker-7")
    job = make_job(
        active[0],
        state="Running",
        age=dt.timedelta(minutes=7),
        started_at=started,
        worker_node_uuid=node.uuid,
        parameters={"reference": "hg19", "threads": 8},
        created_at=started - dt.timedelta(minutes=2),
        docker_image_locator="d41d8cd98f00b204e9800998ecf8427e+0",
    )
    log_lines(job, [f"line {n}" for n in range(60)])
    JobReuse.objects.create(
        job_uuid=job.uuid,
        reused_by_user_uuid=active[0].uuid,
        created_at=dt.datetime.now(dt.UTC),
        supplied_script_version="main",
        filters=[["script", "=", "hash"]],
    )
    response = staff.get(reverse("admin:jobs_job_change", args=[job.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "&quot;reference&quot;: &quot;hg19&quot;" in page  # pretty JSON, escaped
    assert "line 59" in page and "line 10\n" in page and "line 9\n" not in page
    assert 'data-live="1"' in page
    assert "worker-7" in page and "d41d8cd98f00b204e9800998ecf8427e+0" in page
    assert "[[&quot;script&quot;, &quot;=&quot;, &quot;hash&quot;]]" in page
    assert response.context["adminform"].form.instance.uuid == job.uuid
    assert '<td class="waited">2m 00s</td>' in page and '<td class="ran">5m' in page
    form = response.context["adminform"].form
    assert set(form.fields) == {"priority", "description"}


def test_deleting_a_job_goes_through_the_service_and_takes_its_links(
    staff: Any, api: Any, admin: Any, active: Any
) -> None:
    job = make_job(active[0], state="Complete")
    api.ok(
        "POST",
        "links",
        body={"link": {"link_class": "tag", "name": "keep", "head_uuid": job.uuid}},
        token=admin[1],
    )
    response = staff.post(reverse("admin:jobs_job_delete", args=[job.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not Link.objects.filter(head_uuid=job.uuid).exists()


def test_job_page_links_output_and_log_collections(staff: Any, active: Any) -> None:
    output = make_collection(active[0], {"sorted.bam": b"BAM" * 10, "stats.txt": b"ok"})
    log = make_collection(active[0], {"job.log": b"done\n"})
    job = make_job(
        active[0], state="Complete", output=output.portable_data_hash, log=log.portable_data_hash
    )
    page = staff.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    for collection in (output, log):
        assert reverse("admin:jobs_collection_change", args=[collection.pk]) in page
        assert f"/arvados/v1/collections/{collection.portable_data_hash}/files/" in page
    assert "<code>sorted.bam</code> <span class='quiet'>30 bytes</span>" in page
    assert "<code>job.log</code>" in page
    assert 'data-live="1"' not in page and "its log is complete" in page


def test_job_page_saves_priority_and_description_through_the_service(
    staff: Any, active: Any
) -> None:
    job = make_job(active[0], priority=1)
    response = staff.post(
        reverse("admin:jobs_job_change", args=[job.pk]),
        {"priority": "12", "description": "urgent", "script": "evil", "_save": "Save"},
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.priority, job.description, job.script) == (12, "urgent", "hash")
    assert job.modified_by_user_uuid == staff.user.uuid

    response = staff.post(
        reverse("admin:jobs_job_change", args=[job.pk]),
        {"priority": "99999999999", "description": "", "_save": "Save"},
    )
    assert response.status_code == 200
    assert "Ensure this value is less than or equal to 2147483647." in response.content.decode()


def test_log_view_returns_the_tail_and_says_when_the_log_is_complete(
    staff: Any, active: Any
) -> None:
    # Claimed by one of our workers (locked by the system user), as job_claim does.
    job = make_job(
        active[0],
        state="Running",
        started_at=dt.datetime.now(dt.UTC),
        is_locked_by_uuid=system_user_uuid(),
    )
    url = reverse("admin:jobs_job_log", args=[job.pk])
    assert staff.get(url).json() == {
        "uuid": job.uuid,
        "state": "Running",
        "ended": False,
        "seq": None,
        "lines": [],
    }
    log_lines(job, [f"step {n}" for n in range(80)])
    tail = staff.get(url).json()
    assert tail["lines"] == [f"step {n}" for n in range(30, 80)] and tail["seq"] == 79
    # Cancelled while running: the worker may still write until it records the end.
    cancelled_at = dt.datetime.now(dt.UTC)
    Job.objects.filter(pk=job.pk).update(state="Cancelled", cancelled_at=cancelled_at)
    assert staff.get(url).json()["ended"] is False
    Job.objects.filter(pk=job.pk).update(finished_at=cancelled_at)
    assert staff.get(url).json()["ended"] is True
    Job.objects.filter(pk=job.pk).update(state="Complete")
    assert staff.get(url).json()["ended"] is True
    text = staff.get(reverse("admin:jobs_job_log_text", args=[job.pk]))
    assert text["Content-Type"].startswith("text/plain")
    assert text.content.decode() == "".join(f"step {n}\n" for n in range(80))
    assert staff.get(reverse("admin:jobs_job_log", args=[987654])).status_code == 404


def test_reuse_events_are_listed_read_only(staff: Any, active: Any) -> None:
    job = make_job(active[0], state="Complete")
    reuse = JobReuse.objects.create(
        job_uuid=job.uuid, reused_by_user_uuid=active[0].uuid, created_at=dt.datetime.now(dt.UTC)
    )
    listing = staff.get(reverse("admin:jobs_jobreuse_changelist"), {"job_uuid": job.uuid})
    assert listing.status_code == 200 and job.uuid in listing.content.decode()
    assert staff.get(reverse("admin:jobs_jobreuse_change", args=[reuse.pk])).status_code == 200
    assert staff.get(reverse("admin:jobs_jobreuse_add")).status_code == 403


def test_job_page_lists_its_executions(staff: Any, active: Any) -> None:
    node = make_node("worker-9")
    job = make_job(active[0], state="Running", started_at=dt.datetime.now(dt.UTC))
    page = staff.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    assert "none yet: no worker has started the job" in page
    first = execution_start(job=job, node_uuid=node.uuid, hostname=None, log_seq=0)
    Execution.objects.filter(pk=first.pk).update(
        started_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    )
    first.refresh_from_db()
    Execution.objects.filter(pk=first.pk).update(
        state="Failed",
        exit_code=111,
        finished_at=first.started_at + dt.timedelta(seconds=75),
        reason="temporary failure (exit 111): tried again",
    )
    execution_start(job=job, node_uuid=node.uuid, hostname=None, log_seq=4)
    page = staff.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    table = page[page.index('<table class="crunch-executions">') :]
    table = table[: table.index("</table>")]
    rows = [r for r in table.split("<tr")[2:]]
    assert len(rows) == 2
    assert 'class="execution-failed"><td>1</td><td>worker-9</td>' in rows[0]
    assert f"<td>{node.uuid}</td><td>Failed</td><td>111</td>" in rows[0]
    assert "<td>1m 15s</td><td>chunk 0</td>" in rows[0]
    assert "temporary failure (exit 111): tried again" in rows[0]
    assert 'class="execution-running"><td>2</td>' in rows[1]
    assert "<td>Running</td><td>-</td>" in rows[1] and "<td>chunk 4</td>" in rows[1]
