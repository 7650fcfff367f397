"""Spec §1.1, §1.4–§1.7 and §1.10: routing, object shape, bodies, errors."""

from __future__ import annotations

import json
import re

import pytest

from jobs.uuids import infix_for

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
ERROR_TOKEN_RE = re.compile(r"^\d+\+[0-9a-f]{8}$")
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("class_name", "infix"),
    [
        ("Job", "8i9sb"),
        ("Repository", "s0uqq"),
        ("Collection", "4zz18"),
        ("Link", "o0j2j"),
        ("User", "tpzed"),
        ("ApiClientAuthorization", "gj3su"),
        ("Node", "7ekkf"),
        ("Group", "j7d0g"),
        ("JobTask", "ot0gb"),
        ("PipelineInstance", "d1hrv"),
        ("PipelineTemplate", "p5p6p"),
        ("Log", "57u5n"),
        ("ApiClient", "ozdt8"),
    ],
)
def test_uuid_infix_derivation(class_name, infix):
    assert infix_for(class_name) == infix


def assert_error(status, data, expected_status, message=None):
    assert status == expected_status, data
    assert isinstance(data["errors"], list) and all(isinstance(m, str) for m in data["errors"])
    assert ERROR_TOKEN_RE.match(data["error_token"])
    for m in data["errors"]:
        assert not m.startswith("#<"), m
    if message is not None:
        assert message in data["errors"], data["errors"]


def test_object_shape(api, active):
    user, token = active
    link = api.ok(
        "POST",
        "links",
        body={"link": {"link_class": "tag", "name": "x", "head_uuid": user.uuid}},
        token=token,
    )
    assert list(link)[:9] == [
        "href",
        "kind",
        "etag",
        "uuid",
        "owner_uuid",
        "created_at",
        "modified_by_client_uuid",
        "modified_by_user_uuid",
        "modified_at",
    ]
    assert link["kind"] == "arvados#link"
    assert link["href"] == f"/links/{link['uuid']}"
    assert re.match(r"^zzzzz-o0j2j-[0-9a-z]{15}$", link["uuid"])
    assert TIME_RE.match(link["created_at"]) and TIME_RE.match(link["modified_at"])
    assert link["owner_uuid"] == user.uuid
    assert link["modified_by_user_uuid"] == user.uuid
    assert link["properties"] == {}  # a null hash is returned as {}
    # etag changes whenever a stored attribute changes
    updated = api.ok("PUT", f"links/{link['uuid']}", body={"link": {"name": "y"}}, token=token)
    assert updated["etag"] != link["etag"]
    assert updated["created_at"] == link["created_at"]


def test_client_bookkeeping_fields_are_discarded(api, active):
    _, token = active
    link = api.ok(
        "POST",
        "links",
        body={
            "link": {
                "link_class": "tag",
                "created_at": "2001-01-01T00:00:00Z",
                "modified_by_user_uuid": "zzzzz-tpzed-aaaaaaaaaaaaaaa",
                "kind": "x",
                "etag": "y",
                "href": "z",
            }
        },
        token=token,
    )
    assert not link["created_at"].startswith("2001")
    assert link["modified_by_user_uuid"] != "zzzzz-tpzed-aaaaaaaaaaaaaaa"


def test_unknown_attribute_is_422(api, active):
    _, token = active
    status, data = api.post("links", body={"link": {"link_class": "tag", "bogus": 1}}, token=token)
    assert_error(status, data, 422)
    assert "bogus" in data["errors"][0]


def test_body_object_may_be_a_json_string_or_form_field(api, active, client):
    _, token = active
    status, data = api.post("links", body={"link": json.dumps({"link_class": "tag"})}, token=token)
    assert status == 200 and data["link_class"] == "tag"
    response = client.post(
        "/arvados/v1/links",
        {"link": json.dumps({"link_class": "form"})},
        HTTP_AUTHORIZATION=f"OAuth2 {token}",
    )
    assert response.status_code == 200 and response.json()["link_class"] == "form"


@pytest.mark.parametrize("bad", [[1, 2], 3, "not json", '"a string"', None])
def test_missing_object_hash(api, active, bad):
    _, token = active
    body = {"link": bad} if bad is not None else {}
    status, data = api.post("links", body=body, token=token)
    assert_error(status, data, 422, "No link hash provided with request")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1]", "parameter properties must be a Hash"),
        ("nope", "parameter properties must be a Hash"),
        ([1], "properties parameter must be Hash, not array"),
        (5, "properties parameter must be Hash, not number"),
        ("", "parameter properties must be a Hash"),
    ],
)
def test_hash_attributes(api, active, value, message):
    _, token = active
    status, data = api.post(
        "links", body={"link": {"link_class": "t", "properties": value}}, token=token
    )
    assert_error(status, data, 422, message)


def test_hash_attribute_as_json_string_is_decoded_and_replaced_whole(api, active):
    _, token = active
    link = api.ok(
        "POST",
        "links",
        body={"link": {"link_class": "t", "properties": '{"a": 1, "b": 2}'}},
        token=token,
    )
    assert link["properties"] == {"a": 1, "b": 2}
    link = api.ok(
        "PUT", f"links/{link['uuid']}", body={"link": {"properties": {"c": 3}}}, token=token
    )
    assert link["properties"] == {"c": 3}


def test_string_too_long_is_422_not_500(api, active):
    _, token = active
    status, data = api.post("links", body={"link": {"link_class": "x" * 300}}, token=token)
    assert_error(status, data, 422)


