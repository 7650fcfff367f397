"""The real Arvados Python SDK and job reuse (spec §3, §5.2): `jobs().create` with
`find_or_create=True` and `filters`, and `jobs().list` with `in git` and `in docker` filters,
against a live server. The world is tests/reuse_world.py's (`active/foo` holds the spec's
example history)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import arvados
import arvados.errors
import pytest

from tests.git_helpers import join_server_threads
from tests.reuse_world import Templates, World, build_templates

pytestmark = pytest.mark.sdk

TIMEOUT = 30
FOO = ["repository", "=", "active/foo"]
HASH = ["script", "=", "hash"]


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return build_templates(tmp_path_factory.mktemp("sdk-jobs-templates"))


@pytest.fixture
def w(api: Any, templates: Templates, admin: Any, active: Any, spectator: Any) -> World:
    return World(api, templates, admin, active, spectator)


@pytest.fixture
def sdk(
    live_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, w: World
) -> Iterator[Callable[[str], Any]]:
    """sdk(token) -> a real SDK client of the live server, built from our discovery
    document, with no ambient Arvados configuration and no retries."""
    for name in ("ARVADOS_API_HOST", "ARVADOS_API_TOKEN", "ARVADOS_API_HOST_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built: list[Any] = []

    def build(token: str) -> Any:
        client = arvados.api(
            "v1",
            discoveryServiceUrl=live_server.url + "/discovery/v1/apis/{api}/{apiVersion}/rest",
            token=token,
            num_retries=0,
            cache=False,
            timeout=TIMEOUT,
        )
        built.append(client)
        return client

    yield build
    for client in built:
        client._http.close()
    join_server_threads()


def test_create_with_find_or_create_and_filters(w: World, sdk: Callable[[str], Any]) -> None:
    at_c4 = w.done(script_version="b1")
    at_c2 = w.done(script_version="tag1")
    client = sdk(w.active)
    filters = [FOO, HASH, ["script_version", "in git", "tag1"]]
    # master with `in git tag1`: C3 and C2, so the job at C2 (not the older one at C4)
    job = (
        client.jobs()
        .create(
            body={"job": w.attrs(script_version="master")}, find_or_create=True, filters=filters
        )
        .execute()
    )
    assert job["uuid"] == at_c2["uuid"]
    # new parameters: a new job the first time, the same job the second time
    body = {"job": w.attrs(script_parameters={"input": "fa7aeb5140e2848d39b416daeef4ffc5+45"})}
    first = client.jobs().create(body=body, find_or_create=True, filters=filters).execute()
    assert first["state"] == "Queued" and first["uuid"] not in (at_c2["uuid"], at_c4["uuid"])
    assert first["script_version"] == w.c3 and first["supplied_script_version"] == "master"
    second = client.jobs().create(body=body, find_or_create=True, filters=filters).execute()
    assert second["uuid"] == first["uuid"]
    # explain is a declared parameter too
    explained = (
        client.jobs()
        .create(body=body, find_or_create=True, filters=filters, explain=True)
        .execute()
    )
    assert explained["uuid"] == first["uuid"]
    assert [c["decision"] for c in explained["reuse_explanation"]["candidates"]] == ["reused"]
    # without find_or_create the SDK sends nothing and the server creates a new job
    third = client.jobs().create(body=body).execute()
    assert third["uuid"] not in (first["uuid"], at_c2["uuid"])


def test_create_errors_reach_the_sdk(w: World, sdk: Callable[[str], Any]) -> None:
    client = sdk(w.active)
    call = client.jobs().create(
        body={"job": w.attrs()},
        find_or_create=True,
        filters=[HASH, ["script_version", "in git", "tag1"]],
    )
    with pytest.raises(arvados.errors.ApiError) as info:
        call.execute()
    assert info.value.resp.status == 422
    assert "script_version filter needs repository filter" in info.value.reason


def test_list_with_in_git_and_in_docker(w: World, sdk: Callable[[str], Any]) -> None:
    w.image("old", repo_tag="arvados/jobs:latest", timestamp="2017-01-01T00:00:00Z")
    ran_old = w.done(script_version="tag1", runtime_constraints={"docker_image": "arvados/jobs"})
    w.image("new", repo_tag="arvados/jobs:latest", timestamp="2017-06-01T00:00:00Z")
    ran_new = w.done(script_version="b1", runtime_constraints={"docker_image": "arvados/jobs"})
    plain = w.done(script_version=w.c1)
    assert ran_old["docker_image_locator"] != ran_new["docker_image_locator"]
    client = sdk(w.active)

    def listed(filters: list[Any]) -> list[str]:
        items = client.jobs().list(filters=filters, order=["created_at asc"]).execute()["items"]
        return [item["uuid"] for item in items]

    # a list's range ends at HEAD (b1): C4, C3, C2
    assert listed([FOO, HASH, ["script_version", "in git", "tag1"]]) == [
        ran_old["uuid"],
        ran_new["uuid"],
    ]
    assert listed([FOO, HASH, ["script_version", "not in git", "tag1"]]) == [ran_new["uuid"]]
    # every image with the tag, not just the latest
    in_docker = [["docker_image_locator", "in docker", "arvados/jobs"]]
    assert listed(in_docker) == [ran_old["uuid"], ran_new["uuid"]]
    assert listed([["docker_image_locator", "not in docker", "arvados/jobs"]]) == [plain["uuid"]]
    both = [FOO, HASH, ["script_version", "in git", w.c1], *in_docker]
    assert listed(both) == [ran_old["uuid"], ran_new["uuid"]]


def test_log_tail_follow_returns_the_stream_as_bytes(
    sdk: Callable[[str], Any], active: Any
) -> None:
    """The SDK's log_tail_follow has no response schema: it sends Accept: */* and returns the
    raw bytes, here a finished job's log and its end line."""
    from django.utils import timezone

    from tests.rows import add_chunks, make_job

    user, token = active
    now = timezone.now()
    job = make_job(user, state="Failed", started_at=now, finished_at=now)
    add_chunks(job, ["first line\nsecond line\n", "third line\n"])
    whole = sdk(token).jobs().log_tail_follow(uuid=job.uuid).execute()
    assert isinstance(whole, bytes)
    lines = whole.decode().splitlines()
    assert lines[:3] == ["first line", "second line", "third line"]
    assert f"job {job.uuid} Failed finished_at " in lines[3] and len(lines) == 4
    tail = sdk(token).jobs().log_tail_follow(uuid=job.uuid, buffer_size=15).execute()
    assert tail.decode().splitlines()[0] == "third line"


def test_executions_through_the_sdk(sdk: Callable[[str], Any], active: Any) -> None:
    """The SDK builds `jobs().executions` from the discovery document and gets the list."""
    from jobs.services.executions import execution_start
    from tests.rows import make_job

    user, token = active
    job = make_job(user, state="Running")
    execution_start(job=job, node_uuid=None, hostname="w1", log_seq=0)
    listed = sdk(token).jobs().executions(uuid=job.uuid).execute()
    assert listed["kind"] == "arvados#executionList" and listed["items_available"] == 1
    assert [(e["attempt"], e["hostname"], e["state"]) for e in listed["items"]] == [
        (1, "w1", "Running")
    ]
    with pytest.raises(arvados.errors.ApiError) as raised:
        sdk(token).jobs().executions(uuid="zzzzz-8i9sb-000000000000000").execute()
    assert raised.value.resp.status == 404
