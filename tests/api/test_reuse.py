"""find_or_create (spec §3), through the API, against real git and the real database.

The world (tests/reuse_world.py): `active/foo` holds the spec's example history (C1 -> C2 ->
C3 -> C4, tag1 = C2, master = C3, b1 = C4, HEAD -> b1); `arvados` holds SDK versions S1 -> S2
-> S3 (sdk1 = S1, master = S3); a project readable by `active` and `spectator` holds the
shared images, outputs and logs. Every test says which job uuid comes back, or that a new job
was created.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from jobs.models import Job
from jobs.services.jobs import parameters_digest
from tests.reuse_world import Templates, World, build_templates

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return build_templates(tmp_path_factory.mktemp("reuse-templates"))


@pytest.fixture
def w(api: Any, templates: Templates, admin: Any, active: Any, spectator: Any) -> World:
    return World(api, templates, admin, active, spectator)


def is_new(body: dict[str, Any], *earlier: dict[str, Any]) -> bool:
    """`body` is a job created by this submission: Queued, and none of the earlier ones."""
    return body["state"] == "Queued" and body["uuid"] not in {e["uuid"] for e in earlier}


def fresh(w: World, **kw: Any) -> dict[str, Any]:
    """Submit with find_or_create and require a new job."""
    before = set(Job.objects.values_list("uuid", flat=True))
    body = w.reuse(**kw)
    assert body["uuid"] not in before, f"reused {body['uuid']} ({body['state']})"
    assert body["state"] == "Queued"
    return body


FOO = ["repository", "=", "active/foo"]
HASH = ["script", "=", "hash"]
IMAGE = {"docker_image": "arvados/jobs"}


# --- §2.7: the parameters digest ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "digest"),
    [
        ({}, "99914b932bd37a50b983c5e7c90ae93b"),
        (None, "99914b932bd37a50b983c5e7c90ae93b"),
        (
            {"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": "1"},
            "a5f03bbfb8ba88a2efe4a7852671605b",
        ),
        (
            {"an_integer": "1", "input": "fa7aeb5140e2848d39b416daeef4ffc5+45"},
            "a5f03bbfb8ba88a2efe4a7852671605b",
        ),
        (
            {"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": 1},
            "c3d19d3ec50ac0914baa56b149640f73",
        ),
    ],
)
def test_digest_fixtures(parameters: Any, digest: str) -> None:
    assert parameters_digest(parameters) == digest


def test_digest_sorts_keys_at_every_depth_and_keeps_array_order() -> None:
    given = {"b": [{"y": 1, "x": "/é"}, 2], "a": {"d": None, "c": True}}
    canonical = '{"a":{"c":true,"d":null},"b":[{"x":"/é","y":1},2]}'
    assert parameters_digest(given) == hashlib.md5(canonical.encode()).hexdigest()
    assert parameters_digest({"b": [2, {"x": "/é", "y": 1}], "a": {}}) != parameters_digest(given)


def test_stored_digest_is_the_submitted_parameters_digest(w: World) -> None:
    params = {"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": 1}
    job = w.job(script_parameters=params)
    assert "script_parameters_digest" not in job
    stored = Job.objects.get(uuid=job["uuid"]).script_parameters_digest
    assert stored == "c3d19d3ec50ac0914baa56b149640f73"


# --- §3.1: the entry point ---------------------------------------------------------------------


def test_without_find_or_create_a_new_job_is_created(w: World) -> None:
    done = w.done()
    plain = w.api.ok("POST", "jobs", body={"job": w.attrs()}, token=w.active)
    assert is_new(plain, done)
    status, body = w.submit(params={"find_or_create": "false"})
    assert status == 200 and is_new(body, done, plain)
    assert "reuse_explanation" not in body


def test_a_reused_job_is_the_same_body_as_get(w: World) -> None:
    done = w.done()
    got = w.reuse()
    assert got == w.api.ok("GET", f"jobs/{done['uuid']}", token=w.active)


@pytest.mark.parametrize("missing", ["repository", "script", "script_version", "script_parameters"])
def test_required_attributes_come_first(w: World, missing: str) -> None:
    """§3.1 step 1: before the filters are even parsed; only the first missing one."""
    job = w.attrs() | {missing: None}
    if missing == "script":
        del job["script_version"]  # two are missing: only the first is named
    status, body = w.api.post(
        "jobs",
        params={"find_or_create": True, "filters": "not json"},
        body={"job": job},
        token=w.active,
    )
    assert (status, body["errors"]) == (422, [f"{missing} attribute must be specified"])


@pytest.mark.parametrize("value", ["yes", 2, [], {}])
def test_find_or_create_must_be_a_boolean(w: World, value: Any) -> None:
    status, body = w.submit(params={"find_or_create": value})
    assert (status, body["errors"]) == (
        422,
        ["find_or_create parameter must be a boolean, true or false"],
    )


# --- §3.2: the legacy form ----------------------------------------------------------------------


def test_legacy_same_submission_reuses(w: World) -> None:
    done = w.done(script_parameters={"input": "fa7aeb5140e2848d39b416daeef4ffc5+45"})
    got = w.reuse(script_parameters={"input": "fa7aeb5140e2848d39b416daeef4ffc5+45"})
    assert got["uuid"] == done["uuid"] and got["created_at"] == done["created_at"]
    assert Job.objects.count() == 1


def test_legacy_different_parameters_make_a_new_job(w: World) -> None:
    done = w.done(script_parameters={"an_integer": "1"})
    created = fresh(w, script_parameters={"an_integer": "2"})
    assert created["script_parameters"] == {"an_integer": "2"}
    assert w.reuse(script_parameters={"an_integer": "1"})["uuid"] == done["uuid"]


def test_parameter_types_matter_key_order_does_not(w: World) -> None:
    text = w.done(
        script_parameters={"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": "1"}
    )
    number = fresh(
        w, script_parameters={"input": "fa7aeb5140e2848d39b416daeef4ffc5+45", "an_integer": 1}
    )
    again = w.reuse(
        script_parameters={"an_integer": "1", "input": "fa7aeb5140e2848d39b416daeef4ffc5+45"}
    )
    assert again["uuid"] == text["uuid"]
    # the integer submission created a queued job of its own, which it now gets back
    assert (
        w.reuse(
            script_parameters={"an_integer": 1, "input": "fa7aeb5140e2848d39b416daeef4ffc5+45"}
        )["uuid"]
        == number["uuid"]
    )


def test_symbolic_versions_match_their_commit(w: World) -> None:
    at_master = w.done(script_version="master")
    assert at_master["script_version"] == w.c3
    assert w.reuse(script_version=w.c3)["uuid"] == at_master["uuid"]
    assert w.reuse(script_version=w.c3[:12])["uuid"] == at_master["uuid"]
    at_c2 = w.done(script_version=w.c2)
    assert w.reuse(script_version="tag1")["uuid"] == at_c2["uuid"]
    at_b1 = fresh(w, script_version="b1")
    assert at_b1["script_version"] == w.c4 and at_b1["supplied_script_version"] == "b1"
    assert w.reuse(script_version="HEAD")["uuid"] == at_b1["uuid"]  # own queued, at C4


def test_legacy_unresolvable_version_fails_instead_of_matching_everything(w: World) -> None:
    """Quirk 7, recommendation: fail rather than drop the version filter."""
    w.done()
    assert w.error(script_version="nosuchbranch") == (
        "Script version nosuchbranch does not resolve to a commit"
    )
    assert Job.objects.count() == 1


def test_a_script_that_is_not_in_the_commit_is_reused_but_never_created(w: World) -> None:
    """A submission whose script is not in the commit: an earlier job that ran it (before
    the check, or through a repository that changed) is still handed back; a miss would
    create a job, and creating checks the script."""
    done = w.done()
    Job.objects.filter(uuid=done["uuid"]).update(script="gone")
    assert w.reuse(script="gone")["uuid"] == done["uuid"]
    assert w.error(script="gone", script_parameters={"a": 1}) == (
        f"crunch_scripts/gone is not in commit {w.c3} of active/foo"
    )
    assert Job.objects.count() == 1


def test_legacy_repository_must_be_readable(w: World, make_user: Any) -> None:
    w.done()
    _, token = make_user("stranger")
    assert w.error(token) == "Repository not found: 'active/foo'"


def test_minimum_script_version_ranges(w: World) -> None:
    old = w.done(script_version=w.c1)
    newer = w.done(script_version="b1")
    # master with minimum tag1: C3, C2; neither C1 nor C4 (past the submitted version) is in
    queued = fresh(w, minimum_script_version="tag1")
    assert queued["script_version"] == w.c3
    at_c2 = w.done(script_version="tag1")
    assert w.reuse(minimum_script_version="tag1")["uuid"] == at_c2["uuid"]
    # the minimum as a request parameter, and inside the job object (which wins)
    assert w.reuse(params={"minimum_script_version": "tag1"})["uuid"] == at_c2["uuid"]
    assert (
        w.reuse(params={"minimum_script_version": "tag1"}, minimum_script_version="master")["uuid"]
        == queued["uuid"]
    )
    # from C1: the oldest completed job in C1..C3 is the one at C1
    assert w.reuse(minimum_script_version=w.c1)["uuid"] == old["uuid"]
    assert w.reuse(script_version="b1", minimum_script_version="master")["uuid"] == newer["uuid"]
    # a blank minimum counts as none: the version must equal master's commit
    assert w.reuse(minimum_script_version="")["uuid"] == queued["uuid"]
    assert w.reuse(minimum_script_version="  ")["uuid"] == queued["uuid"]


def test_exclude_script_versions(w: World) -> None:
    at_c2 = w.done(script_version="tag1")
    at_c3 = w.done(script_version="master")
    assert w.reuse(minimum_script_version="tag1")["uuid"] == at_c2["uuid"]
    assert (
        w.reuse(minimum_script_version="tag1", exclude_script_versions=["tag1"])["uuid"]
        == at_c3["uuid"]
    )
    # as a request parameter (a JSON array), and a single string
    assert (
        w.reuse(params={"exclude_script_versions": ["tag1"]}, minimum_script_version="tag1")["uuid"]
        == at_c3["uuid"]
    )
    # without a minimum, only the submitted version itself, unless excluded
    assert w.reuse(exclude_script_versions=["tag1"])["uuid"] == at_c3["uuid"]
    assert w.error(minimum_script_version="tag1", exclude_script_versions=["tag1", "master"]) == (
        "error searching active/foo from 'tag1' to 'master', excluding [\"tag1\", \"master\"]"
    )
    assert w.error(exclude_script_versions=[w.c3]) == (
        f"error searching active/foo from '' to 'master', excluding [\"{w.c3}\"]"
    )


def test_unknown_minimum_is_an_error(w: World) -> None:
    w.done()
    assert w.error(minimum_script_version="__nosuchbranch__") == (
        "error searching active/foo from '__nosuchbranch__' to 'master', excluding []"
    )
    assert w.error(minimum_script_version="master^") == (
        "error searching active/foo from 'master^' to 'master', excluding []"
    )
    assert Job.objects.count() == 1


def test_unsatisfiable_minimum_matches_only_the_minimum(w: World) -> None:
    """Quirk 5: `in git C4` with max C2 is just [C4]: a job at the submitted C2 is not
    reused (a new one is created), a job at C4 is."""
    at_c2 = w.done(script_version="tag1")
    created = fresh(w, script_version="tag1", minimum_script_version="b1")
    assert created["script_version"] == w.c2 and is_new(created, at_c2)
    at_c4 = w.done(script_version="b1")
    assert w.reuse(script_version="tag1", minimum_script_version="b1")["uuid"] == at_c4["uuid"]


@pytest.mark.parametrize(
    ("flag", "params", "reused"),
    [
        (True, {"find_or_create": True}, False),
        ("true", {"find_or_create": True}, False),
        (1, {}, False),
        (False, {}, True),  # no_reuse wins over the find_or_create default
        ("false", {}, True),  # §1.7 recommendation: "false" is false
        ("0", {"find_or_create": False}, True),
        (None, {"find_or_create": False}, True),  # find_or_create = !null
    ],
)
def test_no_reuse(w: World, flag: Any, params: dict[str, Any], reused: bool) -> None:
    done = w.done()
    status, body = w.api.post(
        "jobs", params=params, body={"job": w.attrs(no_reuse=flag)}, token=w.active
    )
    assert status == 200, body
    assert (body["uuid"] == done["uuid"]) is reused
    assert "no_reuse" not in body


def test_no_reuse_must_be_a_boolean(w: World) -> None:
    assert w.error(no_reuse="maybe") == "no_reuse must be a boolean, true or false"


# --- §3.2: the filters form ---------------------------------------------------------------------


def test_filters_are_used_as_is_sdk_only_filters_reuse_across_versions(w: World) -> None:
    """Scenario A46: the filters only constrain the SDK version, so a submission at C2
    reuses a job at C1 (and its image is not compared either)."""
    w.image("jobs", repo_tag="arvados/jobs:latest")
    at_c1 = w.done(script_version=w.c1, runtime_constraints=IMAGE | {"arvados_sdk_version": "sdk1"})
    assert at_c1["arvados_sdk_version"] == w.s1
    filters = [FOO, HASH, ["arvados_sdk_version", "in git", "sdk1"]]
    got = w.reuse(
        params={"filters": filters},
        script_version="tag1",
        runtime_constraints=IMAGE | {"arvados_sdk_version": "master"},
    )
    assert got["uuid"] == at_c1["uuid"]
    assert w.reuse(params={"filters": filters}, script_version="b1")["uuid"] == at_c1["uuid"]
    # the same filters as a JSON string
    assert w.reuse(params={"filters": json.dumps(filters)})["uuid"] == at_c1["uuid"]


def test_in_git_ends_at_the_submitted_version(w: World) -> None:
    at_c4 = w.done(script_version="b1")
    at_c2 = w.done(script_version="tag1")
    filters = [FOO, HASH, ["script_version", "in git", "tag1"]]
    # submitted master: C3, C2 (C4 is older, but past master)
    assert w.reuse(params={"filters": filters}, script_version="master")["uuid"] == at_c2["uuid"]
    # submitted b1: C4, C3, C2, and the C4 job is the oldest
    assert w.reuse(params={"filters": filters}, script_version="b1")["uuid"] == at_c4["uuid"]
    # a list has no submitted version: its range ends at HEAD (b1)
    assert w.list(filters) == [at_c4["uuid"], at_c2["uuid"]]
    # the last `in git` wins
    last = [FOO, HASH, ["script_version", "in git", w.c1], ["script_version", "in git", "b1"]]
    assert w.list(last) == [at_c4["uuid"]]


def test_in_git_and_equality_filters_combine(w: World) -> None:
    at_c2 = w.done(script_version="tag1")
    at_c3 = w.done(script_version="master")
    both = [FOO, HASH, ["script_version", "in git", "tag1"], ["script_version", "=", w.c3]]
    assert w.reuse(params={"filters": both})["uuid"] == at_c3["uuid"]
    assert w.list(both) == [at_c3["uuid"]]
    assert w.list([FOO, HASH, ["script_version", "in git", "tag1"]]) == [
        at_c2["uuid"],
        at_c3["uuid"],
    ]


def test_not_in_git_without_in_git_pins_to_the_maximum(w: World) -> None:
    """Quirk 6: `not in git tag1` alone means "= the submitted version (or HEAD), and not
    tag1"."""
    at_c4 = w.done(script_version="b1")
    at_c2 = w.done(script_version="tag1")
    at_c3 = w.done(script_version="master")
    filters = [FOO, HASH, ["script_version", "not in git", "tag1"]]
    assert w.reuse(params={"filters": filters}, script_version="master")["uuid"] == at_c3["uuid"]
    assert w.list(filters) == [at_c4["uuid"]]
    assert w.error(params={"filters": filters}, script_version="tag1") == (
        "error searching active/foo from '' to 'tag1', excluding [\"tag1\"]"
    )
    assert at_c2["uuid"] not in w.list(filters)
    status, body = w.api.get(
        "jobs",
        params={"filters": [FOO, HASH, ["script_version", "not in git", ["b1"]]]},
        token=w.active,
    )
    assert (status, body["errors"]) == (
        422,
        ["error searching active/foo from '' to 'HEAD', excluding [\"b1\"]"],
    )


