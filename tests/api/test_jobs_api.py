"""The jobs resource without reuse: spec §2 (fields, order of processing, resolution, state
machine, locking, other rules) and §5 (cancel, lock, queue, queue_size, delete)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from jobs import git
from jobs.models import Job, Link, Node, Repository
from jobs.services.jobs import parameters_digest
from tests.api.test_conventions import assert_error
from tests.git_helpers import Example, build_example, in_bare

pytestmark = pytest.mark.django_db

STATES = ["Queued", "Running", "Cancelled", "Failed", "Complete"]
ALLOWED = {
    ("Queued", "Running"),
    ("Queued", "Complete"),
    ("Queued", "Failed"),
    ("Queued", "Cancelled"),
    ("Running", "Complete"),
    ("Running", "Failed"),
    ("Running", "Cancelled"),
}


@pytest.fixture
def foo(api: Any, active: tuple[Any, str], tmp_path: Any) -> Example:
    """`active/foo` holding the spec's example history, HEAD at b1."""
    _, token = active
    repo = api.ok("POST", "repositories", body={"repository": {"name": "active/foo"}}, token=token)
    example = build_example(tmp_path / "example")
    bare = git.repository_path(repo["uuid"])
    example.git("push", "-q", str(bare), "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
    in_bare(example.env, bare, "symbolic-ref", "HEAD", "refs/heads/b1")
    return example


def job_attrs(**extra: Any) -> dict[str, Any]:
    return {
        "repository": "active/foo",
        "script": "hash",
        "script_version": "master",
        "script_parameters": {},
    } | extra


def create(api: Any, token: str, **extra: Any) -> dict[str, Any]:
    return api.ok("POST", "jobs", body={"job": job_attrs(**extra)}, token=token)


# --- creation, resolution, validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"), [("master", "c3"), ("tag1", "c2"), ("b1", "c4"), ("HEAD", "c4")]
)
def test_script_version_resolves_to_the_commit(api, active, foo, given, expected):
    _, token = active
    job = create(api, token, script_version=given)
    assert job["script_version"] == getattr(foo, expected)
    assert job["supplied_script_version"] == given
    assert job["state"] == "Queued" and job["running"] is False and job["success"] is None
    assert job["priority"] == 0 and job["queue_position"] == 0 and job["node_uuids"] == []
    assert "script_parameters_digest" not in job
    assert Job.objects.get(uuid=job["uuid"]).script_parameters_digest == (
        "99914b932bd37a50b983c5e7c90ae93b"
    )


def test_abbreviated_and_full_versions(api, active, foo):
    _, token = active
    assert create(api, token, script_version=foo.c2[:10])["script_version"] == foo.c2
    job = create(api, token, script_version=foo.c1)
    assert job["script_version"] == foo.c1 and job["supplied_script_version"] == foo.c1


def test_the_internal_repository_is_tagged_with_the_job_uuid(api, active, foo):
    _, token = active
    job = create(api, token)
    internal = git.internal_repository_path()
    assert in_bare(foo.env, internal, "rev-parse", f"refs/tags/{job['uuid']}").strip() == foo.c3


@pytest.mark.parametrize("missing", ["repository", "script", "script_version", "script_parameters"])
def test_required_attributes(api, active, foo, missing):
    _, token = active
    attrs = job_attrs()
    attrs[missing] = None
    assert_error(
        *api.post("jobs", body={"job": attrs}, token=token),
        422,
        f"{missing} attribute must be specified",
    )
    del attrs[missing]
    assert_error(
        *api.post("jobs", body={"job": attrs}, token=token),
        422,
        f"{missing} attribute must be specified",
    )


def test_only_the_first_missing_attribute_is_reported(api, active):
    _, token = active
    status, data = api.post("jobs", body={"job": {"script": "x"}}, token=token)
    assert_error(status, data, 422)
    assert data["errors"] == ["repository attribute must be specified"]


def test_unresolvable_version_and_repository(api, active, foo):
    _, token = active
    assert_error(
        *api.post("jobs", body={"job": job_attrs(script_version="nope")}, token=token),
        422,
        "Script version nope does not resolve to a commit",
    )
    assert_error(
        *api.post("jobs", body={"job": job_attrs(repository="active/bar")}, token=token),
        422,
        "Repository not found: 'active/bar'",
    )
    for injected in ("--upload-pack=touch x", "master^", "HEAD~1", "$(id)"):
        assert_error(
            *api.post("jobs", body={"job": job_attrs(script_version=injected)}, token=token),
            422,
            f"Script version {injected} does not resolve to a commit",
        )


