"""A real `crunch serve` (uvicorn, TLS with a self-signed certificate) on a fresh, migrated
SQLite database, for tests that drive command-line clients: `crunch put/get/ls` and the
Arvados SDK's `arv-put/arv-get/arv-ls`. One per test session (`crunch_tls_server`)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveCrunch:
    host: str  # 127.0.0.1:<port>: what ARVADOS_API_HOST holds (HTTPS)
    data_dir: Path
    home: Path
    tokens: dict[str, str] = field(default_factory=dict)  # username → token

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def client_env(self, user: str = "alice", **extra: str) -> dict[str, str]:
        """The environment of a client process acting as `user`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ARVADOS_", "KEEP_")) and k not in ("DATABASE_URL", "REDIS_URL")
        }
        env.update(
            ARVADOS_API_HOST=self.host,
            ARVADOS_API_TOKEN=self.tokens[user],
            ARVADOS_API_HOST_INSECURE="1",
            HOME=str(self.home),
            XDG_CACHE_HOME=str(self.home / "cache"),
            XDG_CONFIG_HOME=str(self.home / "config"),
        )
        env.update(extra)
        return env

    def stored_blocks(self) -> list[Path]:
        keep = self.data_dir / "keep"
        return sorted(p for p in keep.glob("???/*") if p.parent.name != "tmp")


def _manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()


@contextmanager
def running_crunch(work: Path) -> Iterator[LiveCrunch]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a TLS certificate")
    cert, key = work / "cert.pem", work / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run(
        [*openssl, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CRUNCH_DATA_DIR"] = str(work / "data")
    _manage(env, "migrate", "-v0")
    server = LiveCrunch(host="", data_dir=work / "data", home=work / "home")
    server.home.mkdir()
    for user, admin in (("admin", True), ("alice", False), ("bob", False)):
        server.tokens[user] = _manage(
            env, "create_api_token", user, *(["--admin"] if admin else [])
        )
    port = free_port()
    server.host = f"127.0.0.1:{port}"
    options = ["--tls-cert", str(cert), "--tls-key", str(key), "--log-level", "warning"]
    process = subprocess.Popen(
        [sys.executable, "-m", "crunch.cli", "serve", "--bind", server.host, *options],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_until_up(server.url, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(
                f"{url}/discovery/v1/apis/arvados/v1/rest", context=context, timeout=5
            ):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("crunch serve did not start") from None
            time.sleep(0.2)