def test_filters_form_ignores_minimum_and_exclusions(w: World) -> None:
    """§3.2: non-empty filters are used as is; an empty list means the legacy form."""
    at_c4 = w.done(script_version="b1")
    got = w.reuse(
        params={"filters": [FOO, HASH]},
        minimum_script_version="__nosuchbranch__",
        exclude_script_versions=["b1"],
    )
    assert got["uuid"] == at_c4["uuid"]
    assert w.error(params={"filters": []}, minimum_script_version="__nosuchbranch__") == (
        "error searching active/foo from '__nosuchbranch__' to 'master', excluding []"
    )
    assert is_new(fresh(w, params={"filters": []}), at_c4)  # legacy: master, not C4


def test_filters_form_new_job_still_validates(w: World) -> None:
    at_c4 = w.done(script_version="b1")
    # used as is: the unresolvable version is not looked at while searching...
    assert (
        w.reuse(params={"filters": [FOO, HASH]}, script_version="nosuch")["uuid"] == (at_c4["uuid"])
    )
    # ... but a job created from it fails validation
    assert w.error(
        params={"filters": [FOO, HASH, ["script_version", "=", "x"]]}, script_version="nosuch"
    ) == ("Script version nosuch does not resolve to a commit")


def test_filters_do_not_need_a_version_filter(w: World) -> None:
    at_c4 = w.done(script_version="b1")
    assert w.reuse(params={"filters": [FOO, HASH]}, script_version="tag1")["uuid"] == at_c4["uuid"]
    # repository and script filters with other operators count (§3.3)
    like = [["repository", "like", "active/%"], ["script", "in", ["hash", "other"]]]
    assert w.reuse(params={"filters": like})["uuid"] == at_c4["uuid"]
    assert w.reuse(params={"filters": [FOO, FOO, HASH]})["uuid"] == at_c4["uuid"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([FOO, ["repository", "=", "active/bar"], HASH], "incompatible repository filters"),
        ([FOO, HASH, ["script", "=", "other"]], "incompatible script filters"),
        (
            [HASH, ["script_version", "in git", "tag1"]],
            "script_version filter needs repository filter",
        ),
        (
            [["script_version", "not in git", "tag1"], ["repository", "like", "active/%"], HASH],
            "script_version filter needs repository filter",
        ),
        (
            [FOO, ["script_version", "in git", "tag1"]],
            "script_version filter needs script filter",
        ),
        ([FOO, HASH, ["x", "in git", "tag1"]], "unknown attribute for git filter: x"),
        ([FOO, HASH, ["script", "not in git", "tag1"]], "unknown attribute for git filter: script"),
        ([HASH], "repository filter required"),
        ([["script_version", "=", "x"]], "repository filter required"),
        ([FOO], "script filter required"),
        (
            [FOO, HASH, ["script_version", "in git", "__nosuchbranch__"]],
            "error searching active/foo from '__nosuchbranch__' to 'master', excluding []",
        ),
        (
            [["repository", "=", "active/nosuch"], HASH, ["script_version", "in git", "tag1"]],
            "Repository not found: 'active/nosuch'",
        ),
        (
            [FOO, HASH, ["arvados_sdk_version", "in git", "nosuch"]],
            "error searching arvados from 'nosuch' to 'HEAD', excluding []",
        ),
        ([FOO, HASH, ["nosuch", "=", "x"]], "Invalid attribute 'nosuch' in filter"),
        ([FOO, HASH, ["script", "frob", "x"]], "Invalid operator 'frob'"),
        (
            [FOO, HASH, ["script", "in", "hash"]],
            "Invalid operand type 'string' for 'in' operator in filters",
        ),
        ([FOO, HASH, "script"], 'Invalid element in filters array: "script" is not an array'),
        (
            [FOO, HASH, ["script_version", "in git", ["tag1"]]],
            "Invalid operand for 'in git' operator in filters: a single string",
        ),
        (
            [FOO, HASH, ["script_version", "not in git", [1]]],
            "Invalid operand for 'not in git' operator in filters: a string or an array of strings",
        ),
        (
            [FOO, HASH, ["docker_image_locator", "in docker", {"a": 1}]],
            "Invalid operand for 'in docker' operator in filters: a string or an array of strings",
        ),
        (
            [FOO, HASH, ["script_parameters_digest", "=", "x"]],
            "Invalid attribute 'script_parameters_digest' in filter",
        ),
    ],
)
def test_filter_errors(w: World, filters: list[Any], message: str) -> None:
    w.done()
    assert w.error(params={"filters": filters}) == message
    assert Job.objects.count() == 1