def test_other_users_cannot_use_an_unreadable_repository(api, foo, make_user):
    _, token = make_user("outsider")
    assert_error(
        *api.post("jobs", body={"job": job_attrs()}, token=token),
        422,
        "Repository not found: 'active/foo'",
    )


def test_all_validation_messages_come_together(api, active, foo):
    _, token = active
    status, data = api.post(
        "jobs",
        body={
            "job": job_attrs(
                script_version="nope",
                state="Bogus",
                script_parameters={"x": "zzzzz-4zz18-012345678901234"},
            )
        },
        token=token,
    )
    assert_error(status, data, 422)
    assert set(data["errors"]) >= {
        "Script version nope does not resolve to a commit",
        'State Bogus must be one of: ["Queued", "Running", "Cancelled", "Failed", "Complete"]',
        "Script parameters must use portable_data_hash instead of collection uuid",
    }
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "params",
    [
        {"input": {"param1": "the collection uuid zzzzz-4zz18-012345678901234"}},
        {"list": ["ok", ["nested zzzzz-4zz18-012345678901234"]]},
    ],
)
def test_collection_uuids_in_parameters_are_rejected(api, active, foo, params):
    _, token = active
    assert_error(
        *api.post("jobs", body={"job": job_attrs(script_parameters=params)}, token=token),
        422,
        "Script parameters must use portable_data_hash instead of collection uuid",
    )


def test_collection_uuid_keys_and_plain_values_are_fine(api, active, foo):
    _, token = active
    params = {"arg1": "foo", "arg2": ["bar", "baz"], "arg3": {"a": 1, "b": [2, 3, 4]}}
    assert create(api, token, script_parameters=params)["script_parameters"] == params
    keyed = {"zzzzz-4zz18-012345678901234": "x"}
    assert create(api, token, script_parameters=keyed)["script_parameters"] == keyed


@pytest.mark.parametrize(
    ("params", "digest"),
    [
        ({}, "99914b932bd37a50b983c5e7c90ae93b"),
        (
            {"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": "1"},
            "a5f03bbfb8ba88a2efe4a7852671605b",
        ),
        (
            {"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": 1},
            "c3d19d3ec50ac0914baa56b149640f73",
        ),
    ],
)
def test_parameters_digest(params, digest):
    assert parameters_digest(params) == digest
    assert parameters_digest(dict(reversed(list(params.items())))) == digest


def test_digest_is_hidden_from_filters(api, active, foo):
    _, token = active
    create(api, token)
    assert_error(
        *api.get(
            "jobs",
            params={"filters": [["script_parameters_digest", "=", "x"]]},
            token=token,
        ),
        422,
        "Invalid attribute 'script_parameters_digest' in filter",
    )


@pytest.mark.parametrize("script", ["../evil", "a/b", "..", ".hidden", "", "a b"])
def test_script_names_stay_in_crunch_scripts(api, active, foo, script):
    _, token = active
    status, data = api.post("jobs", body={"job": job_attrs(script=script)}, token=token)
    assert_error(status, data, 422)
    assert "crunch_scripts" in data["errors"][0]


def test_a_script_that_is_not_in_the_commit_is_refused(api, active, foo):
    _, token = active
    status, data = api.post("jobs", body={"job": job_attrs(script="nope")}, token=token)
    assert_error(status, data, 422, f"crunch_scripts/nope is not in commit {foo.c3} of active/foo")
    assert not Job.objects.exists()
    # A script added later: refused at the commits before it, accepted from its commit on.
    foo.git("checkout", "-q", "b1")
    (foo.work / "crunch_scripts" / "late").write_text("#!/bin/sh\n")
    foo.git("add", "crunch_scripts/late")
    foo.git("commit", "-q", "-m", "late script")
    c5 = foo.git("rev-parse", "HEAD").stdout.strip()
    foo.git("push", "-q", str(bare_of(foo)), "b1")
    assert_error(
        *api.post("jobs", body={"job": job_attrs(script="late")}, token=token),
        422,
        f"crunch_scripts/late is not in commit {foo.c3} of active/foo",
    )
    job = create(api, token, script="late", script_version="b1")
    assert job["script_version"] == c5
    # Changing the script or the version of a queued job checks again.
    assert_error(
        *api.put(f"jobs/{job['uuid']}", body={"job": {"script_version": "master"}}, token=token),
        422,
        f"crunch_scripts/late is not in commit {foo.c3} of active/foo",
    )
    assert_error(
        *api.put(f"jobs/{job['uuid']}", body={"job": {"script": "gone"}}, token=token),
        422,
        f"crunch_scripts/gone is not in commit {c5} of active/foo",
    )
    assert Job.objects.get(uuid=job["uuid"]).script == "late"
    # Other changes do not look at the commit again.
    updated = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"priority": 3}}, token=token)
    assert updated["priority"] == 3


