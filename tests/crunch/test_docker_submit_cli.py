"""`crunch keepdocker` and `crunch submit` as users run them: real processes against a real
`crunch serve` over TLS (tests/keep_server.py)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from crunch.client import ApiClient, ClientConfig, base_url_for
from tests.git_helpers import build_example, run_git
from tests.keep_server import ROOT


def crunch(server: Any, *args: str, user: str = "alice", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crunch.cli", *args],
        cwd=ROOT,
        env=server.client_env(user, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def client_for(server: Any, user: str = "alice") -> ApiClient:
    return ApiClient(
        ClientConfig(base_url=base_url_for(server.host), token=server.tokens[user], insecure=True)
    )


def image_archive(path: Path, *, repo_tag: str, created: str, content: bytes) -> str:
    """A `docker save` archive (manifest.json, config, one layer); returns the image id."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer_bytes = layer.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"],
            },
        }
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{image_id}.json", "RepoTags": [repo_tag], "Layers": ["layer/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("manifest.json", manifest),
            (f"{image_id}.json", config),
            ("layer/layer.tar", layer_bytes),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return image_id


def links_to(client: ApiClient, head: str, link_class: str) -> list[dict[str, Any]]:
    return client.call(
        "GET",
        "links",
        query={"filters": [["head_uuid", "=", head], ["link_class", "=", link_class]]},
    )["items"]


def test_keepdocker_stores_and_links_an_image(crunch_tls_server: Any, tmp_path: Path) -> None:
    archive = tmp_path / "tool.tar"
    image_id = image_archive(
        archive, repo_tag="lab/tool:v1", created="2026-01-02T03:04:05Z", content=b"tool v1\n"
    )
    result = crunch(crunch_tls_server, "keepdocker", str(archive))
    assert result.returncode == 0, result.stderr
    pdh = result.stdout.strip().splitlines()[-1]
    client = client_for(crunch_tls_server)
    [collection] = client.call(
        "GET", "collections", query={"filters": [["portable_data_hash", "=", pdh]]}
    )["items"]
    listing = crunch(crunch_tls_server, "ls", pdh)
    assert listing.stdout.splitlines() == [f"./sha256:{image_id}.tar"]
    [hash_link] = links_to(client, collection["uuid"], "docker_image_hash")
    assert hash_link["name"] == f"sha256:{image_id}"
    assert hash_link["properties"] == {"image_timestamp": "2026-01-02T03:04:05Z"}
    [tag_link] = links_to(client, collection["uuid"], "docker_image_repo+tag")
    assert tag_link["name"] == "lab/tool:v1"
    # the stored file is the archive, byte for byte
    out = tmp_path / "back.tar"
    got = crunch(crunch_tls_server, "get", f"{pdh}/sha256:{image_id}.tar", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == archive.read_bytes()
    # storing it again under another tag adds a tag link, not a collection
    again = crunch(crunch_tls_server, "keepdocker", str(archive), "lab/tool")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == pdh
    names = sorted(
        link["name"] for link in links_to(client, collection["uuid"], "docker_image_repo+tag")
    )
    assert names == ["lab/tool:latest", "lab/tool:v1"]
    assert len(links_to(client, collection["uuid"], "docker_image_hash")) == 1


def test_keepdocker_errors(crunch_tls_server: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    result = crunch(crunch_tls_server, "keepdocker", str(junk))
    assert result.returncode == 1 and "not a docker save archive" in result.stderr
    result = crunch(crunch_tls_server, "keepdocker", "--", "-rf", CRUNCH_CONTAINER_CLI="/bin/false")
    assert result.returncode == 1 and "is not an image name" in result.stderr
    result = crunch(
        crunch_tls_server, "keepdocker", "busybox:latest", CRUNCH_CONTAINER_CLI="/bin/false"
    )
    assert result.returncode == 1 and "save busybox:latest failed" in result.stderr


@pytest.fixture
def tools_repo(crunch_tls_server: Any, tmp_path: Path) -> Any:
    """`alice/tools` on the TLS server, holding the example history (pushed over HTTPS)."""
    client = client_for(crunch_tls_server)
    name = f"alice/tools{tmp_path.name[-6:].replace('_', '').replace('-', '')}"
    repo = client.call("POST", "repositories", body={"repository": {"name": name}})
    example = build_example(tmp_path / "example")
    url = repo["clone_urls"][0].replace(
        "https://", f"https://x:{crunch_tls_server.tokens['alice']}@"
    )
    run_git(
        example.env,
        "-c",
        "http.sslVerify=false",
        "push",
        "-q",
        url,
        "refs/heads/*:refs/heads/*",
        "refs/tags/*:refs/tags/*",
        cwd=example.work,
    )
    return name, example


def test_submit_reuses_and_explains(crunch_tls_server: Any, tools_repo: Any) -> None:
    name, example = tools_repo
    base = ["submit", "--repository", name, "--script", "hash", "--version", "master"]
    first = crunch(crunch_tls_server, *base, "n:=1", "label=x", "--find-or-create")
    assert first.returncode == 0, first.stderr
    uuid, state, outcome = first.stdout.split()
    assert (state, outcome) == ("Queued", "new")
    again = crunch(crunch_tls_server, *base, "n:=1", "label=x", "--find-or-create", "--explain")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].split() == [uuid, "Queued", "reused"]
    assert f"  commit:  {example.c3} (master)" in lines
    assert any(line.strip().startswith(uuid) and "reused" in line for line in lines)
    # a number is not the string: another job
    other = crunch(crunch_tls_server, *base, "n=1", "label=x", "--find-or-create")
    assert other.returncode == 0 and other.stdout.split()[0] != uuid
    as_json = crunch(crunch_tls_server, *base, "n:=1", "label=x", "--find-or-create", "--json")
    assert json.loads(as_json.stdout)["uuid"] == uuid


def test_submit_with_an_image_and_errors(
    crunch_tls_server: Any, tools_repo: Any, tmp_path: Path
) -> None:
    name, _ = tools_repo
    archive = tmp_path / "img.tar"
    image_archive(
        archive, repo_tag="lab/runner:v2", created="2026-03-01T00:00:00Z", content=b"runner\n"
    )
    stored = crunch(crunch_tls_server, "keepdocker", str(archive))
    pdh = stored.stdout.strip().splitlines()[-1]
    base = ["submit", "--repository", name, "--script", "hash", "--json"]
    result = crunch(crunch_tls_server, *base, "--image", "lab/runner:v2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["docker_image_locator"] == pdh
    bad = crunch(crunch_tls_server, *base, "--version", "no-such-branch")
    assert bad.returncode == 1
    assert "Script version no-such-branch does not resolve to a commit" in bad.stderr
    assert crunch(crunch_tls_server, *base, "oops").returncode == 1
    assert crunch(crunch_tls_server, *base, "--filter", "[1,2]").returncode == 1
