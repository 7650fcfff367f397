"""Keep over HTTP: block PUT/GET/HEAD at the server root with signatures (spec §6.1),
`keep_services`, collections signed for their reader, and collection files with ranges."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from django.urls import Resolver404, resolve

from jobs import manifests
from jobs.keep.blocks import EMPTY_MD5, locator_sign
from jobs.keep.store import BLOCK_MAX, get_store
from jobs.models import Collection
from jobs.services.tokens import token_hash
from tests.api.test_conventions import assert_error

pytestmark = pytest.mark.django_db

FOO, BAR = b"foo", b"bar"
FOO_MD5, BAR_MD5 = hashlib.md5(FOO).hexdigest(), hashlib.md5(BAR).hexdigest()


def auth(token: str | None) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}


def decoded(response: Any) -> Any:
    return json.loads(response.content) if response.content else None


def body_of(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def put_block(
    client: Any, token: str | None, data: bytes, md5: str | None = None, **extra: str
) -> Any:
    md5 = md5 or hashlib.md5(data).hexdigest()
    headers = auth(token) | extra
    return client.put(f"/{md5}", data=data, content_type="application/octet-stream", **headers)


def stored(client: Any, token: str, data: bytes) -> str:
    response = put_block(client, token, data, CONTENT_LENGTH=str(len(data)))
    assert response.status_code == 200, response.content
    return response.content.decode().strip()


def signed_for(token: str, locator: str, *, expiry: int | None = None) -> str:
    return locator_sign(locator=locator, token_id=token_hash(token), expiry=expiry)


# --- PUT ---------------------------------------------------------------------------------------


def test_put_answers_a_locator_signed_for_the_caller(client: Any, active: Any) -> None:
    _, token = active
    response = put_block(client, token, FOO)
    assert response.status_code == 200
    assert response["X-Keep-Replicas-Stored"] == "1"
    assert response["X-Keep-Storage-Classes-Confirmed"] == "default=1"
    locator = manifests.parse_locator(response.content.decode().strip())
    assert locator is not None and locator.portable == f"{FOO_MD5}+3"
    assert manifests.signature_valid(
        locator,
        token_id=token_hash(token),
        now=int(time.time()),
        key=__import__("django.conf").conf.settings.SECRET_KEY.encode(),
    )


def test_put_errors(client: Any, active: Any, make_user: Any) -> None:
    _, token = active
    assert_error(*_status(put_block(client, None, FOO)), 401)
    assert_error(*_status(put_block(client, "nope", FOO)), 401)
    mismatch = put_block(client, token, FOO, md5=BAR_MD5)
    assert_error(*_status(mismatch), 422)
    assert "Hash mismatch" in decoded(mismatch)["errors"][0]
    huge = client.put(
        f"/{FOO_MD5}",
        data=FOO,
        content_type="application/octet-stream",
        CONTENT_LENGTH=str(BLOCK_MAX + 1),
        **auth(token),
    )
    assert_error(*_status(huge), 413)
    no_length = client.generic(
        "PUT", f"/{FOO_MD5}", b"", CONTENT_LENGTH="", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert_error(*_status(no_length), 411)
    wrong_size = client.put(
        f"/{FOO_MD5}+4", data=FOO, content_type="application/octet-stream", **auth(token)
    )
    assert_error(*_status(wrong_size), 422)
    _, inactive = make_user("sleepy", active=False)
    assert_error(*_status(put_block(client, inactive, FOO)), 403)
    _, scoped = make_user("scoped", scopes=["GET /arvados/v1/users/current"])
    assert_error(*_status(put_block(client, scoped, FOO)), 403)
    # Nothing above stored anything.
    assert list(Path(get_store().root).glob("???/*")) == []  # type: ignore[attr-defined]


def _status(response: Any) -> tuple[int, Any]:
    return response.status_code, decoded(response)


# --- GET and HEAD ------------------------------------------------------------------------------


def test_get_and_head_need_a_signature_for_the_callers_token(
    client: Any, active: Any, spectator: Any
) -> None:
    _, token = active
    _, other = spectator
    locator = stored(client, token, FOO)
    got = client.get(f"/{locator}", **auth(token))
    assert got.status_code == 200 and body_of(got) == FOO
    assert got["Content-Type"] == "application/octet-stream"
    head = client.head(f"/{locator}", **auth(token))
    assert head.status_code == 200 and head["Content-Length"] == "3"

    assert_error(*_status(client.get(f"/{FOO_MD5}+3", **auth(token))), 403)  # unsigned
    assert_error(*_status(client.get(f"/{locator}", **auth(other))), 403)  # another's
    assert_error(*_status(client.get(f"/{locator}")), 401)  # no token
    expired = signed_for(token, f"{FOO_MD5}+3", expiry=int(time.time()) - 1)
    assert_error(*_status(client.get(f"/{expired}", **auth(token))), 403)
    forged = locator.split("+A")[0] + "+A" + "0" * 40 + "@" + locator.split("@")[1]
    assert_error(*_status(client.get(f"/{forged}", **auth(token))), 403)
    # A signature for the right token but another block proves nothing either.
    moved = f"{BAR_MD5}+3+A" + locator.split("+A")[1]
    assert_error(*_status(client.get(f"/{moved}", **auth(token))), 403)


def test_missing_and_corrupt_blocks(client: Any, active: Any) -> None:
    _, token = active
    missing = signed_for(token, f"{BAR_MD5}+3")
    assert_error(*_status(client.get(f"/{missing}", **auth(token))), 404)
    assert client.head(f"/{missing}", **auth(token)).status_code == 404

    locator = stored(client, token, FOO)
    store = get_store()
    (store.root / FOO_MD5[:3] / FOO_MD5).write_bytes(b"fob")  # type: ignore[attr-defined]
    broken = client.get(f"/{locator}", **auth(token))
    assert_error(*_status(broken), 422)
    assert decoded(broken)["errors"] == [
        f"Block {FOO_MD5} is corrupt in storage: its data does not match its hash"
    ]


def test_the_empty_block(client: Any, active: Any) -> None:
    _, token = active
    locator = stored(client, token, b"")
    assert locator.startswith(f"{EMPTY_MD5}+0+A")
    got = client.get(f"/{locator}", **auth(token))
    assert got.status_code == 200 and body_of(got) == b""


def test_routes_are_strict() -> None:
    assert resolve(f"/{FOO_MD5}").url_name == "keep-block"
    assert resolve(f"/{FOO_MD5}+3+A{'0' * 40}@00000000+K@zzzzz").url_name == "keep-block"
    for path in ("/admin/", "/discovery/v1/apis/arvados/v1/rest", "/arvados/v1/links"):
        assert resolve(path).url_name != "keep-block"
    for path in (f"/{FOO_MD5.upper()}", f"/{FOO_MD5[:31]}", f"/{FOO_MD5}/x", f"/{FOO_MD5}+a"):
        with pytest.raises(Resolver404):
            resolve(path)


# --- keep_services -----------------------------------------------------------------------------


def test_keep_services_accessible_is_this_server(
    api: Any, active: Any, settings: Any, client: Any
) -> None:
    _, token = active
    listed = api.ok("GET", "keep_services/accessible", token=token)
    assert listed["kind"] == "arvados#keepServiceList"
    [service] = listed["items"]
    assert service["kind"] == "arvados#keepService"
    assert service["uuid"] == f"{settings.CRUNCH_UUID_PREFIX}-bi6l4-000000000000000"
    assert (service["service_host"], service["service_port"]) == ("testserver", 80)
    assert (service["service_ssl_flag"], service["service_type"]) == (False, "proxy")
    assert service["read_only"] is False
    assert api.ok("GET", "keep_services", token=token)["items"] == [service]
    assert api.ok("GET", f"keep_services/{service['uuid']}", token=token) == service

    settings.CRUNCH_EXTERNAL_URL = "https://crunch.example.org:8443"
    [tls] = api.ok("GET", "keep_services/accessible", token=token)["items"]
    assert (tls["service_host"], tls["service_port"], tls["service_ssl_flag"]) == (
        "crunch.example.org",
        8443,
        True,
    )
    selected = api.ok(
        "GET", "keep_services/accessible", params={"select": ["service_port"]}, token=token
    )
    assert selected["items"] == [{"kind": "arvados#keepService", "service_port": 8443}]


def test_keep_services_are_not_configurable(api: Any, admin: Any) -> None:
    _, token = admin
    uuid = api.ok("GET", "keep_services", token=token)["items"][0]["uuid"]
    body = {"keep_service": {"service_host": "elsewhere"}}
    assert_error(*api.post("keep_services", body=body, token=token), 403)
    assert_error(*api.put(f"keep_services/{uuid}", body=body, token=token), 403)
    assert_error(*api.delete(f"keep_services/{uuid}", token=token), 403)
    assert_error(*api.get("keep_services/zzzzz-bi6l4-000000000000001", token=token), 404)
    filtered = api.get(
        "keep_services", params={"filters": [["service_type", "=", "disk"]]}, token=token
    )
    assert_error(*filtered, 422)
    assert_error(*api.get("keep_services/accessible"), 401)


def test_discovery_describes_keep(client: Any, settings: Any) -> None:
    settings.CRUNCH_BLOB_SIGNATURE_TTL = 3600
    doc = json.loads(client.get("/discovery/v1/apis/arvados/v1/rest").content)
    assert doc["blobSignatureTtl"] == 3600
    assert doc["defaultCollectionReplication"] == 1
    accessible = doc["resources"]["keep_services"]["methods"]["accessible"]
    assert (accessible["httpMethod"], accessible["path"]) == ("GET", "keep_services/accessible")
    properties = doc["schemas"]["KeepService"]["properties"]
    assert properties["service_port"]["type"] == "integer"
    assert properties["service_ssl_flag"]["type"] == "boolean"


# --- collections: signed for their reader ------------------------------------------------------


def test_manifests_are_signed_for_each_reader_and_stored_unsigned(
    api: Any, client: Any, active: Any, admin: Any
) -> None:
    _, token = active
    _, admin_token = admin
    locator = stored(client, token, FOO)
    created = api.ok(
        "POST",
        "collections",
        body={"collection": {"manifest_text": f". {locator} 0:3:foo.txt\n"}},
        token=token,
    )
    plain = f". {FOO_MD5}+3 0:3:foo.txt\n"
    assert Collection.objects.get(uuid=created["uuid"]).manifest_text == plain
    assert created["portable_data_hash"] == manifests.portable_data_hash(plain)

    def signed_locator(obj: dict[str, Any]) -> str:
        text = obj["manifest_text"]
        assert manifests.parse_manifest(text).portable_text == plain
        return str(text.split(" ")[1])

    for obj, who in [
        (created, token),
        (api.ok("GET", f"collections/{created['uuid']}", token=token), token),
        (api.ok("GET", "collections", token=token)["items"][0], token),
        (
            api.ok(
                "PUT",
                f"collections/{created['uuid']}",
                body={"collection": {"name": "renamed"}},
                token=token,
            ),
            token,
        ),
        (api.ok("GET", f"collections/{created['uuid']}", token=admin_token), admin_token),
    ]:
        block = signed_locator(obj)
        assert body_of(client.get(f"/{block}", **auth(who))) == FOO

    # The etag names the stored version, not the signatures of the moment.
    first = api.ok("GET", f"collections/{created['uuid']}", token=token)
    time.sleep(1.1)
    second = api.ok("GET", f"collections/{created['uuid']}", token=token)
    assert first["etag"] == second["etag"]
    assert first["manifest_text"] != second["manifest_text"]


def test_get_by_portable_data_hash(api: Any, client: Any, active: Any, spectator: Any) -> None:
    _, token = active
    _, other = spectator
    locator = stored(client, token, FOO)
    created = api.ok(
        "POST",
        "collections",
        body={"collection": {"manifest_text": f". {locator} 0:3:foo.txt\n"}},
        token=token,
    )
    pdh = created["portable_data_hash"]
    found = api.ok("GET", f"collections/{pdh}", token=token)
    assert set(found) == {"kind", "uuid", "portable_data_hash", "manifest_text", "trash_at"}
    assert found["uuid"] == found["portable_data_hash"] == pdh
    block = found["manifest_text"].split(" ")[1]
    assert body_of(client.get(f"/{block}", **auth(token))) == FOO
    # Hints are ignored, as in Arvados; a reader without a collection of that content sees
    # nothing.
    assert api.ok("GET", f"collections/{pdh}+Kzzzzz", token=token)["uuid"] == pdh
    assert_error(*api.get(f"collections/{pdh}", token=other), 404)
    narrowed = api.ok("GET", f"collections/{pdh}", params={"select": ["uuid"]}, token=token)
    assert narrowed == {"kind": "arvados#collection", "uuid": pdh}


def test_signatures_end_when_the_collection_is_trashed(api: Any, client: Any, active: Any) -> None:
    _, token = active
    locator = stored(client, token, FOO)
    trash_at = time.time() + 600
    created = api.ok(
        "POST",
        "collections",
        body={
            "collection": {
                "manifest_text": f". {locator} 0:3:foo.txt\n",
                "trash_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(trash_at)),
            }
        },
        token=token,
    )
    expiry = int(created["manifest_text"].split("@")[1].split(" ")[0], 16)
    assert expiry <= trash_at


def test_another_users_locators_are_refused(api: Any, client: Any, active: Any, spectator: Any):
    _, token = active
    _, other = spectator
    mine = stored(client, token, FOO)
    for manifest in (f". {mine} 0:3:foo.txt\n", f". {FOO_MD5}+3 0:3:foo.txt\n"):
        status, data = api.post(
            "collections", body={"collection": {"manifest_text": manifest}}, token=other
        )
        assert_error(status, data, 422)
        assert "is not signed for this token" in data["errors"][0]


def test_empty_files_and_directories_need_no_signature(api: Any, active: Any) -> None:
    """As in Arvados: the empty block holds no data, and arv-put leaves it unsigned."""
    _, token = active
    text = (
        ". d41d8cd98f00b204e9800998ecf8427e+0 0:0:empty\n"
        "./dir d41d8cd98f00b204e9800998ecf8427e+0 0:0:\\056\n"
    )
    created = api.ok(
        "POST", "collections", body={"collection": {"manifest_text": text}}, token=token
    )
    assert created["file_count"] == 1


def test_sdk_style_bare_attributes_body(api: Any, active: Any) -> None:
    """The SDK's Collection.save_new() sends the attributes without the `collection` key."""
    _, token = active
    created = api.ok(
        "POST",
        "collections",
        params={"ensure_unique_name": "true"},
        body={"manifest_text": "", "name": "bare", "replication_desired": None},
        token=token,
    )
    assert created["name"] == "bare"