def bare_of(example: Example) -> Any:
    return git.repository_path(Repository.objects.get(name="active/foo").uuid)


def test_server_only_attributes_are_dropped(api, active, foo):
    _, token = active
    job = create(
        api,
        token,
        docker_image_locator="d41d8cd98f00b204e9800998ecf8427e+0",
        arvados_sdk_version="a" * 40,
        queue_position=7,
        node_uuids=["x"],
    )
    assert job["docker_image_locator"] is None and job["arvados_sdk_version"] is None


def test_output_and_log_locators_are_normalised(api, active, foo):
    _, token = active
    job = create(
        api,
        token,
        state="Complete",
        output="d41d8cd98f00b204e9800998ecf8427e+0+K@xyzzy",
        log="fa7aeb5140e2848d39b416daeef4ffc5+45+A" + "0" * 40 + "@5f5e1000",
    )
    assert job["output"] == "d41d8cd98f00b204e9800998ecf8427e+0"
    assert job["log"] == "fa7aeb5140e2848d39b416daeef4ffc5+45"


def test_submit_id_is_unique(api, active, foo):
    _, token = active
    create(api, token, submit_id="run-1")
    assert_error(
        *api.post("jobs", body={"job": job_attrs(submit_id="run-1")}, token=token),
        422,
        "submit_id run-1 already used",
    )


def test_priority_null_is_zero(api, active, foo):
    _, token = active
    job = create(api, token, priority=None)
    assert job["priority"] == 0
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"priority": 5}}, token=token)
    assert job["priority"] == 5
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"priority": None}}, token=token)
    assert job["priority"] == 0


def test_priority_outside_the_column_is_a_clear_422(api, active, foo):
    _, token = active
    job = create(api, token)
    for priority in (2**31, -(2**31) - 1, 2**40):
        status, answer = api.put(
            f"jobs/{job['uuid']}", body={"job": {"priority": priority}}, token=token
        )
        assert status == 422, answer
        assert answer["errors"] == ["priority is out of range (-2147483648 to 2147483647)"]
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"priority": 2**31 - 1}}, token=token)
    assert job["priority"] == 2**31 - 1


def test_runtime_constraints_without_image_get_no_docker_key(api, active, foo):
    _, token = active
    job = create(api, token, runtime_constraints={"min_nodes": 1})
    assert job["runtime_constraints"] == {"min_nodes": 1}  # Quirk 8: no "docker_image": false
    assert job["docker_image_locator"] is None


def test_unknown_image_is_a_validation_error(api, active, foo):
    _, token = active
    assert_error(
        *api.post(
            "jobs",
            body={"job": job_attrs(runtime_constraints={"docker_image": "no/such"})},
            token=token,
        ),
        422,
        "Docker image locator not found for no/such",
    )


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        (
            {"constraints": ["fast", {"key": "region", "operator": "~", "values": ["x"]}]},
            'runtime_constraints.constraints[1]: unknown operator "~" (one of =, !=, in, notin,'
            " exists, !exists, gt, lt)",
        ),
        (
            {"constraints": [{"key": "tier", "operator": "in", "values": []}]},
            "runtime_constraints.constraints[0]: in needs at least one value",
        ),
        (
            {"constraints": [{"key": "cpus", "operator": "gt", "values": ["lots"]}]},
            'runtime_constraints.constraints[0]: gt compares numbers, and "lots" is not one',
        ),
        ({"vcpus": 0}, "runtime_constraints.vcpus must be greater than 0, not 0"),
        ({"ram": "1G"}, 'runtime_constraints.ram must be a whole number, not "1G"'),
    ],
)
def test_bad_placement_constraints_are_a_422_naming_them(api, active, foo, constraints, message):
    _, token = active
    assert_error(
        *api.post("jobs", body={"job": job_attrs(runtime_constraints=constraints)}, token=token),
        422,
        message,
    )
    job = create(api, token)
    assert_error(
        *api.put(
            f"jobs/{job['uuid']}", body={"job": {"runtime_constraints": constraints}}, token=token
        ),
        422,
        message,
    )


