"""The real Arvados Python SDK against a live server (spec/arvados-sdk-wire.md).

Every client is built the way users build it: `arvados.api('v1', discoveryServiceUrl=...)`, so
the whole client comes from our discovery document. `num_retries=0` and a short timeout make
a server bug fail fast instead of looking like a hang (the SDK retries 5xx for minutes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import arvados
import arvados.errors
import arvados.util
import pytest

pytestmark = pytest.mark.sdk

TIMEOUT = 20


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No ambient Arvados configuration, and a private discovery cache."""
    for name in (
        "ARVADOS_API_HOST",
        "ARVADOS_API_TOKEN",
        "ARVADOS_API_HOST_INSECURE",
        "ARVADOS_KEEP_SERVICES",
        "ARVADOS_KEEP_PROXY",
        "REMOTE_ADDR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def connect(live_server: Any, sdk_env: None) -> Iterator[Callable[..., Any]]:
    """connect(token, **options) -> a real SDK client of the live server."""
    built = []

    def build(token: str, **options: Any) -> Any:
        client = arvados.api(
            "v1",
            discoveryServiceUrl=live_server.url + "/discovery/v1/apis/{api}/{apiVersion}/rest",
            token=token,
            **{"num_retries": 0, "cache": False, "timeout": TIMEOUT, **options},
        )
        built.append(client)
        return client

    yield build
    # Close the clients' keep-alive connections while the server still runs, so that its
    # request threads end (and release the shared in-memory SQLite connection) now.
    for client in built:
        client._http.close()


@pytest.fixture
def as_active(connect: Callable[..., Any], active: tuple[Any, str]) -> Any:
    return connect(active[1])


@pytest.fixture
def as_admin(connect: Callable[..., Any], admin: tuple[Any, str]) -> Any:
    return connect(admin[1])


def api_error(call: Any) -> Any:
    with pytest.raises(arvados.errors.ApiError) as info:
        call.execute()
    return info.value


# --- building the client -----------------------------------------------------------------


def test_client_builds_from_our_document(
    as_active: Any, live_server: Any, active: tuple[Any, str], settings: Any
) -> None:
    root = as_active._rootDesc
    assert root["rootUrl"] == live_server.url + "/"
    assert root["uuidPrefix"] == settings.CRUNCH_UUID_PREFIX
    me = as_active.users().current().execute()
    assert me["uuid"] == active[0].uuid
    assert me["kind"] == "arvados#user"
    token = as_active.api_client_authorizations().current().execute()
    assert token["kind"] == "arvados#apiClientAuthorization"
    assert token["user_id"] == active[0].pk
    narrowed = as_active.users().current(select=["uuid", "username"]).execute()
    assert narrowed == {"kind": "arvados#user", "uuid": active[0].uuid, "username": "active"}


def test_discovery_cache_in_xdg_dir_is_revalidated(
    connect: Callable[..., Any],
    active: tuple[Any, str],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the SDK's default disk cache, a second build revalidates (a 304) instead of
    trusting a stored copy: a changed rootUrl is never pinned."""
    from django.http import HttpResponseNotModified

    import api.discovery

    not_modified = []

    def counting_not_modified() -> HttpResponseNotModified:
        not_modified.append(1)
        return HttpResponseNotModified()

    monkeypatch.setattr(api.discovery, "HttpResponseNotModified", counting_not_modified)
    for _ in range(3):
        client = connect(active[1], cache=True)  # the SDK's default
        assert client.users().current().execute()["uuid"] == active[0].uuid
    assert list((tmp_path / "cache" / "arvados" / "discovery").iterdir())
    assert len(not_modified) == 2  # first build fetched, the next two revalidated


# --- the standard methods, per resource ---------------------------------------------------


def test_links_crud(as_active: Any, active: tuple[Any, str]) -> None:
    user = active[0]
    link = (
        as_active.links()
        .create(
            body={
                "link": {
                    "link_class": "tag",
                    "name": "sdk",
                    "head_uuid": user.uuid,
                    "properties": {"a": 1},
                }
            }
        )
        .execute()
    )
    assert link["kind"] == "arvados#link"
    assert link["owner_uuid"] == user.uuid
    got = as_active.links().get(uuid=link["uuid"]).execute()
    assert got["properties"] == {"a": 1}
    updated = (
        as_active.links().update(uuid=link["uuid"], body={"link": {"name": "renamed"}}).execute()
    )
    assert updated["name"] == "renamed"
    listed = as_active.links().list(filters=[["name", "=", "renamed"]]).execute()
    assert [i["uuid"] for i in listed["items"]] == [link["uuid"]]
    assert listed["kind"] == "arvados#linkList"
    assert listed["items_available"] == 1
    deleted = as_active.links().delete(uuid=link["uuid"]).execute()
    assert deleted["uuid"] == link["uuid"]
    assert api_error(as_active.links().get(uuid=link["uuid"])).resp.status == 404


def test_groups_crud(as_active: Any) -> None:
    group = (
        as_active.groups()
        .create(body={"group": {"name": "sdk project", "group_class": "project"}})
        .execute()
    )
    assert group["kind"] == "arvados#group"
    updated = (
        as_active.groups()
        .update(
            uuid=group["uuid"],
            body={"group": {"description": "from the SDK"}},
            select=["uuid", "description"],
        )
        .execute()
    )
    assert updated == {
        "kind": "arvados#group",
        "uuid": group["uuid"],
        "description": "from the SDK",
    }
    listed = as_active.groups().list(where={"name": "sdk project"}).execute()
    assert [i["uuid"] for i in listed["items"]] == [group["uuid"]]
    as_active.groups().delete(uuid=group["uuid"]).execute()
    assert as_active.groups().list(where={"name": "sdk project"}).execute()["items"] == []


def test_collections_crud(as_active: Any) -> None:
    coll = (
        as_active.collections()
        .create(body={"collection": {"name": "sdk empty", "manifest_text": ""}})
        .execute()
    )
    assert coll["kind"] == "arvados#collection"
    assert coll["portable_data_hash"] == "d41d8cd98f00b204e9800998ecf8427e+0"
    got = (
        as_active.collections()
        .get(uuid=coll["uuid"], select=["uuid", "name", "file_count"])
        .execute()
    )
    assert got == {
        "kind": "arvados#collection",
        "uuid": coll["uuid"],
        "name": "sdk empty",
        "file_count": 0,
    }
    as_active.collections().update(
        uuid=coll["uuid"], body={"collection": {"properties": {"k": "v"}}}
    ).execute()
    listed = (
        as_active.collections()
        .list(
            filters=[["portable_data_hash", "=", coll["portable_data_hash"]]],
            select=["uuid", "properties"],
        )
        .execute()
    )
    assert listed["items"] == [
        {"kind": "arvados#collection", "uuid": coll["uuid"], "properties": {"k": "v"}}
    ]
    as_active.collections().delete(uuid=coll["uuid"]).execute()
    assert api_error(as_active.collections().get(uuid=coll["uuid"])).resp.status == 404


def test_repositories_crud(as_active: Any, live_server: Any) -> None:
    repo = (
        as_active.repositories().create(body={"repository": {"name": "active/sdkrepo"}}).execute()
    )
    assert repo["kind"] == "arvados#repository"
    assert repo["clone_urls"] == [f"{live_server.url}/git/active/sdkrepo.git"]
    listed = as_active.repositories().list(filters=[["name", "=", "active/sdkrepo"]]).execute()
    assert [i["uuid"] for i in listed["items"]] == [repo["uuid"]]
    got = as_active.repositories().get(uuid=repo["uuid"]).execute()
    assert got["name"] == "active/sdkrepo"
    updated = (
        as_active.repositories()
        .update(uuid=repo["uuid"], body={"repository": {"name": "active/sdkrepo2"}})
        .execute()
    )
    assert updated["name"] == "active/sdkrepo2"
    as_active.repositories().delete(uuid=repo["uuid"]).execute()
    assert (
        as_active.repositories().list(filters=[["uuid", "=", repo["uuid"]]]).execute()["items"]
        == []
    )


def test_users_crud(as_admin: Any) -> None:
    user = (
        as_admin.users()
        .create(body={"user": {"username": "sdkuser", "email": "sdk@example.org"}})
        .execute()
    )
    assert user["kind"] == "arvados#user"
    assert as_admin.users().get(uuid=user["uuid"]).execute()["username"] == "sdkuser"
    updated = (
        as_admin.users()
        .update(uuid=user["uuid"], body={"user": {"first_name": "Sdk", "prefs": {"theme": "dark"}}})
        .execute()
    )
    assert updated["full_name"] == "Sdk"
    assert updated["prefs"] == {"theme": "dark"}
    listed = (
        as_admin.users()
        .list(filters=[["username", "=", "sdkuser"]], select=["uuid", "username"])
        .execute()
    )
    assert listed["items"] == [
        {"kind": "arvados#user", "uuid": user["uuid"], "username": "sdkuser"}
    ]
    as_admin.users().delete(uuid=user["uuid"]).execute()
    assert api_error(as_admin.users().get(uuid=user["uuid"])).resp.status == 404


# --- list parameters ------------------------------------------------------------------------


@pytest.fixture
def tags(as_active: Any, active: tuple[Any, str]) -> list[dict[str, Any]]:
    """Six `sdktag` links, created one after another (distinct created_at)."""
    made = []
    for i in range(6):
        made.append(
            as_active.links()
            .create(
                body={
                    "link": {
                        "link_class": "sdktag",
                        "name": f"tag{i % 3}",
                        "head_uuid": active[0].uuid,
                    }
                }
            )
            .execute()
        )
    return made


def test_list_parameters(as_active: Any, tags: list[dict[str, Any]]) -> None:
    mine = [["link_class", "=", "sdktag"]]
    page = (
        as_active.links()
        .list(
            filters=mine,
            order=["created_at asc"],
            limit=2,
            offset=1,
            select=["uuid", "name", "created_at"],
        )
        .execute()
    )
    assert [i["uuid"] for i in page["items"]] == [t["uuid"] for t in tags[1:3]]
    assert set(page["items"][0]) == {"kind", "uuid", "name", "created_at"}
    assert (page["limit"], page["offset"], page["items_available"]) == (2, 1, 6)

    # `order` as a plain string is sent verbatim (not JSON) and still understood.
    newest = (
        as_active.links()
        .list(filters=mine, order="created_at desc", limit=3, count="none")
        .execute()
    )
    assert [i["uuid"] for i in newest["items"]] == [t["uuid"] for t in reversed(tags[3:])]
    assert "items_available" not in newest

    where = as_active.links().list(where={"link_class": "sdktag", "name": "tag1"}).execute()
    assert {i["uuid"] for i in where["items"]} == {tags[1]["uuid"], tags[4]["uuid"]}

    # distinct=True travels as a JSON boolean (`true`) and is accepted; whole objects are
    # already distinct.
    names = as_active.links().list(filters=mine, distinct=True, order=["name asc"]).execute()
    assert [i["name"] for i in names["items"]] == ["tag0", "tag0", "tag1", "tag1", "tag2", "tag2"]
    assert len({i["uuid"] for i in names["items"]}) == 6
    assert as_active.links().list(filters=mine, distinct=False, limit=0).execute()["items"] == []


def test_long_list_is_sent_as_post_with_get_override(
    as_active: Any, tags: list[dict[str, Any]]
) -> None:
    """Over 2048 characters of URL, googleapiclient POSTs the query with
    `X-HTTP-Method-Override: GET`: the server must list, not create."""
    from jobs.models import Link

    before = Link.objects.count()
    fakes = [f"zzzzz-o0j2j-{i:015d}" for i in range(150)]
    request = as_active.links().list(
        filters=[["uuid", "in", [*fakes, tags[0]["uuid"], tags[5]["uuid"]]]],
        order=["created_at asc"],
        limit=10,
    )
    result = request.execute()
    assert request.method == "POST"
    assert request.headers["x-http-method-override"] == "GET"
    assert result["kind"] == "arvados#linkList"
    assert [i["uuid"] for i in result["items"]] == [tags[0]["uuid"], tags[5]["uuid"]]
    assert Link.objects.count() == before


def test_keyset_list_all_pages_through_everything(
    as_active: Any, tags: list[dict[str, Any]], settings: Any
) -> None:
    # keyset_list_all asks for 1000 at a time; a small server cap forces several pages.
    settings.CRUNCH_MAX_ITEMS_PER_RESPONSE = 4
    mine = [["link_class", "=", "sdktag"]]
    seen = list(arvados.util.keyset_list_all(as_active.links().list, filters=mine))
    assert [i["uuid"] for i in seen] == [t["uuid"] for t in tags]
    narrow = list(
        arvados.util.keyset_list_all(
            as_active.links().list,
            order_key="created_at",
            ascending=False,
            filters=mine,
            select=["name"],
        )
    )
    assert [i["uuid"] for i in narrow] == [t["uuid"] for t in reversed(tags)]
    assert {i["name"] for i in narrow} == {"tag0", "tag1", "tag2"}


# --- errors ----------------------------------------------------------------------------------


def test_validation_error_is_422_with_readable_reason(as_active: Any) -> None:
    err = api_error(as_active.links().create(body={"link": {"name": "no class"}}))
    assert err.resp.status == 422
    assert err.status_code == 422
    assert "link_class must be given" in err.reason
    assert err.reason.count(";") == len(json.loads(err.content)["errors"]) - 1


def test_bad_list_parameter_is_422(as_active: Any) -> None:
    err = api_error(as_active.links().list(filters=[["no_such_column", "=", "x"]]))
    assert err.resp.status == 422
    assert "no_such_column" in err.reason


def test_unknown_uuid_is_404(as_active: Any) -> None:
    err = api_error(as_active.links().get(uuid="zzzzz-o0j2j-000000000000000"))
    assert err.resp.status == 404
    assert err.reason == "Path not found"


def test_bad_token_is_401_but_the_client_builds(connect: Callable[..., Any], db: Any) -> None:
    api = connect("not-a-valid-token")  # the discovery document needs no token
    err = api_error(api.users().current())
    assert err.resp.status == 401
    assert err.reason == "Not logged in"


# --- jobs: described before they are served ---------------------------------------------------


def test_jobs_resource_builds_with_all_methods(as_active: Any) -> None:
    jobs = as_active.jobs()
    for name in (
        "create",
        "get",
        "list",
        "update",
        "delete",
        "cancel",
        "lock",
        "queue",
        "queue_size",
        "log_tail_follow",
    ):
        assert callable(getattr(jobs, name)), name
    uuid = "zzzzz-8i9sb-000000000000000"

    create = jobs.create(
        body={"job": {"script": "hash"}},
        find_or_create=True,
        filters=[["script", "=", "hash"]],
        minimum_script_version="abc",
        exclude_script_versions=["dead"],
        ensure_unique_name=False,
    )
    assert create.method == "POST"
    assert "find_or_create=true" in create.uri
    assert "filters=%5B%5B%22script%22" in create.uri  # JSON, not a Python repr
    assert "exclude_script_versions=%5B%22dead%22%5D" in create.uri
    assert "ensure_unique_name=false" in create.uri

    cancel = jobs.cancel(uuid=uuid, cascade=True)
    assert (cancel.method, cancel.uri.split("?")[0]) == (
        "POST",
        f"{as_active._rootDesc['baseUrl']}jobs/{uuid}/cancel",
    )
    assert "cascade=true" in cancel.uri

    follow = jobs.log_tail_follow(uuid=uuid, buffer_size=100)
    assert "alt=json" not in follow.uri  # raw bytes, not JSON
    assert "buffer_size=100" in follow.uri
    assert (
        jobs.queue(filters=[["priority", ">", "0"]], limit=5)
        .uri.split("?")[0]
        .endswith("jobs/queue")
    )
    with pytest.raises(TypeError):
        jobs.list(no_such_parameter=1)