# --- collection files --------------------------------------------------------------------------


@pytest.fixture
def two_block_file(api: Any, client: Any, active: Any) -> dict[str, Any]:
    """`dir/data.json` spans two blocks (foo + bar); `dir/other` shares the second one."""
    _, token = active
    foo, bar = stored(client, token, FOO), stored(client, token, BAR)
    text = f"./dir {foo} {bar} 0:6:data.json 3:2:other\n"
    return api.ok("POST", "collections", body={"collection": {"manifest_text": text}}, token=token)


def file_get(client: Any, url: str, token: str | None, **headers: str) -> Any:
    return client.get(url, **auth(token), **headers)


def test_files_whole_and_ranges(client: Any, active: Any, two_block_file: dict[str, Any]) -> None:
    _, token = active
    for identifier in (two_block_file["uuid"], two_block_file["portable_data_hash"]):
        url = f"/arvados/v1/collections/{identifier}/files/dir/data.json"
        whole = file_get(client, url, token)
        assert whole.status_code == 200 and body_of(whole) == b"foobar"
        assert whole["Content-Length"] == "6" and whole["Accept-Ranges"] == "bytes"
        assert whole["Content-Type"] == "application/json"  # `.json` is the file's name
        assert whole["Content-Security-Policy"] == "sandbox"
        assert whole["X-Content-Type-Options"] == "nosniff"
        for header, status, body, content_range in [
            ("bytes=2-3", 206, b"ob", "bytes 2-3/6"),
            ("bytes=4-", 206, b"ar", "bytes 4-5/6"),
            ("bytes=-4", 206, b"obar", "bytes 2-5/6"),
            ("bytes=1-100", 206, b"oobar", "bytes 1-5/6"),
            ("bytes=0-0,2-3", 200, b"foobar", None),  # several ranges: the whole file
            ("lines=1-2", 200, b"foobar", None),
        ]:
            part = file_get(client, url, token, HTTP_RANGE=header)
            assert (part.status_code, body_of(part)) == (status, body), header
            assert part.get("Content-Range") == content_range
        unsatisfiable = file_get(client, url, token, HTTP_RANGE="bytes=6-")
        assert unsatisfiable.status_code == 416
        assert unsatisfiable["Content-Range"] == "bytes */6"
    head = client.head(
        f"/arvados/v1/collections/{two_block_file['uuid']}/files/dir/other", **auth(token)
    )
    assert head.status_code == 200 and head["Content-Length"] == "2"