def test_good_placement_constraints_are_stored_as_given(api, active, foo):
    _, token = active
    constraints = {
        "vcpus": 0.5,
        "ram": 2**30,
        "constraints": ["fast", "region=us-west-2", {"key": "spot", "operator": "!exists"}],
    }
    job = create(api, token, runtime_constraints=constraints)
    assert job["runtime_constraints"] == constraints


def test_only_other_attributes_changing_do_not_re_resolve(api, active, foo):
    _, token = active
    job = create(api, token)
    # the branch moves; a priority change must not re-resolve the version
    in_bare(foo.env, git.repository_path(_repo_uuid()), "update-ref", "refs/heads/master", foo.c1)
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"priority": 3}}, token=token)
    assert job["script_version"] == foo.c3
    # changing script_version re-resolves (and keeps supplied_script_version)
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"script_version": "b1"}}, token=token)
    assert job["script_version"] == foo.c4 and job["supplied_script_version"] == "master"


def _repo_uuid() -> str:
    from jobs.models import Repository

    return Repository.objects.get(name="active/foo").uuid


# --- the state machine ------------------------------------------------------------------------


def make_in_state(api: Any, token: str, state: str) -> dict[str, Any]:
    job = create(api, token)
    if state == "Queued":
        return job
    if state == "Running":
        return api.ok("POST", f"jobs/{job['uuid']}/lock", token=token)
    return api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"state": state}}, token=token)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(STATES, STATES)))
def test_state_transition_matrix(api, active, foo, old, new):
    _, token = active
    job = make_in_state(api, token, old)
    assert job["state"] == old
    status, data = api.put(f"jobs/{job['uuid']}", body={"job": {"state": new}}, token=token)
    if old == new or (old, new) in ALLOWED:
        assert status == 200, data
        assert data["state"] == new
    else:
        assert_error(status, data, 422, f"State invalid change from {old} to {new}")
        assert Job.objects.get(uuid=job["uuid"]).state == old


@pytest.mark.parametrize(
    ("state", "running", "success", "stamp"),
    [
        ("Queued", False, None, None),
        ("Running", True, None, "started_at"),
        ("Complete", False, True, "finished_at"),
        ("Failed", False, False, "finished_at"),
        ("Cancelled", False, False, "cancelled_at"),
    ],
)
def test_flags_and_timestamps_follow_the_state(api, active, foo, state, running, success, stamp):
    _, token = active
    job = make_in_state(api, token, state)
    assert (job["running"], job["success"]) == (running, success)
    if stamp:
        assert job[stamp] is not None
    if state != "Cancelled":
        assert job["cancelled_at"] is None
    if state in ("Queued", "Running", "Cancelled"):
        assert job["finished_at"] is None  # not set on cancel


@pytest.mark.parametrize(
    ("flags", "state"),
    [
        ({"success": False}, "Failed"),
        ({"success": True}, "Complete"),
        ({"running": True}, "Running"),
        ({"cancelled_at": "2020-01-01T00:00:00Z"}, "Cancelled"),
        ({"state": "Complete", "success": False}, "Failed"),  # flags override a given state
    ],
)
def test_legacy_flags_derive_the_state(api, active, foo, flags, state):
    _, token = active
    job = create(api, token)
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": flags}, token=token)
    assert job["state"] == state


def test_a_job_may_be_created_complete(api, active, foo):
    _, token = active
    job = create(
        api,
        token,
        success=True,
        output="d41d8cd98f00b204e9800998ecf8427e+0",
        log="d41d8cd98f00b204e9800998ecf8427e+0",
    )
    assert job["state"] == "Complete" and job["finished_at"] and job["running"] is False


