"""Command jobs through the Arvados API: an argv over an uploaded directory (a collection),
its environment, labels and meta; validation; and reuse on the canonical identity."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Job, JobReuse
from tests.api.test_conventions import assert_error
from tests.reuse_world import Templates, World, build_templates

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return build_templates(tmp_path_factory.mktemp("command-templates"))


@pytest.fixture
def w(api: Any, templates: Templates, admin: Any, active: Any, spectator: Any) -> World:
    return World(api, templates, admin, active, spectator)


@pytest.fixture
def workdir(w: World) -> str:
    return w.collection("print('hello')\n", name="train.py")


def command_job(workdir: str | None, **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"command": ["python3", "train.py", "--epochs", "3"]}
    if workdir is not None:
        job["working_dir"] = workdir
    return job | extra


def submit(w: World, job: dict[str, Any], token: str | None = None, **params: Any) -> Any:
    status, body = w.api.post(
        "jobs",
        params={"find_or_create": True} | params,
        body={"job": job},
        token=token or w.active,
    )
    assert status == 200, body
    return body


def create(w: World, job: dict[str, Any], token: str | None = None) -> Any:
    return w.api.ok("POST", "jobs", body={"job": job}, token=token or w.active)


def complete(w: World, body: dict[str, Any]) -> None:
    """Record `body`'s job as Complete with a readable output and log."""
    Job.objects.filter(uuid=body["uuid"]).update(
        state="Complete",
        success=True,
        running=False,
        output=w.collection("the output"),
        log=w.collection("a log", name="log.txt"),
    )


# --- shape and validation ---------------------------------------------------------------


def test_a_command_job_has_its_argv_workdir_and_environment(w, workdir):
    job = create(
        w,
        command_job(
            workdir + "+Afake@12345678",
            environment={"SEED": "1", "MODE": "fast"},
            labels={"team": "vision"},
            meta={"ticket": "T-1"},
        ),
    )
    assert job["command"] == ["python3", "train.py", "--epochs", "3"]
    assert job["working_dir"] == workdir  # hash and size only, like every locator
    assert job["environment"] == {"SEED": "1", "MODE": "fast"}
    assert job["labels"] == {"team": "vision"} and job["meta"] == {"ticket": "T-1"}
    assert job["script"] is None and job["repository"] is None
    assert job["script_version"] is None and job["script_parameters"] == {}
    assert job["state"] == "Queued"
    assert "reuse_key" not in job
    got = w.api.ok("GET", f"jobs/{job['uuid']}", token=w.active)
    assert got["command"] == job["command"]


def test_script_jobs_keep_their_shape(w):
    job = w.job()
    assert job["command"] is None and job["working_dir"] is None
    assert job["environment"] == {} and job["labels"] == {} and job["meta"] == {}


def test_a_command_job_without_a_workdir(w):
    job = create(w, {"command": ["true"]})
    assert job["working_dir"] is None and job["command"] == ["true"]