def test_files_errors_and_token_parameter(
    client: Any, active: Any, spectator: Any, two_block_file: dict[str, Any]
) -> None:
    _, token = active
    _, other = spectator
    base = f"/arvados/v1/collections/{two_block_file['uuid']}/files"
    by_param = client.get(f"{base}/dir/other", {"api_token": token})
    assert by_param.status_code == 200 and body_of(by_param) == b"ba"
    assert_error(*_status(client.get(f"{base}/dir/other")), 401)
    assert_error(*_status(client.get(f"{base}/dir/other", **auth(other))), 404)
    assert_error(*_status(client.get(f"{base}/dir/nope", **auth(token))), 404)
    assert_error(*_status(client.get(f"{base}/dir", **auth(token))), 422)
    assert_error(*_status(client.get(f"{base}/dir/../dir/other", **auth(token))), 422)
    assert_error(*_status(client.post(f"{base}/dir/other", **auth(token))), 404)


def test_files_damaged_block_stops_the_transfer(
    client: Any, active: Any, two_block_file: dict[str, Any]
) -> None:
    from jobs.keep.blocks import BlockCorrupt

    _, token = active
    store = get_store()
    url = f"/arvados/v1/collections/{two_block_file['uuid']}/files/dir/data.json"
    (store.root / BAR_MD5[:3] / BAR_MD5).write_bytes(b"baz")  # type: ignore[attr-defined]
    # The first block is fine, so the answer starts; the damaged second block ends it early.
    response = file_get(client, url, token)
    assert response.status_code == 200
    with pytest.raises(BlockCorrupt):
        body_of(response)
    # Damage in the first block is found before anything is sent.
    (store.root / FOO_MD5[:3] / FOO_MD5).write_bytes(b"fob")  # type: ignore[attr-defined]
    assert_error(*_status(file_get(client, url, token)), 422)


