"""Spec §1.2: where tokens come from, validity, scopes, reader tokens; the token command."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from jobs.models import ApiClientAuthorization
from jobs.services.tokens import token_create, token_hash
from tests.api.test_conventions import assert_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("header", ["Bearer {t}", "OAuth2 {t}", "bearer {t}"])
def test_authorization_header_schemes(client, active, header):
    user, token = active
    r = client.get("/arvados/v1/users/current", HTTP_AUTHORIZATION=header.format(t=token))
    assert r.status_code == 200 and r.json()["uuid"] == user.uuid


@pytest.mark.parametrize("name", ["api_token", "oauth_token"])
def test_token_parameter(client, active, name):
    user, token = active
    assert client.get("/arvados/v1/users/current", {name: token}).json()["uuid"] == user.uuid


def test_v2_token_form(client, active):
    user, token = active
    auth = ApiClientAuthorization.objects.get(token_hash=token_hash(token))
    r = client.get("/arvados/v1/users/current", HTTP_AUTHORIZATION=f"Bearer v2/{auth.uuid}/{token}")
    assert r.json()["uuid"] == user.uuid


def test_only_a_hash_is_stored(active):
    _, token = active
    for auth in ApiClientAuthorization.objects.all():
        assert token not in (auth.token_hash, auth.uuid)
    assert ApiClientAuthorization.objects.filter(token_hash=token_hash(token)).exists()


def test_expired_token(api, active):
    user, _ = active
    expired = token_create(user=user, expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert_error(*api.get("users/current", token=expired.api_token), 401, "Not logged in")
    fresh = token_create(user=user, expires_at=timezone.now() + dt.timedelta(hours=1))
    assert api.get("users/current", token=fresh.api_token)[0] == 200


def test_last_used_is_recorded(client, active):
    _, token = active
    client.get(
        "/arvados/v1/users/current", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_X_REAL_IP="10.1.2.3"
    )
    auth = ApiClientAuthorization.objects.get(token_hash=token_hash(token))
    assert auth.last_used_at is not None
    assert auth.last_used_by_ip_address == "10.1.2.3"


@pytest.mark.parametrize(
    ("scopes", "method", "path", "allowed"),
    [
        (["all"], "GET", "links", True),
        (["GET /arvados/v1/links"], "GET", "links", True),
        (["GET /arvados/v1/links"], "GET", "users/current", False),
        (["GET /arvados/v1/"], "GET", "users/current", True),
        (["GET /arvados/v1/"], "POST", "links", False),
        (["POST /arvados/v1/links"], "POST", "links", True),
        ([], "GET", "links", False),
    ],
)
def test_scopes(api, make_user, scopes, method, path, allowed):
    _, token = make_user("scoped", scopes=scopes)
    body = {"link": {"link_class": "t"}} if method == "POST" else None
    status, data = api.call(method, path, body=body, token=token)
    if allowed:
        assert status == 200, data
    else:
        assert_error(status, data, 403, "Forbidden")


def test_head_request_passes_a_get_scope(client, make_user):
    _, token = make_user("scoped", scopes=["GET /arvados/v1/links"])
    r = client.head("/arvados/v1/links", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 200


def test_reader_tokens_add_read_users(api, make_user):
    owner, owner_token = make_user("owner")
    _, reader_token = make_user("reader")
    link = api.ok("POST", "links", body={"link": {"link_class": "t"}}, token=owner_token)
    assert api.get(f"links/{link['uuid']}", token=reader_token)[0] == 404
    status, data = api.get(
        f"links/{link['uuid']}", params={"reader_tokens": [owner_token]}, token=reader_token
    )
    assert status == 200 and data["uuid"] == link["uuid"]
    listed = api.ok("GET", "links", params={"reader_tokens": [owner_token]}, token=reader_token)
    assert [i["uuid"] for i in listed["items"]] == [link["uuid"]]
    # a bogus reader token adds nothing
    listed = api.ok("GET", "links", params={"reader_tokens": ["bogus"]}, token=reader_token)
    assert listed["items"] == []


def test_token_resource(api, active, make_user):
    user, token = active
    scopes = ["GET /arvados/v1/users/", "GET /arvados/v1/api_client_authorizations/current"]
    created = api.ok(
        "POST",
        "api_client_authorizations",
        body={"api_client_authorization": {"scopes": scopes}},
        token=token,
    )
    new_token = created["api_token"]
    assert new_token and created["scopes"] == scopes
    assert_error(*api.get("links", token=new_token), 403)
    assert api.ok("GET", "users/current", token=new_token)["uuid"] == user.uuid
    current = api.ok("GET", "api_client_authorizations/current", token=new_token)
    assert current["uuid"] == created["uuid"] and current["api_token"] is None
    # tokens are visible to their own user only
    _, other_token = make_user("other")
    assert api.get(f"api_client_authorizations/{created['uuid']}", token=other_token)[0] == 404
    mine = api.ok("GET", "api_client_authorizations", token=token)
    assert {i["uuid"] for i in mine["items"]} >= {created["uuid"]}
    # revoking works
    api.ok("DELETE", f"api_client_authorizations/{created['uuid']}", token=token)
    assert_error(*api.get("users/current", token=new_token), 401)


def test_create_api_token_command_prints_only_the_token(api, db):
    out = io.StringIO()
    call_command("create_api_token", "carol", "--admin", stdout=out)
    token = out.getvalue().strip()
    assert "\n" not in token and len(token) >= 32
    data = api.ok("GET", "users/current", token=token)
    assert data["username"] == "carol" and data["is_admin"] is True
    out2 = io.StringIO()
    call_command("create_api_token", "carol", stdout=out2)
    assert out2.getvalue().strip() != token  # a new token for the same user
    assert api.ok("GET", "users/current", token=out2.getvalue().strip())["username"] == "carol"


def test_create_api_token_rejects_bad_usernames(db):
    from django.core.management.base import CommandError

    for bad in ("../x", "-rf", "a b", ""):
        with pytest.raises(CommandError):
            call_command("create_api_token", bad, stdout=io.StringIO())