def test_a_command_over_a_git_commit(w):
    job = create(w, {"command": ["make"], "repository": "active/foo", "script_version": "master"})
    assert job["script_version"] == w.c3 and job["supplied_script_version"] == "master"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"command": "python3 train.py"}, "command must be an array of strings"),
        ({"command": ["python3", 3]}, "command must be an array of strings"),
        ({"command": []}, "command must name a program (its first element cannot be empty)"),
        ({"command": [""]}, "command must name a program (its first element cannot be empty)"),
        ({"command": ["a\x00b"]}, "Parameters must not contain NUL (\\u0000) characters"),
        (
            {"command": ["x"], "environment": {"1BAD": "x"}},
            "environment name \"1BAD\" is not a variable name (letters, digits and '_', "
            "not starting with a digit)",
        ),
        (
            {"command": ["x"], "environment": {"N": 1}},
            "environment.N must be a string, not 1",
        ),
        ({"command": ["x"], "labels": {"a": ["b"]}}, 'labels.a must be a string, not ["b"]'),
        ({"command": ["x"], "meta": {"a": None}}, "meta.a must be a string, not null"),
        (
            {"command": ["x"], "working_dir": "not-a-pdh"},
            'working_dir must be a portable data hash, not "not-a-pdh"',
        ),
        (
            {"command": ["x"], "working_dir": "0" * 32 + "+5"},
            "working_dir 00000000000000000000000000000000+5 is not a collection you can read",
        ),
        (
            {"command": ["x"], "script": "hash"},
            "a job runs a script or a command, not both",
        ),
        (
            {"command": ["x"], "repository": "active/foo"},
            "a command job over a repository needs both repository and script_version",
        ),
        (
            {
                "repository": "active/foo",
                "script": "hash",
                "script_version": "master",
                "script_parameters": {},
                "environment": {"A": "b"},
            },
            "environment applies to command jobs: give a command",
        ),
    ],
)
def test_bad_command_jobs_are_422s_that_say_why(w, job, message):
    status, body = w.api.post("jobs", body={"job": job}, token=w.active)
    assert_error(status, body, 422, message)
    assert not Job.objects.exists()


def test_a_private_workdir_is_not_usable_by_others(w):
    private = w.collection("secret", shared=False)
    status, body = w.api.post(
        "jobs", body={"job": {"command": ["cat"], "working_dir": private}}, token=w.active
    )
    assert_error(status, body, 422, f"working_dir {private} is not a collection you can read")


def test_reuse_filters_are_for_script_jobs(w, workdir):
    status, body = w.api.post(
        "jobs",
        params={"find_or_create": True, "filters": [["script", "=", "x"]]},
        body={"job": command_job(workdir)},
        token=w.active,
    )
    assert_error(status, body, 422)
    assert "filters applies to script jobs" in body["errors"][0]


def test_the_discovery_document_describes_the_command_attributes(api):
    doc = api.ok("GET", "/discovery/v1/apis/arvados/v1/rest")
    props = doc["schemas"]["Job"]["properties"]
    assert props["command"]["type"] == "array"
    assert props["command"]["items"] == {"type": "string"}
    for name in ("environment", "labels", "meta"):
        assert props[name]["type"] == "object"
    assert props["working_dir"]["type"] == "string"


# --- reuse on the canonical identity ---------------------------------------------------------


def test_the_same_command_job_is_reused_and_recorded(w, workdir):
    first = submit(w, command_job(workdir, environment={"A": "1", "B": "2"}))
    assert first["state"] == "Queued"
    again = submit(w, command_job(workdir, environment={"B": "2", "A": "1"}))
    assert again["uuid"] == first["uuid"]  # the caller's own queued job
    complete(w, first)
    w.share(first["uuid"], w.spectator_user)  # reuse needs a job the caller can read
    other = submit(w, command_job(workdir, environment={"A": "1", "B": "2"}), token=w.spectator)
    assert other["uuid"] == first["uuid"]  # another user: the completed job
    assert JobReuse.objects.filter(job_uuid=first["uuid"]).count() == 2


def test_labels_meta_priority_and_resources_do_not_change_the_identity(w, workdir):
    first = create(w, command_job(workdir, labels={"a": "1"}))
    complete(w, first)
    again = submit(
        w,
        command_job(
            workdir,
            labels={"a": "2"},
            meta={"m": "x"},
            priority=5,
            runtime_constraints={"vcpus": 2},
        ),
    )
    assert again["uuid"] == first["uuid"]


def test_number_spelling_and_key_order_do_not_matter(w, workdir):
    first = create(w, command_job(workdir, script_parameters={"lr": 1, "opts": {"a": 1, "b": 2}}))
    complete(w, first)
    again = submit(
        w, command_job(workdir, script_parameters={"opts": {"b": 2.0, "a": 1}, "lr": 1.0})
    )
    assert again["uuid"] == first["uuid"]