# --- under the production server (uvicorn, ASGI) -----------------------------------------------


def raw_request(server: Any, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    import http.client
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, port = server.host.split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if body and "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            headers = headers | {"Content-Length": str(len(body))}
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def test_oversized_and_unsized_uploads_are_refused_unread(crunch_tls_server: Any) -> None:
    token = crunch_tls_server.tokens["alice"]
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(BLOCK_MAX + 1)}
    # No body is sent at all: the answer must come from the headers alone.
    status, _, body = raw_request(crunch_tls_server, "PUT", f"/{FOO_MD5}", headers)
    assert status == 413 and "at most 67108864 bytes" in json.loads(body)["errors"][0]
    chunked = {"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"}
    status, _, body = raw_request(
        crunch_tls_server, "PUT", f"/{FOO_MD5}", chunked, b"3\r\nfoo\r\n0\r\n\r\n"
    )
    assert status == 411 and json.loads(body)["errors"] == [
        "A block upload needs a Content-Length header"
    ]


def test_block_and_file_round_trip_under_asgi(crunch_tls_server: Any) -> None:
    token = crunch_tls_server.tokens["alice"]
    data = bytes(range(256)) * 4096  # 1 MiB: several chunks each way
    md5 = hashlib.md5(data).hexdigest()
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(len(data))}
    status, answer_headers, body = raw_request(crunch_tls_server, "PUT", f"/{md5}", headers, data)
    assert status == 200 and answer_headers["x-keep-replicas-stored"] == "1"
    locator = body.decode().strip()
    auth_only = {"Authorization": f"Bearer {token}"}
    status, _, body = raw_request(crunch_tls_server, "GET", f"/{locator}", auth_only)
    assert status == 200 and body == data

    manifest = json.dumps({"collection": {"manifest_text": f". {locator} 0:{len(data)}:f.bin\n"}})
    status, _, body = raw_request(
        crunch_tls_server,
        "POST",
        "/arvados/v1/collections",
        auth_only | {"Content-Type": "application/json"},
        manifest.encode(),
    )
    assert status == 200, body
    uuid = json.loads(body)["uuid"]
    url = f"/arvados/v1/collections/{uuid}/files/f.bin"
    status, _, body = raw_request(crunch_tls_server, "GET", url, auth_only)
    assert status == 200 and body == data
    status, got_headers, body = raw_request(
        crunch_tls_server, "GET", url, auth_only | {"Range": "bytes=1000-1999"}
    )
    assert (status, body) == (206, data[1000:2000])
    assert got_headers["content-range"] == f"bytes 1000-1999/{len(data)}"