def test_filters_must_be_an_array(w: World) -> None:
    for given in ("not json", '{"a": 1}', "3"):
        assert w.error(params={"filters": given}) == 'Could not parse "filters" param as an array'


# --- §3.5: the candidate set ------------------------------------------------------------------


def test_unreadable_jobs_are_not_reused(w: World) -> None:
    theirs = w.done(w.spectator)
    created = fresh(w)
    assert is_new(created, theirs)


def test_other_users_readable_complete_jobs_are_reused(w: World) -> None:
    theirs = w.done(w.spectator)
    w.share(theirs["uuid"], w.active_user)
    assert w.reuse()["uuid"] == theirs["uuid"]


@pytest.mark.parametrize("state", ["Queued", "Running"])
def test_other_users_queued_or_running_jobs_are_never_reused(w: World, state: str) -> None:
    theirs = w.job(w.spectator, script_version=w.c3, state=state)
    w.share(theirs["uuid"], w.active_user)
    assert w.api.ok("GET", f"jobs/{theirs['uuid']}", token=w.active)["state"] == state
    created = fresh(w)
    # ... but their owner gets them back
    assert w.reuse(w.spectator)["uuid"] == theirs["uuid"]
    assert created["uuid"] != theirs["uuid"]


@pytest.mark.parametrize("state", ["Failed", "Cancelled"])
def test_failed_and_cancelled_jobs_are_never_reused(w: World, state: str) -> None:
    if state == "Failed":
        ended = w.job(state="Failed", output=w.collection("the output"), log=w.collection("log"))
    else:
        queued = w.job()
        ended = w.api.ok("POST", f"jobs/{queued['uuid']}/cancel", token=w.active)
    assert ended["state"] == state
    created = fresh(w)
    assert is_new(created, ended)