def test_nul_in_string_is_422(api, active):
    _, token = active
    status, data = api.post("links", body={"link": {"link_class": "a\x00b"}}, token=token)
    assert_error(status, data, 422)


def test_malformed_json_body_is_422(client, active):
    _, token = active
    response = client.post(
        "/arvados/v1/links",
        data="{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert_error(response.status_code, response.json(), 422)


def test_json_body_that_is_not_an_object(client, active):
    _, token = active
    response = client.post(
        "/arvados/v1/links",
        data="[1,2]",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert_error(response.status_code, response.json(), 422)


def test_not_logged_in(api, db):
    assert_error(*api.get("links"), 401, "Not logged in")
    assert_error(*api.get("links", token="nonsense"), 401, "Not logged in")


def test_unknown_path_and_uuid_are_404(api, active):
    _, token = active
    assert_error(*api.get("nothing_here", token=token), 404, "Path not found")
    assert_error(*api.get("links/zzzzz-o0j2j-000000000000000", token=token), 404, "Path not found")
    assert_error(*api.get("links/12345", token=token), 404, "Path not found")
    assert_error(*api.get("/arvados/v1/links/a/b/c", token=token), 404, "Path not found")


def test_unsupported_verb_is_404(client, active):
    _, token = active
    response = client.put("/arvados/v1/links", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(response.status_code, response.json(), 404)


def test_disabled_method(api, active, settings):
    _, token = active
    settings.CRUNCH_DISABLE_API_METHODS = frozenset({"links.create"})
    assert_error(
        *api.post("links", body={"link": {"link_class": "t"}}, token=token), 404, "Disabled"
    )
    assert api.get("links", token=token)[0] == 200


def test_json_suffix(api, active):
    user, token = active
    assert api.get("/arvados/v1/users/current.json", token=token)[1]["uuid"] == user.uuid
    assert api.get("/arvados/v1/links.json", token=token)[0] == 200


def test_cors_and_options(client, active):
    _, token = active
    response = client.options("/arvados/v1/links")
    assert response.status_code == 200 and response.content == b""
    for r in (
        response,
        client.get("/arvados/v1/links", HTTP_AUTHORIZATION=f"Bearer {token}"),
        client.get("/arvados/v1/links"),
    ):
        assert r["Access-Control-Allow-Origin"] == "*"
        assert r["Access-Control-Allow-Methods"] == "GET, HEAD, PUT, POST, DELETE"
        assert r["Access-Control-Allow-Headers"] == "Authorization"
        assert r["Access-Control-Max-Age"] == "86486400"


def test_post_with_method_get_is_a_list(client, active):
    user, token = active
    filters = json.dumps([["uuid", "=", user.uuid]])
    r = client.post(
        f"/arvados/v1/users?_method=GET&filters={filters}", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert r.status_code == 200 and r.json()["kind"] == "arvados#userList"
    # The SDK's long-URL form: the query string in a form body, with the override header.
    body = f"filters={filters}&limit=5&alt=json"
    r = client.post(
        "/arvados/v1/users",
        data=body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_HTTP_METHOD_OVERRIDE="GET",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert r.status_code == 200, r.content
    assert [i["uuid"] for i in r.json()["items"]] == [user.uuid]
    assert r.json()["limit"] == 5
    body = f"_method=GET&filters={filters}"
    r = client.post(
        "/arvados/v1/users",
        data=body,
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert r.status_code == 200 and r.json()["items_available"] == 1


def test_uuid_assignment(api, active, admin):
    _, token = active
    _, admin_token = admin
    assert_error(
        *api.post(
            "links",
            body={"link": {"link_class": "t", "uuid": "zzzzz-o0j2j-abcdefghijklmno"}},
            token=token,
        ),
        422,
        "Uuid assignment not permitted",
    )
    assert_error(
        *api.post(
            "links",
            body={"link": {"link_class": "t", "uuid": "zzzzz-8i9sb-abcdefghijklmno"}},
            token=admin_token,
        ),
        422,
        "Uuid type field is '8i9sb', expected 'o0j2j'",
    )
    assert_error(
        *api.post("links", body={"link": {"link_class": "t", "uuid": "bad"}}, token=admin_token),
        422,
        'Uuid not a valid Arvados uuid "bad"',
    )
    link = api.ok(
        "POST",
        "links",
        body={"link": {"link_class": "t", "uuid": "zzzzz-o0j2j-abcdefghijklmno"}},
        token=admin_token,
    )
    assert link["uuid"] == "zzzzz-o0j2j-abcdefghijklmno"
    other = api.ok("POST", "links", body={"link": {"link_class": "t"}}, token=token)
    assert_error(
        *api.put(
            f"links/{other['uuid']}",
            body={"link": {"uuid": "zzzzz-o0j2j-bbbbbbbbbbbbbbb"}},
            token=token,
        ),
        422,
        "Uuid change not permitted",
    )


def test_delete_returns_the_object(api, active):
    _, token = active
    link = api.ok("POST", "links", body={"link": {"link_class": "t"}}, token=token)
    gone = api.ok("DELETE", f"links/{link['uuid']}", token=token)
    assert gone["uuid"] == link["uuid"]
    assert api.get(f"links/{link['uuid']}", token=token)[0] == 404


def test_get_with_select(api, active):
    user, token = active
    data = api.ok("GET", f"users/{user.uuid}", params={"select": ["uuid", "username"]}, token=token)
    assert data == {"kind": "arvados#user", "uuid": user.uuid, "username": "active"}
