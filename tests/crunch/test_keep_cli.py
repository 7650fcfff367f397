"""`crunch put`, `crunch get` and `crunch ls` as users run them: real processes against a real
`crunch serve` over TLS (tests/keep_server.py), bytes compared at the end."""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crunch.client import ApiClient, ApiError, ClientConfig, ClientError, base_url_for
from jobs import manifests
from tests.keep_server import ROOT

MIB = 1024 * 1024


def crunch(server: Any, *args: str, user: str = "alice", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crunch.cli", *args],
        cwd=ROOT,
        env=server.client_env(user, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def put(server: Any, *paths: Path | str, user: str = "alice") -> str:
    result = crunch(server, "put", *map(str, paths), user=user)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert manifests.PDH_RE.match(lines[-1]), result.stdout
    return lines[-1]


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under `root`."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = None if path.is_dir() else path.read_bytes()
    return found


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """Names with spaces and non-ASCII letters, an empty file, an empty directory, nesting."""
    root = tmp_path / "sample"
    (root / "with space" / "deeper").mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "with space" / "b c.txt").write_bytes(b"spaced out\n")
    (root / "with space" / "deeper" / "blåbær:1.json").write_bytes(b'{"x": 1}\n')
    (root / "zero").write_bytes(b"")
    (root / "back\\slash").write_bytes(os.urandom(1000))
    return root


def test_round_trip_of_a_tree(crunch_tls_server: Any, sample: Path, tmp_path: Path) -> None:
    pdh = put(crunch_tls_server, str(sample) + "/")
    out = tmp_path / "out"
    result = crunch(crunch_tls_server, "get", pdh, str(out))
    assert result.returncode == 0, result.stderr
    assert tree_of(out) == tree_of(sample)
    # The same bytes give the same portable data hash, whoever stores them.
    assert put(crunch_tls_server, str(sample) + "/", user="bob") == pdh


def test_directory_argument_keeps_its_name(crunch_tls_server: Any, sample: Path) -> None:
    pdh = put(crunch_tls_server, sample, sample / "a.txt")
    listing = crunch(crunch_tls_server, "ls", pdh)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == [
        "./a.txt",
        "./sample/a.txt",
        "./sample/back\\slash",
        "./sample/empty dir/",
        "./sample/with space/b c.txt",
        "./sample/with space/deeper/blåbær:1.json",
        "./sample/zero",
    ]
    sized = crunch(crunch_tls_server, "ls", "-s", f"{pdh}/sample/with space")
    assert sized.stdout.splitlines() == [
        f"{11:>12} ./sample/with space/b c.txt",
        f"{9:>12} ./sample/with space/deeper/blåbær:1.json",
    ]


def test_file_across_several_blocks_and_dedupe(crunch_tls_server: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * MIB + 12345))
    before = set(crunch_tls_server.stored_blocks())
    pdh = put(crunch_tls_server, big)
    added = set(crunch_tls_server.stored_blocks()) - before
    assert sorted(p.stat().st_size for p in added) == [12345, 64 * MIB]
    # Stored again, by someone else: the same blocks, nothing new on disk.
    assert put(crunch_tls_server, big, user="bob") == pdh
    assert set(crunch_tls_server.stored_blocks()) == before | added

    single = tmp_path / "single.bin"
    result = crunch(crunch_tls_server, "get", f"{pdh}/big.bin", str(single))
    assert result.returncode == 0, result.stderr
    assert hashlib.md5(single.read_bytes()).digest() == hashlib.md5(big.read_bytes()).digest()
    into_dir = tmp_path / "into"
    into_dir.mkdir()
    assert crunch(crunch_tls_server, "get", f"{pdh}/big.bin", str(into_dir)).returncode == 0
    assert (into_dir / "big.bin").read_bytes() == big.read_bytes()


def test_get_to_stdout_and_existing_files(crunch_tls_server: Any, sample: Path) -> None:
    pdh = put(crunch_tls_server, str(sample) + "/")
    streamed = subprocess.run(
        [sys.executable, "-m", "crunch.cli", "get", f"{pdh}/with space/b c.txt", "-"],
        cwd=ROOT,
        env=crunch_tls_server.client_env(),
        capture_output=True,
        timeout=60,
    )
    assert streamed.returncode == 0 and streamed.stdout == b"spaced out\n"
    target = sample.parent / "copy"
    assert crunch(crunch_tls_server, "get", pdh, str(target)).returncode == 0
    again = crunch(crunch_tls_server, "get", pdh, str(target))
    assert again.returncode == 1
    assert "exists (use --force to overwrite)" in again.stderr
    assert crunch(crunch_tls_server, "get", "--force", pdh, str(target)).returncode == 0