def test_nondeterministic_jobs_are_never_reused(w: World) -> None:
    marked = w.done(nondeterministic=True)
    created = fresh(w, nondeterministic=True)
    assert is_new(created, marked)
    # the new job is marked too, so neither is offered to the next submission
    assert created["nondeterministic"] is True
    assert is_new(fresh(w), marked, created)
    # own queued jobs as well
    marked_queued = w.job(script_version="b1", nondeterministic=True)
    assert is_new(fresh(w, script_version="b1"), marked_queued)


def test_a_nondeterministic_submission_still_reuses(w: World) -> None:
    """§3.5 item 4: the submission's own flag plays no part."""
    done = w.done()
    assert w.reuse(nondeterministic=True)["uuid"] == done["uuid"]


def test_own_running_is_preferred_to_own_queued(w: World) -> None:
    first = w.job()
    second = w.job()
    assert w.reuse()["uuid"] == first["uuid"]  # the oldest queued
    running = w.api.ok("POST", f"jobs/{second['uuid']}/lock", token=w.active)
    assert running["state"] == "Running"
    assert w.reuse()["uuid"] == second["uuid"]
    # a completed job wins over both
    done = w.done()
    assert w.reuse()["uuid"] == done["uuid"]


def test_completed_jobs_oldest_first(w: World) -> None:
    first = w.done()
    second = w.done()
    assert first["output"] == second["output"]
    assert w.reuse()["uuid"] == first["uuid"]
    assert Job.objects.count() == 2


# --- §3.6: the selection loop -----------------------------------------------------------------


def test_null_output_is_skipped(w: World) -> None:
    no_output = w.job(state="Complete", log=w.collection("a log"))
    assert no_output["output"] is None
    created = fresh(w)
    assert is_new(created, no_output)
    done = w.done(output=w.collection("another output"))
    # the null output takes no part in the consistency check
    assert w.reuse()["uuid"] == done["uuid"]


def test_null_log_is_skipped(w: World) -> None:
    no_log = w.job(state="Complete", output=w.collection("the output"))
    assert no_log["log"] is None
    created = fresh(w)
    assert is_new(created, no_log)
    done = w.done(output=w.collection("another output"))
    assert w.reuse()["uuid"] == done["uuid"]


def test_disagreeing_outputs_fall_back_to_own_running_then_queued_then_new(w: World) -> None:
    first = w.done(output=w.collection("one output"))
    second = w.done(output=w.collection("another output"))
    created = fresh(w)
    assert is_new(created, first, second)
    assert w.reuse()["uuid"] == created["uuid"]  # own queued
    later = w.job()
    w.api.ok("POST", f"jobs/{later['uuid']}/lock", token=w.active)
    assert w.reuse()["uuid"] == later["uuid"]  # own running before own queued
    # a third job agreeing with the first does not settle it
    w.done(output=w.collection("one output"))
    assert w.reuse()["uuid"] == later["uuid"]