def test_cancellation_bookkeeping(api, active, foo):
    user, token = active
    job = create(api, token)
    job = api.ok(
        "PUT",
        f"jobs/{job['uuid']}",
        body={"job": {"cancelled_at": "2001-01-01T00:00:00Z"}},
        token=token,
    )
    assert job["state"] == "Cancelled" and not job["cancelled_at"].startswith("2001")
    assert job["cancelled_by_user_uuid"] == user.uuid
    first = job["cancelled_at"]
    # a different non-null value is silently undone
    job = api.ok(
        "PUT",
        f"jobs/{job['uuid']}",
        body={"job": {"cancelled_at": "2030-01-01T00:00:00Z", "description": "d"}},
        token=token,
    )
    assert job["cancelled_at"] == first and job["description"] == "d"
    # un-cancelling is a refused transition (the flags derive Failed: success is false)
    status, data = api.put(f"jobs/{job['uuid']}", body={"job": {"cancelled_at": None}}, token=token)
    assert_error(status, data, 422, "State invalid change from Cancelled to Failed")


def test_flags_stay_consistent_on_a_cancelled_job(api, active, foo):
    """Quirk 9 resolved: success:true on a Cancelled job does not leave success true."""
    _, token = active
    job = make_in_state(api, token, "Cancelled")
    job = api.ok("PUT", f"jobs/{job['uuid']}", body={"job": {"success": True}}, token=token)
    assert job["state"] == "Cancelled" and job["success"] is False


# --- lock and its protection ------------------------------------------------------------------


def test_lock(api, active, foo, spectator):
    user, token = active
    job = create(api, token)
    locked = api.ok("POST", f"jobs/{job['uuid']}/lock", token=token)
    assert locked["state"] == "Running" and locked["is_locked_by_uuid"] == user.uuid
    assert locked["started_at"] and locked["running"] is True
    status, data = api.post(f"jobs/{job['uuid']}/lock", token=token)
    assert_error(status, data, 422)


def test_lock_needs_write_permission(api, active, foo, spectator):
    owner, token = active
    reader, reader_token = spectator
    job = create(api, token)
    api.ok(
        "POST",
        "links",
        body={
            "link": {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": reader.uuid,
                "head_uuid": job["uuid"],
            }
        },
        token=token,
    )
    assert_error(*api.post(f"jobs/{job['uuid']}/lock", token=reader_token), 403)
    assert_error(*api.post(f"jobs/{job['uuid']}/cancel", token=reader_token), 403)
    assert api.get(f"jobs/{job['uuid']}", token=reader_token)[0] == 200


@pytest.fixture
def locked_job(api, active, foo, make_user):
    """A job locked by `locker`, who, like `writer`, has can_write on it; plus an admin."""
    owner, token = active
    job = create(api, token)
    users = {}
    for name in ("locker", "writer"):
        user, user_token = make_user(name)
        api.ok(
            "POST",
            "links",
            body={
                "link": {
                    "link_class": "permission",
                    "name": "can_write",
                    "tail_uuid": user.uuid,
                    "head_uuid": job["uuid"],
                }
            },
            token=token,
        )
        users[name] = (user, user_token)
    api.ok("POST", f"jobs/{job['uuid']}/lock", token=users["locker"][1])
    users["admin"] = make_user("boss", admin=True)
    return job["uuid"], users


@pytest.mark.parametrize(
    "attrs",
    [
        {"script": "other"},
        {"script_parameters": {"a": 1}},
        {"output": "d41d8cd98f00b204e9800998ecf8427e+0"},
        {"log": "d41d8cd98f00b204e9800998ecf8427e+0"},
        {"tasks_summary": {"done": 1}},
        {"success": True},
        {"state": "Complete"},
        {"started_at": "2020-01-01T00:00:00Z"},
        {"finished_at": "2020-01-01T00:00:00Z"},
        {"components": {"a": "b"}},
    ],
)
@pytest.mark.parametrize("who", ["writer", "admin"])
def test_lock_protects_attributes_from_others_even_admins(api, locked_job, attrs, who):
    uuid, users = locked_job
    status, data = api.put(f"jobs/{uuid}", body={"job": attrs}, token=users[who][1])
    assert_error(status, data, 403)
    # the holder may
    assert api.put(f"jobs/{uuid}", body={"job": attrs}, token=users["locker"][1])[0] in (200, 422)


@pytest.mark.parametrize("who", ["writer", "admin"])
def test_others_may_still_cancel_and_change_priority(api, locked_job, who):
    uuid, users = locked_job
    job = api.ok("PUT", f"jobs/{uuid}", body={"job": {"priority": 9}}, token=users[who][1])
    assert job["priority"] == 9
    job = api.ok("POST", f"jobs/{uuid}/cancel", token=users[who][1])
    assert job["state"] == "Cancelled"


