"""Collections as records: strict manifests, portable data hashes (spec §6.1), signatures."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from jobs import manifests
from jobs.models import ApiClientAuthorization
from jobs.services.tokens import token_hash
from tests.api.test_conventions import assert_error

pytestmark = pytest.mark.django_db

BAR = ". 37b51d194a7513e45b56f6524f2d51f2+3 0:3:bar\n"


def test_pdh_examples():
    assert manifests.portable_data_hash("") == "d41d8cd98f00b204e9800998ecf8427e+0"
    assert manifests.portable_data_hash(BAR) == "fa7aeb5140e2848d39b416daeef4ffc5+45"
    signed = ". 37b51d194a7513e45b56f6524f2d51f2+3+A" + "0" * 40 + "@5f5e1000+K@zzzzz 0:3:bar\n"
    assert manifests.portable_data_hash(signed) == "fa7aeb5140e2848d39b416daeef4ffc5+45"


def test_admin_creates_any_valid_manifest(api, admin):
    _, token = admin
    c = api.ok(
        "POST", "collections", body={"collection": {"manifest_text": BAR, "name": "b"}}, token=token
    )
    assert c["portable_data_hash"] == "fa7aeb5140e2848d39b416daeef4ffc5+45"
    assert (c["file_count"], c["file_size_total"]) == (1, 3)
    found = api.ok(
        "GET",
        "collections",
        params={"filters": [["portable_data_hash", "=", c["portable_data_hash"]]]},
        token=token,
    )
    assert [i["uuid"] for i in found["items"]] == [c["uuid"]]


def test_supplied_pdh_must_match(api, admin):
    _, token = admin
    status, data = api.post(
        "collections",
        body={
            "collection": {
                "manifest_text": BAR,
                "portable_data_hash": "d41d8cd98f00b204e9800998ecf8427e+0",
            }
        },
        token=token,
    )
    assert_error(status, data, 422)
    ok = api.ok(
        "POST",
        "collections",
        body={
            "collection": {
                "manifest_text": BAR,
                "portable_data_hash": "fa7aeb5140e2848d39b416daeef4ffc5+45",
            }
        },
        token=token,
    )
    assert ok["portable_data_hash"] == "fa7aeb5140e2848d39b416daeef4ffc5+45"


@pytest.mark.parametrize(
    "manifest",
    [
        ". 37b51d194a7513e45b56f6524f2d51f2+3 0:3:bar",  # no final newline
        "./.. 37b51d194a7513e45b56f6524f2d51f2+3 0:3:bar\n",
        "./a/../b 37b51d194a7513e45b56f6524f2d51f2+3 0:3:bar\n",
        ". 37b51d194a7513e45b56f6524f2d51f2+3 0:3:..\n",
        ". 37b51d194a7513e45b56f6524f2d51f2+3 0:3:a/../b\n",
        ". 37b51d194a7513e45b56f6524f2d51f2+3 0:3:a\\001b\n",
        "foo 37b51d194a7513e45b56f6524f2d51f2+3 0:3:bar\n",
        ". 37b51d194a7513e45b56f6524f2d51f2 0:3:bar\n",  # no size
        ". 37b51d194a7513e45b56f6524f2d51f2+3 0:4:bar\n",  # past the end
        ". 0:3:bar\n",
        ". 37b51d194a7513e45b56f6524f2d51f2+3\n",
        ". 37b51d194a7513e45b56f6524f2d51f2+3  0:3:bar\n",
        "./a\tb 37b51d194a7513e45b56f6524f2d51f2+3 0:3:bar\n",
        ". zz 0:3:bar\n",
    ],
)
def test_invalid_manifests(api, admin, manifest):
    _, token = admin
    status, data = api.post(
        "collections", body={"collection": {"manifest_text": manifest}}, token=token
    )
    assert_error(status, data, 422)


def test_escaped_names_and_subdirectories_are_fine(api, admin):
    _, token = admin
    text = "./a\\040dir 37b51d194a7513e45b56f6524f2d51f2+3 0:3:my\\040file 0:0:empty\n"
    c = api.ok("POST", "collections", body={"collection": {"manifest_text": text}}, token=token)
    assert c["file_count"] == 2


def test_non_admin_needs_signed_locators(api, active):
    _, token = active
    assert_error(
        *api.post("collections", body={"collection": {"manifest_text": BAR}}, token=token), 422
    )
    token_id = ApiClientAuthorization.objects.get(token_hash=token_hash(token)).token_hash
    loc = manifests.parse_locator("37b51d194a7513e45b56f6524f2d51f2+3")
    key = settings.SECRET_KEY.encode()
    signed = manifests.sign_locator(loc, token_id=token_id, expiry=int(time.time()) + 600, key=key)
    c = api.ok(
        "POST",
        "collections",
        body={"collection": {"manifest_text": f". {signed} 0:3:bar\n"}},
        token=token,
    )
    assert c["portable_data_hash"] == "fa7aeb5140e2848d39b416daeef4ffc5+45"
    # expired and forged signatures are refused
    expired = manifests.sign_locator(loc, token_id=token_id, expiry=int(time.time()) - 1, key=key)
    forged = manifests.sign_locator(
        loc, token_id="someone-else", expiry=int(time.time()) + 600, key=key
    )
    for bad in (expired, forged):
        assert_error(
            *api.post(
                "collections",
                body={"collection": {"manifest_text": f". {bad} 0:3:bar\n"}},
                token=token,
            ),
            422,
        )


def test_empty_collection_for_anyone(api, active):
    _, token = active
    c = api.ok("POST", "collections", body={"collection": {"name": "empty"}}, token=token)
    assert c["portable_data_hash"] == "d41d8cd98f00b204e9800998ecf8427e+0"