def test_a_disagreement_after_the_choice_still_refuses(w: World) -> None:
    good = w.done()
    assert w.reuse()["uuid"] == good["uuid"]
    w.done(w.spectator, output=w.collection("another output"))
    w.share(Job.objects.latest("id").uuid, w.active_user)
    assert is_new(fresh(w), good)


def test_first_completed_output_unreadable_refuses_all(w: World) -> None:
    hidden = w.done(output=w.collection("a secret output", shared=False))
    readable = w.done(output=w.collection("the output"))
    created = fresh(w)
    assert is_new(created, hidden, readable)


def test_output_readable_through_any_collection_with_that_hash(w: World) -> None:
    """§6.1: a PDH is readable when any untrashed collection with it is."""
    private = w.collection("same bytes", shared=False)
    done = w.done(output=private)
    assert is_new(fresh(w), done)
    assert w.collection("same bytes") == private
    assert w.reuse()["uuid"] == done["uuid"]


def test_trashed_output_is_unreadable(w: World) -> None:
    output = w.collection("to be trashed")
    done = w.done(output=output)
    collection = w.api.ok(
        "GET",
        "collections",
        params={"filters": [["portable_data_hash", "=", output]]},
        token=w.admin,
    )["items"][0]
    w.api.ok(
        "PUT",
        f"collections/{collection['uuid']}",
        body={"collection": {"is_trashed": True}},
        token=w.admin,
    )
    assert is_new(fresh(w), done)


def test_unreadable_log_makes_the_output_the_reference_without_choosing(w: World) -> None:
    """§3.6 step 7 and its subtle effect: the later job with the same output and a readable
    log only passes the consistency check; it is never chosen."""
    hidden_log = w.done(log=w.collection("a secret log", shared=False))
    same_output = w.done()
    assert hidden_log["output"] == same_output["output"]
    created = fresh(w)
    assert is_new(created, hidden_log, same_output)
    assert w.reuse()["uuid"] == created["uuid"]  # the fallback: own queued


def test_unreadable_log_then_other_output_refuses(w: World) -> None:
    hidden_log = w.done(log=w.collection("a secret log", shared=False))
    other = w.done(output=w.collection("another output"))
    assert is_new(fresh(w), hidden_log, other)


def test_skipped_jobs_come_before_the_choice(w: World) -> None:
    """Older completed jobs without an output or a log neither win nor disagree."""
    w.job(state="Complete", log=w.collection("a log"))
    w.job(state="Complete", output=w.collection("odd output"))
    done = w.done()
    assert w.reuse()["uuid"] == done["uuid"]


# --- §3.7: reuse_job_if_outputs_differ --------------------------------------------------------


def test_outputs_differ_setting_reuses_the_oldest_readable(w: World, settings: Any) -> None:
    settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER = True
    queued = w.job()
    w.done(output=w.collection("a secret output", shared=False))  # skipped, not refused
    w.done(log=w.collection("a secret log", shared=False))  # skipped
    w.job(state="Complete", output=w.collection("yet another output"))  # no log: skipped
    first = w.done(output=w.collection("one output"))
    w.done(output=w.collection("another output"))
    # the oldest fully readable completed job, over the disagreement and over own queued
    assert w.reuse()["uuid"] == first["uuid"]
    settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER = False
    assert w.reuse()["uuid"] == queued["uuid"]


def test_outputs_differ_setting_without_a_readable_one_falls_back(w: World, settings: Any) -> None:
    settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER = True
    hidden = w.done(output=w.collection("a secret output", shared=False))
    created = fresh(w)
    assert is_new(created, hidden)
    assert w.reuse()["uuid"] == created["uuid"]


# --- Docker images in reuse -------------------------------------------------------------------


def test_legacy_form_matches_the_latest_image(w: World) -> None:
    old = w.image("old", repo_tag="arvados/jobs:latest", timestamp="2017-01-01T00:00:00Z")
    ran_old = w.done(runtime_constraints=IMAGE)
    assert ran_old["docker_image_locator"] == old["portable_data_hash"]
    new = w.image("new", repo_tag="arvados/jobs:latest", timestamp="2017-06-01T00:00:00Z")
    # the same tag now names the newer image: the job that ran the older one is not reused
    created = fresh(w, runtime_constraints=IMAGE)
    assert created["docker_image_locator"] == new["portable_data_hash"]
    ran_new = w.done(runtime_constraints=IMAGE)
    assert w.reuse(runtime_constraints=IMAGE)["uuid"] == ran_new["uuid"]
    # with the tag given separately, by hash (prefix) and by portable data hash
    tagged = {"docker_image": "arvados/jobs", "docker_image_tag": "latest"}
    assert w.reuse(runtime_constraints=tagged)["uuid"] == ran_new["uuid"]
    by_hash = {"docker_image": old["image_id"][:25]}
    assert w.reuse(runtime_constraints=by_hash)["uuid"] == ran_old["uuid"]
    by_pdh = {"docker_image": old["portable_data_hash"] + "+Kzzzzz"}
    assert w.reuse(runtime_constraints=by_pdh)["uuid"] == ran_old["uuid"]
    # no image constraint: only jobs without an image
    assert is_new(fresh(w), ran_old, ran_new, created)


def test_legacy_form_hash_like_tag(w: World) -> None:
    """§6.3: a repository name that looks like a hash is found as a tag first."""
    looks_like = "a" * 64
    by_hash = w.image("by hash", hash_name=looks_like)
    by_tag = w.image("by tag", repo_tag=f"{looks_like}:latest")
    ran = w.done(runtime_constraints={"docker_image": looks_like})
    assert ran["docker_image_locator"] == by_tag["portable_data_hash"]
    assert w.reuse(runtime_constraints={"docker_image": looks_like})["uuid"] == ran["uuid"]
    ran_hash = w.done(runtime_constraints={"docker_image": by_hash["portable_data_hash"]})
    assert w.reuse(runtime_constraints={"docker_image": "a" * 30})["uuid"] == ran_hash["uuid"]


def test_legacy_form_image_must_be_readable(w: World) -> None:
    w.image("private", repo_tag="arvados/private:latest", shared=False)
    assert w.error(runtime_constraints={"docker_image": "arvados/private"}) == (
        "Docker image locator not found for arvados/private"
    )