def test_no_lock_stealing(api, locked_job):
    uuid, users = locked_job
    writer, writer_token = users["writer"]
    for who in ("writer", "admin"):
        user, user_token = users[who]
        assert_error(
            *api.put(
                f"jobs/{uuid}", body={"job": {"is_locked_by_uuid": user.uuid}}, token=user_token
            ),
            403,
        )
        assert_error(
            *api.put(f"jobs/{uuid}", body={"job": {"is_locked_by_uuid": None}}, token=user_token),
            403,
        )
    # the holder may unlock
    job = api.ok(
        "PUT", f"jobs/{uuid}", body={"job": {"is_locked_by_uuid": None}}, token=users["locker"][1]
    )
    assert job["is_locked_by_uuid"] is None


def test_lock_value_must_be_your_own_uuid(api, active, foo, spectator):
    user, token = active
    other, other_token = spectator
    job = create(api, token)
    # an unreadable user fails validation first (§2.13, before permissions)
    assert_error(
        *api.put(
            f"jobs/{job['uuid']}", body={"job": {"is_locked_by_uuid": other.uuid}}, token=token
        ),
        422,
        f"Is locked by uuid '{other.uuid}' not found",
    )
    api.ok(
        "POST",
        "links",
        token=other_token,
        body={
            "link": {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": user.uuid,
                "head_uuid": other.uuid,
            }
        },
    )
    assert_error(
        *api.put(
            f"jobs/{job['uuid']}", body={"job": {"is_locked_by_uuid": other.uuid}}, token=token
        ),
        403,
    )
    # your own uuid is fine while the job is unlocked
    job = api.ok(
        "PUT", f"jobs/{job['uuid']}", body={"job": {"is_locked_by_uuid": user.uuid}}, token=token
    )
    assert job["is_locked_by_uuid"] == user.uuid


# --- cancel -----------------------------------------------------------------------------------


def test_cancel(api, active, foo):
    user, token = active
    job = create(api, token)
    cancelled = api.ok("POST", f"jobs/{job['uuid']}/cancel", token=token)
    assert cancelled["state"] == "Cancelled" and cancelled["cancelled_by_user_uuid"] == user.uuid
    again = api.ok("POST", f"jobs/{job['uuid']}/cancel", token=token)
    assert again["cancelled_at"] == cancelled["cancelled_at"]
    done = make_in_state(api, token, "Complete")
    assert_error(
        *api.post(f"jobs/{done['uuid']}/cancel", token=token),
        422,
        "State invalid change from Complete to Cancelled",
    )
    assert api.post("jobs/zzzzz-8i9sb-000000000000000/cancel", token=token)[0] == 404


@pytest.mark.parametrize("cascade", [True, "true", 1])
def test_cancel_cascades_through_components_and_cycles(api, active, foo, cascade):
    _, token = active
    child = create(api, token, script_parameters={"n": 1})
    grandchild = create(api, token, script_parameters={"n": 2})
    finished = make_in_state(api, token, "Complete")
    parent = create(
        api,
        token,
        script_parameters={"n": 0},
        components={"a": child["uuid"], "b": finished["uuid"], "c": "not-a-uuid"},
    )
    # a cycle: the child names the parent back, and its own child
    api.ok(
        "PUT",
        f"jobs/{child['uuid']}",
        body={"job": {"components": {"up": parent["uuid"], "down": grandchild["uuid"]}}},
        token=token,
    )
    api.ok("POST", f"jobs/{parent['uuid']}/cancel", params={"cascade": cascade}, token=token)
    states = dict(Job.objects.values_list("uuid", "state"))
    assert states[parent["uuid"]] == "Cancelled"
    assert states[child["uuid"]] == "Cancelled"
    assert states[grandchild["uuid"]] == "Cancelled"
    assert states[finished["uuid"]] == "Complete"


def test_cancel_without_cascade_and_cascade_false(api, active, foo):
    _, token = active
    child = create(api, token, script_parameters={"n": 1})
    parent = create(api, token, script_parameters={"n": 0}, components={"a": child["uuid"]})
    api.ok("POST", f"jobs/{parent['uuid']}/cancel", params={"cascade": "false"}, token=token)
    assert Job.objects.get(uuid=child["uuid"]).state == "Queued"  # Quirk 1 resolved
    assert_error(
        *api.post(f"jobs/{child['uuid']}/cancel", params={"cascade": "maybe"}, token=token),
        422,
        "cascade parameter must be a boolean, true or false",
    )