def test_asgi_reads_follow_the_rules_and_send_every_chunk(crunch_tls_server: Any) -> None:
    """Under `crunch serve` block reads do not go through Django: the same rules, answers
    in the Arvados envelope, and a block of several send chunks arrives whole."""
    alice, bob = crunch_tls_server.tokens["alice"], crunch_tls_server.tokens["bob"]
    data = os.urandom(5 * 1024 * 1024 // 2)  # 2.5 MiB: two whole chunks and a part
    md5 = hashlib.md5(data).hexdigest()
    headers = {"Authorization": f"Bearer {alice}", "Content-Length": str(len(data))}
    status, _, body = raw_request(crunch_tls_server, "PUT", f"/{md5}", headers, data)
    assert status == 200, body
    locator = body.decode().strip()
    status, got, body = raw_request(
        crunch_tls_server, "GET", f"/{locator}", {"Authorization": f"Bearer {alice}"}
    )
    assert status == 200 and body == data
    assert got["content-length"] == str(len(data))
    assert got["content-type"] == "application/octet-stream"
    assert got["access-control-allow-origin"] == "*"
    for who, path, expected in (
        ({"Authorization": f"Bearer {bob}"}, f"/{locator}", 403),  # signed for another
        ({"Authorization": f"Bearer {alice}"}, f"/{md5}+{len(data)}", 403),  # unsigned
        ({}, f"/{locator}", 401),  # no token
    ):
        status, got, body = raw_request(crunch_tls_server, "GET", path, who)
        assert status == expected, body
        assert json.loads(body)["errors"] and got["access-control-allow-origin"] == "*"
    # HEAD still answers the size, through Django.
    status, got, body = raw_request(
        crunch_tls_server, "HEAD", f"/{locator}", {"Authorization": f"Bearer {alice}"}
    )
    assert (status, got["content-length"], body) == (200, str(len(data)), b"")


# --- uploading one file ------------------------------------------------------------------------


def upload(client: Any, token: str | None, identifier: str, path: str, data: bytes) -> Any:
    return client.put(
        f"/arvados/v1/collections/{identifier}/files/{path}",
        data=data,
        content_type="application/octet-stream",
        CONTENT_LENGTH=str(len(data)),
        **auth(token),
    )


def test_upload_adds_and_replaces_files(
    client: Any, api: Any, active: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.keep.collections

    _, token = active
    coll = api.ok("POST", "collections", body={"collection": {"name": "up"}}, token=token)
    uuid = coll["uuid"]
    monkeypatch.setattr(jobs.keep.collections, "BLOCK_MAX", 4)  # small blocks: several per file
    first = upload(client, token, uuid, "dir/a file.txt", b"hello world")
    assert first.status_code == 200, first.content
    updated = decoded(first)
    assert updated["uuid"] == uuid and updated["file_count"] == 1
    text = updated["manifest_text"]
    assert text.count("+A") == 3  # three blocks, each signed for the uploader
    assert manifests.normalize_manifest(text) == text
    assert upload(client, token, uuid, "empty", b"").status_code == 200
    replaced = decoded(upload(client, token, uuid, "dir/a file.txt", b"bye"))
    assert (replaced["file_count"], replaced["file_size_total"]) == (2, 3)
    stored = Collection.objects.get(uuid=uuid).manifest_text
    assert stored == (
        ". d41d8cd98f00b204e9800998ecf8427e+0 0:0:empty\n"
        f"./dir {hashlib.md5(b'bye').hexdigest()}+3 0:3:a\\040file.txt\n"
    )
    got = client.get(f"/arvados/v1/collections/{uuid}/files/dir/a%20file.txt", **auth(token))
    assert body_of(got) == b"bye"


def test_upload_refusals(
    client: Any, api: Any, active: Any, spectator: Any, two_block_file: dict[str, Any]
) -> None:
    _, token = active
    _, other = spectator
    uuid = two_block_file["uuid"]
    assert_error(*_status(upload(client, token, uuid, "dir", b"x")), 422)  # a directory
    assert_error(*_status(upload(client, token, uuid, "dir/data.json/x", b"x")), 422)
    assert_error(*_status(upload(client, token, uuid, "a/../b", b"x")), 422)
    pdh = two_block_file["portable_data_hash"]
    assert_error(*_status(upload(client, token, pdh, "new", b"x")), 422)
    assert_error(*_status(upload(client, other, uuid, "new", b"x")), 404)  # cannot read it
    api.ok(
        "POST",
        "links",
        body={
            "link": {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": spectator[0].uuid,
                "head_uuid": uuid,
            }
        },
        token=token,
    )
    assert_error(*_status(upload(client, other, uuid, "new", b"x")), 403)  # reads only
    assert Collection.objects.get(uuid=uuid).file_count == 2


def test_asgi_uploads_are_checked_before_and_after_the_body(crunch_tls_server: Any) -> None:
    token = crunch_tls_server.tokens["alice"]
    staging = crunch_tls_server.data_dir / "keep" / "tmp"
    # Refused from the headers alone: a client waiting for 100 Continue sends nothing.
    headers = {"Content-Length": "3", "Expect": "100-continue"}
    status, _, body = raw_request(crunch_tls_server, "PUT", f"/{FOO_MD5}", headers)
    assert status == 401 and json.loads(body)["errors"] == ["Not logged in"]
    mismatch = {"Authorization": f"Bearer {token}", "Content-Length": "3"}
    status, _, body = raw_request(crunch_tls_server, "PUT", f"/{BAR_MD5}", mismatch, FOO)
    assert status == 422 and "Hash mismatch" in json.loads(body)["errors"][0]
    assert list(staging.iterdir()) == []


def test_asgi_upload_cut_short_leaves_nothing(crunch_tls_server: Any) -> None:
    import socket
    import ssl

    token = crunch_tls_server.tokens["alice"]
    host, port = crunch_tls_server.host.split(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    md5 = hashlib.md5(b"x" * 100_000).hexdigest()
    with socket.create_connection((host, int(port))) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(
                f"PUT /{md5} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Length: 100000\r\n\r\n".encode()
                + b"x" * 50_000
            )
            time.sleep(0.5)  # the server has taken the first half in
    staging = crunch_tls_server.data_dir / "keep" / "tmp"
    deadline = time.monotonic() + 10
    while list(staging.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(staging.iterdir()) == []
    assert not (crunch_tls_server.data_dir / "keep" / md5[:3] / md5).exists()