def test_legacy_form_incompatible_image(w: World, settings: Any) -> None:
    w.image("v1 only", repo_tag="arvados/jobs:latest")
    ran = w.done(runtime_constraints=IMAGE)
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = ["v2"]
    assert w.error(runtime_constraints=IMAGE) == (
        "Matching Docker image is incompatible with 'docker_image_formats' configuration."
    )
    # `in docker` ignores the formats setting
    filters = [FOO, HASH, ["docker_image_locator", "in docker", "arvados/jobs"]]
    assert w.reuse(params={"filters": filters})["uuid"] == ran["uuid"]


def test_in_docker_and_not_in_docker(w: World) -> None:
    old = w.image("old", repo_tag="arvados/jobs:latest", timestamp="2017-01-01T00:00:00Z")
    ran_old = w.done(runtime_constraints=IMAGE)
    w.image("new", repo_tag="arvados/jobs:latest", timestamp="2017-06-01T00:00:00Z")
    ran_new = w.done(runtime_constraints=IMAGE)
    w.image("other", repo_tag="arvados/other:1.0", v2=True)
    ran_other = w.done(runtime_constraints={"docker_image": "arvados/other:1.0"})
    ran_none = w.done()
    assert ran_old["docker_image_locator"] == old["portable_data_hash"]

    in_jobs = [FOO, HASH, ["docker_image_locator", "in docker", "arvados/jobs"]]
    # every image of the tag, not just the latest: the oldest job wins
    assert w.reuse(params={"filters": in_jobs})["uuid"] == ran_old["uuid"]
    assert w.list(in_jobs) == [ran_old["uuid"], ran_new["uuid"]]
    # repo:tag terms, hash prefixes and lists of terms
    assert w.list([["docker_image_locator", "in docker", "arvados/other:1.0"]]) == [
        ran_other["uuid"]
    ]
    assert w.list([["docker_image_locator", "in docker", "arvados/other"]]) == []  # :latest
    assert w.list(
        [["docker_image_locator", "in docker", [old["image_id"][:20], "arvados/other:1.0"]]]
    ) == [ran_old["uuid"], ran_other["uuid"]]
    # not in docker also matches jobs without an image (Quirk 3)
    not_jobs = [FOO, HASH, ["docker_image_locator", "not in docker", "arvados/jobs"]]
    assert w.list(not_jobs) == [ran_other["uuid"], ran_none["uuid"]]
    assert w.reuse(params={"filters": not_jobs})["uuid"] == ran_other["uuid"]
    # a term that matches nothing adds nothing: `in` matches no job, `not in` every job
    nothing = [FOO, HASH, ["docker_image_locator", "in docker", "no/such"]]
    assert w.list(nothing) == []
    assert is_new(fresh(w, params={"filters": nothing}), ran_old, ran_new, ran_other, ran_none)
    # a collection that is no image names no image either (no "incompatible" error)
    not_an_image = [["docker_image_locator", "in docker", ran_none["output"]]]
    assert w.list(not_an_image) == []
    assert w.list([["docker_image_locator", "in docker", old["portable_data_hash"]]]) == [
        ran_old["uuid"]
    ]
    everything = w.list([FOO, HASH, ["docker_image_locator", "not in docker", "no/such"]])
    assert {ran_old["uuid"], ran_new["uuid"], ran_other["uuid"], ran_none["uuid"]} <= set(
        everything
    )


def test_in_docker_sees_only_readable_images(w: World) -> None:
    hidden = w.image("hidden", repo_tag="arvados/jobs:latest", shared=False)
    ran = w.done(w.admin, runtime_constraints=IMAGE)
    w.share(ran["uuid"], w.active_user)
    assert ran["docker_image_locator"] == hidden["portable_data_hash"]
    assert w.list([["docker_image_locator", "in docker", "arvados/jobs"]], token=w.admin) == [
        ran["uuid"]
    ]
    assert w.list([["docker_image_locator", "in docker", "arvados/jobs"]]) == []
    # reader tokens (GET only) add their users' images to the search
    body = w.api.ok(
        "GET",
        "jobs",
        params={
            "filters": [["docker_image_locator", "in docker", "arvados/jobs"]],
            "reader_tokens": [w.admin],
        },
        token=w.active,
    )
    assert [item["uuid"] for item in body["items"]] == [ran["uuid"]]


def test_legacy_form_does_not_apply_the_default_image(w: World, settings: Any) -> None:
    """§3.2 item 4 note: creation applies CRUNCH_DEFAULT_DOCKER_IMAGE_FOR_JOBS, the legacy
    form does not, so a submission without an image never matches a job given the default."""
    default = w.image("default", repo_tag="arvados/jobs:latest")
    settings.CRUNCH_DEFAULT_DOCKER_IMAGE_FOR_JOBS = "arvados/jobs"
    ran = w.done(runtime_constraints={})
    assert ran["docker_image_locator"] == default["portable_data_hash"]
    assert is_new(fresh(w, runtime_constraints={}), ran)
    assert w.reuse(runtime_constraints=IMAGE)["uuid"] == ran["uuid"]


def test_default_image_applies_without_runtime_constraints(w: World, settings: Any) -> None:
    default = w.image("default", repo_tag="arvados/jobs:latest")
    settings.CRUNCH_DEFAULT_DOCKER_IMAGE_FOR_JOBS = "arvados/jobs"
    job = w.job()
    assert job["docker_image_locator"] == default["portable_data_hash"]


# --- SDK versions -----------------------------------------------------------------------------


def test_sdk_version_filters_are_ranges_in_arvados(w: World) -> None:
    w.image("jobs", repo_tag="arvados/jobs:latest")
    at_s1 = w.done(runtime_constraints=IMAGE | {"arvados_sdk_version": "sdk1"})
    at_s3 = w.done(runtime_constraints=IMAGE | {"arvados_sdk_version": "master"})
    assert (at_s1["arvados_sdk_version"], at_s3["arvados_sdk_version"]) == (w.s1, w.s3)
    from_s2 = [FOO, HASH, ["arvados_sdk_version", "in git", w.s2]]
    assert w.reuse(params={"filters": from_s2})["uuid"] == at_s3["uuid"]
    assert w.list(from_s2) == [at_s3["uuid"]]
    from_s1 = [FOO, HASH, ["arvados_sdk_version", "in git", "sdk1"]]
    assert w.reuse(params={"filters": from_s1})["uuid"] == at_s1["uuid"]
    # the range always ends at the arvados HEAD, whatever the submission says
    not_head = [FOO, HASH, ["arvados_sdk_version", "not in git", "sdk1"]]
    assert w.list(not_head) == [at_s3["uuid"]]
    assert w.error(
        params={"filters": [FOO, HASH, ["arvados_sdk_version", "not in git", "master"]]}
    ) == ("error searching arvados from '' to 'HEAD', excluding [\"master\"]")