def test_a_failing_cascade_rolls_back_everything(api, active, foo, make_user):
    owner, token = active
    other, other_token = make_user("other")
    # other's job is readable and listed as a child, but not writable by `owner`
    api.ok(
        "POST",
        "repositories",
        body={"repository": {"name": "other/foo"}},
        token=other_token,
    )
    bare = git.repository_path(
        __import__("jobs.models", fromlist=["Repository"])
        .Repository.objects.get(name="other/foo")
        .uuid
    )
    foo.git("push", "-q", str(bare), "refs/heads/*:refs/heads/*")
    theirs = api.ok(
        "POST",
        "jobs",
        body={"job": job_attrs(repository="other/foo")},
        token=other_token,
    )
    api.ok(
        "POST",
        "links",
        body={
            "link": {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": owner.uuid,
                "head_uuid": theirs["uuid"],
            }
        },
        token=other_token,
    )
    parent = create(api, token, components={"x": theirs["uuid"]})
    assert_error(
        *api.post(f"jobs/{parent['uuid']}/cancel", params={"cascade": True}, token=token), 403
    )
    assert Job.objects.get(uuid=parent["uuid"]).state == "Queued"


# --- queue, queue_size, list, delete ---------------------------------------------------------


def test_queue_order_and_size(api, active, foo, make_user):
    _, token = active
    low = create(api, token, script_parameters={"n": 1}, priority=1)
    high = create(api, token, script_parameters={"n": 2}, priority=5)
    low2 = create(api, token, script_parameters={"n": 3}, priority=1)
    make_in_state(api, token, "Complete")
    queue = api.ok("GET", "jobs/queue", token=token)
    assert queue["kind"] == "arvados#jobList"
    assert [j["uuid"] for j in queue["items"]] == [high["uuid"], low["uuid"], low2["uuid"]]
    assert all(j["queue_position"] == 0 for j in queue["items"])
    # a client order replaces the default
    reordered = api.ok("GET", "jobs/queue", params={"order": ["priority asc"]}, token=token)
    assert reordered["items"][-1]["uuid"] == high["uuid"]
    # queue_size counts every user's queued jobs; others see none in their queue
    _, other_token = make_user("other")
    assert api.ok("GET", "jobs/queue", token=other_token)["items"] == []
    assert api.ok("GET", "jobs/queue_size", token=other_token) == {"queue_size": 3}
    assert_error(*api.get("jobs/queue_size"), 401)


def test_node_uuids(api, active, foo, admin):
    _, token = active
    _, admin_token = admin
    job = create(api, token)
    node = api.ok("POST", "nodes", body={"node": {"hostname": "n1"}}, token=admin_token)
    Node.objects.filter(uuid=node["uuid"]).update(job_uuid=job["uuid"])
    assert api.ok("GET", f"jobs/{job['uuid']}", token=token)["node_uuids"] == [node["uuid"]]
    listed = api.ok("GET", "jobs", token=token)
    assert listed["items"][0]["node_uuids"] == [node["uuid"]]


def test_delete_removes_links(api, active, foo):
    user, token = active
    job = create(api, token)
    api.ok(
        "POST",
        "links",
        body={"link": {"link_class": "tag", "name": "t", "head_uuid": job["uuid"]}},
        token=token,
    )
    gone = api.ok("DELETE", f"jobs/{job['uuid']}", token=token)
    assert gone["uuid"] == job["uuid"]
    assert not Link.objects.filter(head_uuid=job["uuid"]).exists()
    assert api.get(f"jobs/{job['uuid']}", token=token)[0] == 404


def test_list_filters_by_git_range(api, active, foo):
    _, token = active
    at = {v: create(api, token, script_version=v)["uuid"] for v in ("tag1", "master", "b1")}
    at["c1"] = create(api, token, script_version=foo.c1)["uuid"]
    filters = [
        ["repository", "=", "active/foo"],
        ["script", "=", "hash"],
        ["script_version", "in git", "tag1"],
    ]
    listed = api.ok("GET", "jobs", params={"filters": filters}, token=token)
    assert {j["uuid"] for j in listed["items"]} == {at["tag1"], at["master"], at["b1"]}
    assert_error(
        *api.get("jobs", params={"filters": [["script_version", "in git", "tag1"]]}, token=token),
        422,
        "script_version filter needs repository filter",
    )