@pytest.mark.parametrize(
    "change",
    [
        "working_dir",
        "argv",
        "environment value",
        "environment name",
        "parameters",
        "image",
        "no workdir",
    ],
)
def test_any_real_change_makes_a_new_job(w, workdir, change):
    image = w.image("img-a", repo_tag="tools:1")
    w.image("img-b", repo_tag="tools:2")
    base = command_job(
        workdir,
        environment={"A": "1"},
        script_parameters={"n": 1},
        runtime_constraints={"docker_image": "tools", "docker_image_tag": "1"},
    )
    first = create(w, base)
    assert first["docker_image_locator"] == image["portable_data_hash"]
    complete(w, first)
    changed = {
        "working_dir": {"working_dir": w.collection("print('hello!')\n", name="train.py")},
        "argv": {"command": ["python3", "train.py", "--epochs", "4"]},
        "environment value": {"environment": {"A": "2"}},
        "environment name": {"environment": {"A": "1", "B": "1"}},
        "parameters": {"script_parameters": {"n": "1"}},
        "image": {"runtime_constraints": {"docker_image": "tools", "docker_image_tag": "2"}},
        "no workdir": {"working_dir": None},
    }[change]
    body = submit(w, base | changed, explain=True)
    assert body["uuid"] != first["uuid"] and body["state"] == "Queued"
    explained = {c["uuid"]: c for c in body["reuse_explanation"]["candidates"]}
    assert explained[first["uuid"]]["decision"] == "rejected"
    assert explained[first["uuid"]]["reason"]  # says which part differs


def test_explain_says_why_for_each_candidate(w, workdir):
    failed = create(w, command_job(workdir))
    Job.objects.filter(uuid=failed["uuid"]).update(state="Failed", success=False)
    nondeterministic = create(w, command_job(workdir, nondeterministic=True))
    complete(w, nondeterministic)
    body = submit(w, command_job(workdir, environment={"X": "1"}), explain=True)
    assert body["reuse_explanation"]["reused"] is False
    reasons = {c["uuid"]: c["reason"] for c in body["reuse_explanation"]["candidates"]}
    assert reasons[failed["uuid"]] == "its environment differs in X"
    body = submit(w, command_job(workdir), explain=True)
    reasons = {c["uuid"]: c["reason"] for c in body["reuse_explanation"]["candidates"]}
    assert reasons[failed["uuid"]].startswith("its state is Failed")
    assert "nondeterministic" in reasons[nondeterministic["uuid"]]
    assert body["reuse_explanation"]["created"] == body["uuid"]


def test_a_command_job_is_not_reused_for_a_script_job(w):
    script = w.done()
    body = submit(w, {"command": ["true"]})
    assert body["uuid"] != script["uuid"]


def test_no_reuse_flag_on_command_jobs(w, workdir):
    first = create(w, command_job(workdir))
    complete(w, first)
    body = submit(w, command_job(workdir, no_reuse=True))
    assert body["uuid"] != first["uuid"]


def test_the_door_is_recorded_and_not_settable(w, workdir, active):
    from jobs.services.objects import Actor
    from jobs.spec import JobSpec
    from jobs.submit import job_submit

    job = create(w, command_job(workdir, door="ray"))  # a client cannot claim another door
    assert job["door"] == "arvados"
    complete(w, job)
    submitted = job_submit(
        actor=Actor(active[0]),
        spec=JobSpec(command=("true",), door="nomad"),
        reuse=True,
    )
    assert submitted.job.door == "nomad" and not submitted.reused
    again = job_submit(
        actor=Actor(active[0]),
        spec=JobSpec(command=tuple(job["command"]), working_dir=workdir, door="bacalhau"),
        reuse=True,
    )
    # Reuse across doors: the same identity, whichever door asks.
    assert again.reused and again.job.uuid == job["uuid"] and again.job.door == "arvados"
