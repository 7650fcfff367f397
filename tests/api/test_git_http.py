"""Git smart HTTP at /git/<name>.git/ with real `git clone`/`git push` against the live
server: tokens as passwords, read permission to clone, write permission to push."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from jobs import git
from tests.git_helpers import build_example, client_env, in_bare, join_server_threads, run_git


def basic(token: str, user: str = "x") -> dict[str, str]:
    value = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {value}"}


class Server:
    def __init__(self, live_server: Any, tmp_path: Path) -> None:
        self.url = live_server.url
        self.netloc = urlsplit(live_server.url).netloc
        self.env = client_env(tmp_path / "client-home")
        self.tmp = tmp_path

    def repo_url(self, token: str | None, name: str = "active/foo") -> str:
        creds = f"x:{token}@" if token is not None else ""
        return f"http://{creds}{self.netloc}/git/{name}.git"

    def clone(self, url: str, dest: str) -> Any:
        return run_git(self.env, "clone", "-q", url, str(self.tmp / dest), check=False)


@pytest.fixture
def server(live_server: Any, tmp_path: Path) -> Iterator[Server]:
    yield Server(live_server, tmp_path)
    join_server_threads()


@pytest.fixture
def foo(api: Any, active: tuple[Any, str], server: Server) -> dict[str, Any]:
    """`active/foo`, created through the API and filled with the example by `git push`."""
    user, token = active
    created = api.ok(
        "POST", "repositories", body={"repository": {"name": "active/foo"}}, token=token
    )
    example = build_example(server.tmp / "example")
    # The clone URL the API hands out is the one git uses.
    got = requests.get(
        f"{server.url}/arvados/v1/repositories/{created['uuid']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    clone_url = got.json()["clone_urls"][0]
    assert clone_url == f"{server.url}/git/active/foo.git"
    push_url = clone_url.replace("http://", f"http://x:{token}@")
    example.git("push", "-q", push_url, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
    return {"user": user, "token": token, "uuid": created["uuid"], "example": example}


def link(api: Any, owner_token: str, user: Any, head_uuid: str, name: str) -> None:
    api.ok(
        "POST",
        "links",
        token=owner_token,
        body={
            "link": {
                "link_class": "permission",
                "name": name,
                "tail_uuid": user.uuid,
                "head_uuid": head_uuid,
            }
        },
    )


def test_owner_push_and_clone(server: Server, foo: dict[str, Any]) -> None:
    ex = foo["example"]
    bare = git.repository_path(foo["uuid"])
    pushed = run_git(ex.env, f"--git-dir={bare}", "rev-parse", "b1", "master", "tag1").stdout
    assert pushed.split() == [ex.c4, ex.c3, ex.c2]
    proc = server.clone(server.repo_url(foo["token"]), "owner-clone")
    assert proc.returncode == 0, proc.stderr
    cloned = server.tmp / "owner-clone"
    assert run_git(
        server.env, "rev-parse", "origin/b1", "origin/master", "tag1", cwd=cloned
    ).stdout.split() == [ex.c4, ex.c3, ex.c2]
    remote = run_git(server.env, "ls-remote", server.repo_url(foo["token"])).stdout
    assert f"{ex.c4}\trefs/heads/b1" in remote
    assert f"{ex.c3}\trefs/heads/master" in remote
    assert f"{ex.c2}\trefs/tags/tag1" in remote
    # A fetch after a new push brings the new commit.
    ex.git("checkout", "-q", "b1")
    c5 = ex.commit("C5", 1_500_000_240)
    ex.git("push", "-q", server.repo_url(foo["token"]), "b1")
    run_git(server.env, "fetch", "-q", "origin", cwd=cloned)
    assert run_git(server.env, "rev-parse", "origin/b1", cwd=cloned).stdout.strip() == c5


def test_clone_with_can_read_permission(
    server: Server, foo: dict[str, Any], api: Any, make_user: Any
) -> None:
    reader, reader_token = make_user("reader")
    proc = server.clone(server.repo_url(reader_token), "denied-clone")
    assert proc.returncode != 0
    assert "not found" in proc.stderr.lower() or "404" in proc.stderr
    link(api, foo["token"], reader, foo["uuid"], "can_read")
    proc = server.clone(server.repo_url(reader_token), "reader-clone")
    assert proc.returncode == 0, proc.stderr
    head = run_git(server.env, "rev-parse", "origin/master", cwd=server.tmp / "reader-clone")
    assert head.stdout.strip() == foo["example"].c3

    # Reading is not writing: the push is refused with 403 and nothing changes.
    ex = foo["example"]
    ex.git("checkout", "-q", "b1")
    ex.commit("not allowed", 1_500_000_300)
    proc = ex.git("push", "-q", server.repo_url(reader_token), "b1", check=False)
    assert proc.returncode != 0
    assert "403" in proc.stderr
    remote = run_git(server.env, "ls-remote", server.repo_url(foo["token"]), "b1").stdout
    assert remote.split()[0] == ex.c4
    status = api.client.get(
        "/git/active/foo.git/info/refs", {"service": "git-receive-pack"}, **basic(reader_token)
    )
    assert status.status_code == 403

    # can_write lets them push.
    link(api, foo["token"], reader, foo["uuid"], "can_write")
    proc = ex.git("push", "-q", server.repo_url(reader_token), "b1", check=False)
    assert proc.returncode == 0, proc.stderr


def test_no_permission_looks_missing(
    server: Server, foo: dict[str, Any], api: Any, make_user: Any
) -> None:
    _, stranger_token = make_user("stranger")
    proc = server.clone(server.repo_url(stranger_token), "stranger-clone")
    assert proc.returncode != 0
    assert not (server.tmp / "stranger-clone").exists()
    for query in ({"service": "git-upload-pack"}, {"service": "git-receive-pack"}):
        response = api.client.get("/git/active/foo.git/info/refs", query, **basic(stranger_token))
        assert response.status_code == 404
    response = api.client.get(
        "/git/active/nosuch.git/info/refs", {"service": "git-upload-pack"}, **basic(foo["token"])
    )
    assert response.status_code == 404


def test_bad_credentials(server: Server, foo: dict[str, Any], api: Any) -> None:
    proc = server.clone(server.repo_url("0" * 50), "bad-token-clone")
    assert proc.returncode != 0
    assert "Authentication failed" in proc.stderr
    proc = server.clone(server.repo_url(None), "anonymous-clone")
    assert proc.returncode != 0
    for headers in (
        {},
        basic("0" * 50),
        {"HTTP_AUTHORIZATION": "Basic !!!"},
        {"HTTP_AUTHORIZATION": "Bearer nope"},
        basic(""),
    ):
        response = api.client.get(
            "/git/active/foo.git/info/refs", {"service": "git-upload-pack"}, **headers
        )
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Basic realm="crunch git"'


def test_token_header_schemes(foo: dict[str, Any], api: Any) -> None:
    for headers in (
        basic(foo["token"]),
        basic(foo["token"], user="anything-at-all"),
        basic("", user=foo["token"]),  # token as the user name, empty password
        {"HTTP_AUTHORIZATION": f"Bearer {foo['token']}"},
        {"HTTP_AUTHORIZATION": f"OAuth2 {foo['token']}"},
    ):
        response = api.client.get(
            "/git/active/foo.git/info/refs", {"service": "git-upload-pack"}, **headers
        )
        assert response.status_code == 200
        assert response["Content-Type"] == "application/x-git-upload-pack-advertisement"
        body = b"".join(response.streaming_content)
        assert f"{foo['example'].c4} refs/heads/b1".encode() in body


def test_protocol_v2_header_is_passed(foo: dict[str, Any], api: Any) -> None:
    response = api.client.get(
        "/git/active/foo.git/info/refs",
        {"service": "git-upload-pack"},
        HTTP_GIT_PROTOCOL="version=2",
        **basic(foo["token"]),
    )
    assert response.status_code == 200
    assert b"version 2" in b"".join(response.streaming_content)


def pkt(line: str) -> bytes:
    return f"{len(line) + 4:04x}{line}".encode()


@pytest.mark.parametrize("compressed", [False, True])
def test_upload_pack_request_body(foo: dict[str, Any], api: Any, compressed: bool) -> None:
    """A protocol-v0 fetch by hand, plain and with `Content-Encoding: gzip`."""
    request = pkt(f"want {foo['example'].c3}\n") + b"0000" + pkt("done\n")
    extra = {"HTTP_CONTENT_ENCODING": "gzip"} if compressed else {}
    response = api.client.post(
        "/git/active/foo.git/git-upload-pack",
        data=gzip.compress(request) if compressed else request,
        content_type="application/x-git-upload-pack-request",
        **extra,
        **basic(foo["token"]),
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-git-upload-pack-result"
    body = b"".join(response.streaming_content)
    assert body.startswith(b"0008NAK\n")
    assert b"PACK" in body


def test_push_needs_an_active_user(server: Server, foo: dict[str, Any], api: Any) -> None:
    user = foo["user"]
    user.is_active = False
    user.save()
    response = api.client.get(
        "/git/active/foo.git/info/refs", {"service": "git-receive-pack"}, **basic(foo["token"])
    )
    assert response.status_code == 403
    response = api.client.get(
        "/git/active/foo.git/info/refs", {"service": "git-upload-pack"}, **basic(foo["token"])
    )
    assert response.status_code == 200  # inactive users can still read


def test_token_scopes_apply(foo: dict[str, Any], api: Any, make_user: Any) -> None:
    from jobs.services.tokens import token_create

    narrow = token_create(user=foo["user"], scopes=["GET /arvados/v1/jobs"]).api_token
    response = api.client.get(
        "/git/active/foo.git/info/refs", {"service": "git-upload-pack"}, **basic(narrow or "")
    )
    assert response.status_code == 403
    git_only = token_create(user=foo["user"], scopes=["GET /git/"]).api_token
    response = api.client.get(
        "/git/active/foo.git/info/refs", {"service": "git-upload-pack"}, **basic(git_only or "")
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/git/active/foo.git/config",
        "/git/active/foo.git/description",
        "/git/active/foo.git/hooks/pre-receive",
        "/git/active/foo.git/objects/../config",
        "/git/active/foo.git/info/refs/../../config",
        "/git/active/foo.git/info/refs?service=git-shell",
        "/git/active/foo.git/info/refs?service=",
        "/git/active/foo.git/objects/xx/yy",
        "/git/active/foo.git/",
        "/git/active/foo.git/git-upload-pack/extra",
        "/git/active/foo.git/info/refs%0a",
        "/git/--upload-pack=touch%20x.git/info/refs?service=git-upload-pack",
        "/git/..%2F..%2Fetc.git/info/refs?service=git-upload-pack",
        "/git/active/foo/info/refs?service=git-upload-pack",
    ],
)
def test_only_git_paths_are_served(foo: dict[str, Any], api: Any, path: str) -> None:
    response = api.client.get(path, **basic(foo["token"]))
    assert response.status_code == 404


def test_git_paths_are_not_csrf_protected(foo: dict[str, Any]) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/git/active/foo.git/git-upload-pack",
        data=b"0000",
        content_type="application/x-git-upload-pack-request",
        **basic(foo["token"]),
    )
    assert response.status_code == 200
    b"".join(response.streaming_content)


def test_dumb_paths_need_read_permission(foo: dict[str, Any], api: Any, make_user: Any) -> None:
    _, stranger_token = make_user("stranger")
    assert api.client.get("/git/active/foo.git/HEAD", **basic(stranger_token)).status_code == 404
    # The push pointed HEAD at master (main was never pushed); then point it at b1.
    response = api.client.get("/git/active/foo.git/HEAD", **basic(foo["token"]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"ref: refs/heads/master\n"
    run_git(
        foo["example"].env,
        f"--git-dir={git.repository_path(foo['uuid'])}",
        "symbolic-ref",
        "HEAD",
        "refs/heads/b1",
    )
    response = api.client.get("/git/active/foo.git/HEAD", **basic(foo["token"]))
    assert b"".join(response.streaming_content) == b"ref: refs/heads/b1\n"


def test_head_names_a_pushed_branch(server: Server, foo: dict[str, Any]) -> None:
    # A new repository's HEAD names `main`; the example pushed only b1 and master.
    bare = git.repository_path(foo["uuid"])
    assert in_bare(foo["example"].env, bare, "symbolic-ref", "HEAD").strip() == "refs/heads/master"
    proc = server.clone(server.repo_url(foo["token"]), "head-clone")
    assert proc.returncode == 0 and "nonexistent ref" not in proc.stderr, proc.stderr
    assert (server.tmp / "head-clone" / "file.txt").read_text() == "C3\n"


def test_head_follows_the_only_branch(server: Server, api: Any, active: tuple[Any, str]) -> None:
    _, token = active
    created = api.ok(
        "POST", "repositories", body={"repository": {"name": "active/solo"}}, token=token
    )
    example = build_example(server.tmp / "solo")
    example.git("push", "-q", server.repo_url(token, "active/solo"), "b1:refs/heads/feature")
    bare = git.repository_path(created["uuid"])
    assert in_bare(example.env, bare, "symbolic-ref", "HEAD").strip() == "refs/heads/feature"
    # once HEAD names an existing branch, later pushes leave it alone
    example.git("push", "-q", server.repo_url(token, "active/solo"), "master:refs/heads/main")
    assert in_bare(example.env, bare, "symbolic-ref", "HEAD").strip() == "refs/heads/feature"