def test_progress_bar_only_on_a_terminal(crunch_tls_server: Any, sample: Path) -> None:
    plain = crunch(crunch_tls_server, "put", str(sample))
    assert plain.returncode == 0
    assert "\r" not in plain.stderr and "MiB/s" not in plain.stderr

    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "crunch.cli", "put", str(sample)],
            cwd=ROOT,
            env=crunch_tls_server.client_env(),
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0
    assert b"\rput [" in shown and b"MiB/s" in shown
    # stdout holds only the portable data hash, printed last.
    assert manifests.PDH_RE.match(result.stdout.decode().strip())


def test_errors_exit_1_with_the_servers_reason(
    crunch_tls_server: Any, sample: Path, tmp_path: Path
) -> None:
    pdh = put(crunch_tls_server, sample / "a.txt")
    bad_token = crunch(crunch_tls_server, "ls", pdh, ARVADOS_API_TOKEN="not-a-token")
    assert bad_token.returncode == 1
    assert "401 Not logged in" in bad_token.stderr

    missing = crunch(crunch_tls_server, "get", "d" * 32 + "+5", str(tmp_path / "x"))
    assert missing.returncode == 1 and "404" in missing.stderr

    # Content is found by portable data hash only through a collection one can read.
    other = crunch(crunch_tls_server, "get", pdh, str(tmp_path / "y"), user="bob")
    assert other.returncode == 1 and "404" in other.stderr

    no_file = crunch(crunch_tls_server, "get", f"{pdh}/nope", str(tmp_path / "z"))
    assert no_file.returncode == 1 and "no such file or directory" in no_file.stderr

    escape = crunch(crunch_tls_server, "get", f"{pdh}/../etc", str(tmp_path / "z"))
    assert escape.returncode == 1 and "not a usable name" in escape.stderr

    nothing = crunch(crunch_tls_server, "put", str(tmp_path / "absent"))
    assert nothing.returncode == 1 and "no such file or directory" in nothing.stderr

    unset = crunch(crunch_tls_server, "ls", pdh, ARVADOS_API_HOST="")
    assert unset.returncode == 1 and "ARVADOS_API_HOST is not set" in unset.stderr

    untrusted = crunch(crunch_tls_server, "ls", pdh, ARVADOS_API_HOST_INSECURE="0")
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


# --- the client library ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("api.example.org", "https://api.example.org"),
        ("127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://crunch.example.org/prefix/", "https://crunch.example.org/prefix"),
        ("[::1]:8000", "https://[::1]:8000"),
    ],
)
def test_api_host_forms(host: str, url: str) -> None:
    assert base_url_for(host) == url


@pytest.mark.parametrize("host", ["ftp://x", "http://", "host:notaport", "http://h/?q=1"])
def test_bad_api_hosts(host: str) -> None:
    with pytest.raises(ClientError):
        base_url_for(host)


def test_client_config_from_env() -> None:
    config = ClientConfig.from_env(
        {"ARVADOS_API_HOST": "h:1", "ARVADOS_API_TOKEN": "t", "ARVADOS_API_HOST_INSECURE": "yes"}
    )
    assert config == ClientConfig("https://h:1", "t", insecure=True)
    with pytest.raises(ClientError, match="ARVADOS_API_TOKEN is not set"):
        ClientConfig.from_env({"ARVADOS_API_HOST": "h:1"})


def test_client_calls_and_blocks(crunch_tls_server: Any) -> None:
    client = ApiClient.from_env(crunch_tls_server.client_env())
    try:
        me = client.call("GET", "users/current")
        assert me["username"] == "alice"
        locator = client.block_put(b"foo")
        assert locator.startswith("acbd18db4cc2f85cedef654fccc4a4d8+3+A")
        assert client.block_get(locator) == b"foo"
        with pytest.raises(ApiError) as info:
            client.call("POST", "links", body={"link": {"name": "no class"}})
        assert info.value.status == 422
        assert "link_class must be given" in str(info.value)
    finally:
        client.close()