def test_legacy_form_adds_the_sdk_filter_only_when_submitted(w: World) -> None:
    w.image("jobs", repo_tag="arvados/jobs:latest")
    at_s1 = w.done(runtime_constraints=IMAGE | {"arvados_sdk_version": "sdk1"})
    # no SDK constraint: no SDK filter, so the job with one is reused
    assert w.reuse(runtime_constraints=IMAGE)["uuid"] == at_s1["uuid"]
    assert (
        w.reuse(runtime_constraints=IMAGE | {"arvados_sdk_version": w.s1})["uuid"]
        == (at_s1["uuid"])
    )
    created = fresh(w, runtime_constraints=IMAGE | {"arvados_sdk_version": "master"})
    assert created["arvados_sdk_version"] == w.s3
    assert is_new(created, at_s1)


def test_legacy_form_sdk_constraint_without_a_job_having_one(w: World) -> None:
    w.image("jobs", repo_tag="arvados/jobs:latest")
    plain = w.done(runtime_constraints=IMAGE)
    assert is_new(fresh(w, runtime_constraints=IMAGE | {"arvados_sdk_version": "sdk1"}), plain)
    # an unresolvable SDK version adds no filter; creating the job then fails
    assert w.error(runtime_constraints=IMAGE | {"arvados_sdk_version": "nosuch"}) == (
        "Arvados sdk version nosuch does not resolve to a commit"
    )


def test_legacy_form_unresolvable_image_fails_instead_of_matching_no_image(w: World) -> None:
    """The original filtered on a null locator here, reusing a job that ran no image; like
    Quirk 7, the request fails as creating the job would."""
    w.done()
    assert w.error(runtime_constraints={"docker_image": "no/such"}) == (
        "Docker image locator not found for no/such"
    )
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    ("formats", "runs"),
    [(["v1"], "v1"), (["v2"], "v2"), (["v1", "v2"], "v2")],
)
def test_image_formats_in_the_legacy_form(
    w: World, settings: Any, formats: list[str], runs: str
) -> None:
    """The latest compatible image is the one matched: with both formats, the newer v2."""
    v1 = w.image("v1", repo_tag="arvados/jobs:latest", timestamp="2017-01-01T00:00:00Z")
    v2 = w.image("v2", repo_tag="arvados/jobs:latest", timestamp="2017-06-01T00:00:00Z", v2=True)
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = formats
    ran = w.done(runtime_constraints=IMAGE)
    expected = {"v1": v1, "v2": v2}[runs]
    assert ran["docker_image_locator"] == expected["portable_data_hash"]
    assert w.reuse(runtime_constraints=IMAGE)["uuid"] == ran["uuid"]


# --- explain ----------------------------------------------------------------------------------


def explained(body: dict[str, Any]) -> dict[str, str]:
    """Each candidate's reason; the reused one as "reused: <reason>" (its decision)."""
    return {
        c["uuid"]: f"reused: {c['reason']}" if c["decision"] == "reused" else c["reason"]
        for c in body["reuse_explanation"]["candidates"]
    }


def test_explain_names_the_reason_for_each_rejected_candidate(w: World) -> None:
    """Every way to miss, and a fallback to the user's own Running job because two
    completed jobs disagree."""
    old = w.image("old", repo_tag="arvados/jobs:latest", timestamp="2017-01-01T00:00:00Z")
    new = w.image("new", repo_tag="arvados/jobs:latest", timestamp="2017-06-01T00:00:00Z")
    other_output = w.collection("another output")

    unreadable = w.done(w.spectator, runtime_constraints=IMAGE)
    theirs_queued = w.job(w.spectator, runtime_constraints=IMAGE)
    w.share(theirs_queued["uuid"], w.active_user)
    nondeterministic = w.done(runtime_constraints=IMAGE, nondeterministic=True)
    failed = w.job(runtime_constraints=IMAGE, state="Failed")
    outside = w.done(script_version="b1", runtime_constraints=IMAGE)
    other_image = w.done(runtime_constraints={"docker_image": old["portable_data_hash"]})
    no_image = w.done()
    null_log = w.job(runtime_constraints=IMAGE, state="Complete", output=other_output)
    good = w.done(script_version="tag1", runtime_constraints=IMAGE)
    disagreeing = w.done(runtime_constraints=IMAGE, output=other_output)
    after = w.done(runtime_constraints=IMAGE)
    queued = w.job(runtime_constraints=IMAGE)
    running = w.job(runtime_constraints=IMAGE)
    w.api.ok("POST", f"jobs/{running['uuid']}/lock", token=w.active)
    assert other_image["docker_image_locator"] == old["portable_data_hash"]

    body = w.reuse(
        params={"explain": True}, minimum_script_version="tag1", runtime_constraints=IMAGE
    )
    assert body["uuid"] == running["uuid"]
    explanation = body["reuse_explanation"]
    assert explanation["reused"] is True and "created" not in explanation
    assert explanation["filters"][:2] == [FOO, HASH]
    reasons = explained(body)
    latest = new["portable_data_hash"]
    refusal = (
        f"completed jobs disagree on the output: {good['uuid']} has {good['output']}, "
        f"{disagreeing['uuid']} has {other_output}"
    )
    assert reasons == {
        running["uuid"]: f"reused: your own Running job (no completed job is reused: {refusal})",
        queued["uuid"]: (
            f"your own Queued job, but your Running job {running['uuid']} comes first"
        ),
        unreadable["uuid"]: "not readable by you",
        theirs_queued["uuid"]: (
            "it is another user's Queued job: only Complete jobs, or your own Queued or "
            "Running ones, are reused"
        ),
        nondeterministic["uuid"]: "it is marked nondeterministic: such jobs are never reused",
        failed["uuid"]: (
            "its state is Failed: only Complete jobs, or your own Queued or Running ones, "
            "are reused"
        ),
        outside["uuid"]: (
            "its script_version is not one of the 2 commits from 'tag1' to 'master' in active/foo"
        ),
        other_image["uuid"]: (
            f"its docker_image_locator is not {latest}, the latest image for arvados/jobs"
        ),
        no_image["uuid"]: (
            f"its docker_image_locator is not {latest}, the latest image for arvados/jobs"
        ),
        null_log["uuid"]: "completed without a log",
        good["uuid"]: f"not reused although its output and log are readable: {refusal}",
        disagreeing["uuid"]: (
            f"its output {other_output} disagrees with {good['output']}, the output of "
            f"{good['uuid']}: no completed job is reused"
        ),
        after["uuid"]: f"not considered: {refusal}",
    }
    decisions = {c["uuid"]: c["decision"] for c in explanation["candidates"]}
    assert [u for u, d in decisions.items() if d == "reused"] == [running["uuid"]]
    assert decisions[good["uuid"]] == decisions[queued["uuid"]] == "passed over"
    assert decisions[unreadable["uuid"]] == decisions[outside["uuid"]] == "rejected"
    # the candidates' order: Running, Queued, then Complete (and the rest) oldest first
    uuids = [c["uuid"] for c in explanation["candidates"]]
    assert uuids[:3] == [running["uuid"], theirs_queued["uuid"], queued["uuid"]]
    assert uuids.index(good["uuid"]) < uuids.index(disagreeing["uuid"]) < uuids.index(after["uuid"])


