"""The Arvados SDK's own tools, `arv-put`, `arv-get` and `arv-ls`, against a real
`crunch serve` over TLS (`ARVADOS_API_HOST=host:port`, `ARVADOS_API_HOST_INSECURE=1`): they
find the Keep service through `keep_services/accessible`, PUT and GET signed blocks, and
create and read collections. Bytes are compared at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobs import manifests
from tests.keep_server import ROOT

pytestmark = pytest.mark.sdk

MIB = 1024 * 1024
BIN = Path(sys.executable).parent


def tool(server: Any, name: str, *args: str, user: str = "alice") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / name), *args],
        cwd=ROOT,
        env=server.client_env(user),
        capture_output=True,
        timeout=180,
    )


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub dir").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(64 * MIB + 4321))  # two blocks
    (root / "sub dir" / "small file.txt").write_bytes(b"small\n")
    (root / "sub dir" / "empty").write_bytes(b"")
    return root


def test_arv_put_then_arv_get_and_arv_ls(
    crunch_tls_server: Any, tree: Path, tmp_path: Path
) -> None:
    put = tool(
        crunch_tls_server,
        "arv-put",
        "--no-resume",
        "--no-cache",
        "--portable-data-hash",
        "--name",
        "from arv-put",
        str(tree) + "/",
    )
    assert put.returncode == 0, put.stderr.decode()
    pdh = put.stdout.decode().strip()
    assert manifests.PDH_RE.match(pdh)

    listed = tool(crunch_tls_server, "arv-ls", pdh)
    assert listed.returncode == 0, listed.stderr.decode()
    assert sorted(listed.stdout.decode().splitlines()) == [
        "./big.bin",
        "./sub dir/empty",
        "./sub dir/small file.txt",
    ]

    out = tmp_path / "out"
    out.mkdir()
    got = tool(crunch_tls_server, "arv-get", f"{pdh}/", str(out) + "/")
    assert got.returncode == 0, got.stderr.decode()
    assert files_of(out) == files_of(tree)

    # What arv-put stored, `crunch get` reads too.
    crunch_out = tmp_path / "crunch-out"
    result = subprocess.run(
        [sys.executable, "-m", "crunch.cli", "get", pdh, str(crunch_out)],
        cwd=ROOT,
        env=crunch_tls_server.client_env(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert files_of(crunch_out) == files_of(tree)


def test_arv_get_reads_what_crunch_put_stored(crunch_tls_server: Any, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"written by crunch put\n" * 1000)
    stored = subprocess.run(
        [sys.executable, "-m", "crunch.cli", "put", str(source)],
        cwd=ROOT,
        env=crunch_tls_server.client_env("bob"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    pdh = stored.stdout.strip()
    got = tool(crunch_tls_server, "arv-get", f"{pdh}/notes.txt", "-", user="bob")
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == source.read_bytes()
    # Another user has no collection with that content: the SDK gets a 404 for the PDH.
    refused = tool(crunch_tls_server, "arv-get", f"{pdh}/notes.txt", "-", user="alice")
    assert refused.returncode != 0
    assert b"404" in refused.stderr