def test_explain_the_completed_choice_and_unreadable_collections(w: World) -> None:
    hidden_log = w.done(log=w.collection("a secret log", shared=False))
    same = w.done()
    body = w.reuse(params={"explain": True})
    assert is_new(body, hidden_log, same)
    assert body["reuse_explanation"]["reused"] is False
    assert body["reuse_explanation"]["created"] == body["uuid"]
    reasons = explained(body)
    assert reasons[hidden_log["uuid"]] == (
        f"its log {hidden_log['log']} is not readable by you (later completed jobs must still "
        f"have its output {hidden_log['output']})"
    )
    assert reasons[same["uuid"]] == (
        f"same output as {hidden_log['uuid']}, whose log is not readable by you: only the "
        "oldest completed job with an output and a log can be reused"
    )
    assert body["uuid"] not in reasons  # the new job was not a candidate

    w2 = w.done(script_version="b1")
    later = w.done(script_version="b1")
    body = w.reuse(params={"explain": True}, script_version="b1")
    assert body["uuid"] == w2["uuid"]
    assert explained(body)[w2["uuid"]] == (
        "reused: the oldest completed job with a readable output and log"
    )
    assert explained(body)[later["uuid"]] == f"same output as {w2['uuid']}, which is older"

    hidden_output = w.done(script_version="tag1", output=w.collection("secret", shared=False))
    body = w.reuse(params={"explain": True}, script_version="tag1")
    assert is_new(body, hidden_output)
    assert explained(body)[hidden_output["uuid"]] == (
        f"its output {hidden_output['output']} is not readable by you: no completed job is reused"
    )


def test_explain_with_the_outputs_differ_setting(w: World, settings: Any) -> None:
    settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER = True
    hidden = w.done(output=w.collection("secret", shared=False))
    first = w.done(output=w.collection("one"))
    second = w.done(output=w.collection("two"))
    body = w.reuse(params={"explain": True})
    assert body["uuid"] == first["uuid"]
    assert explained(body) == {
        hidden["uuid"]: f"its output {hidden['output']} is not readable by you",
        first["uuid"]: (
            "reused: the oldest completed job with a readable output and log (outputs may "
            "differ: CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER)"
        ),
        second["uuid"]: "not reached: an older job was reused first",
    }


def test_explain_filters_form_labels(w: World) -> None:
    w.image("jobs", repo_tag="arvados/jobs:latest")
    outside = w.done(script_version="b1", runtime_constraints=IMAGE)
    no_image = w.done(script_version="tag1")
    filters = [
        FOO,
        HASH,
        ["script_version", "in git", "tag1"],
        ["docker_image_locator", "in docker", "arvados/jobs"],
    ]
    body = w.reuse(params={"filters": filters, "explain": True})
    assert is_new(body, outside, no_image)
    assert explained(body) == {
        outside["uuid"]: (
            "its script_version is not one of the 2 commits from 'tag1' to 'master' in active/foo"
        ),
        no_image["uuid"]: (
            'its docker_image_locator is not one of the images "arvados/jobs" names (1 found)'
        ),
    }


def test_explain_without_find_or_create(w: World) -> None:
    w.done()
    body = w.reuse(params={"find_or_create": False, "explain": True})
    assert body["reuse_explanation"] == {"reused": False, "reason": "find_or_create not requested"}


# --- concurrency --------------------------------------------------------------------------------

SUBMISSIONS = 16


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param(
            "sqlite",
            marks=pytest.mark.skipif(
                settings.CRUNCH_DB_IS_POSTGRES, reason="the SQLite variant (process-wide lock)"
            ),
        ),
    ],
)
def test_concurrent_identical_submissions_get_one_job(
    vendor: str,
    live_server: Any,
    api: Any,
    templates: Templates,
    admin: Any,
    active: Any,
    spectator: Any,
) -> None:
    """16 identical find_or_create requests, released together at a live server, attach to
    one job (the identity lock), and exactly one job row exists.

    PostgreSQL: the advisory lock, across connections. SQLite: the process-wide lock, held
    until the transaction has committed (the live server runs in this process)."""
    import requests

    from tests.git_helpers import join_server_threads

    assert connection.vendor == vendor
    w = World(api, templates, admin, active, spectator)
    url = f"{live_server.url}/arvados/v1/jobs"
    body = {"job": w.attrs(script_parameters={"input": "fa7aeb5140e2848d39b416daeef4ffc5+45"})}
    barrier = threading.Barrier(SUBMISSIONS)
    results: list[Any] = [None] * SUBMISSIONS

    def submit(index: int) -> None:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            try:
                response = session.post(
                    url,
                    params={"find_or_create": "true"},
                    json=body,
                    headers={"Authorization": f"Bearer {w.active}"},
                    timeout=60,
                )
                results[index] = (response.status_code, response.json())
            except Exception as exc:  # reported below, with the others
                results[index] = (None, repr(exc))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(SUBMISSIONS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        join_server_threads()
    assert all(r is not None and r[0] == 200 for r in results), results
    uuids = {r[1]["uuid"] for r in results}
    assert len(uuids) == 1, uuids
    assert list(Job.objects.values_list("uuid", flat=True)) == list(uuids)
