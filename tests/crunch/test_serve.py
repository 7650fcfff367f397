"""`crunch serve` is the production server: a real uvicorn process, plain HTTP and TLS."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fresh_env(tmp_path):
    """A migrated SQLite database of its own, and a token in it."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CRUNCH_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    token = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "admin", "--admin"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return env, token


def serve(env, *extra):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crunch.cli",
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            *extra,
        ],
        cwd=ROOT,
        env=env,
    )
    return proc, port


def wait_for(url, context=None, token=None):
    deadline = time.monotonic() + 30
    while True:
        try:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, context=context, timeout=5) as r:
                return r.status, json.loads(r.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_serve_plain_http(fresh_env):
    env, token = fresh_env
    proc, port = serve(env)
    try:
        status, data = wait_for(f"http://127.0.0.1:{port}/arvados/v1/users/current", token=token)
        assert status == 200 and data["username"] == "admin"
        # The admin's stylesheets come from the same server (no collectstatic, no nginx).
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=10
        ) as css:
            assert css.status == 200
            assert css.headers["Content-Type"].startswith("text/css")
            assert b"body" in css.read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_serve_tls(fresh_env, tmp_path):
    env, token = fresh_env
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    proc, port = serve(env, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        status, data = wait_for(
            f"https://127.0.0.1:{port}/arvados/v1/users/current", context=context, token=token
        )
        assert status == 200 and data["username"] == "admin"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_rejects_half_a_tls_pair(fresh_env, tmp_path):
    env, _ = fresh_env
    result = subprocess.run(
        [sys.executable, "-m", "crunch.cli", "serve", "--tls-cert", "x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--tls-cert and --tls-key go together" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "CRUNCH_UUID_PREFIX",
            "TOO-LONG",
            "CRUNCH_UUID_PREFIX must be exactly five lowercase letters or digits",
        ),
        (
            "CRUNCH_CONTAINER_RUN_ARGS",
            "--label 'no end",
            "CRUNCH_CONTAINER_RUN_ARGS cannot be split like a shell command line (No closing "
            'quotation): "--label \'no end"',
        ),
        (
            "CRUNCH_CONTAINER_CLI",
            "--privileged",
            "CRUNCH_CONTAINER_CLI must be one word that does not start with '-'",
        ),
        ("CRUNCH_RUN_AS", "no body", "CRUNCH_RUN_AS must be one word that does not start with"),
    ],
)
def test_bad_configuration_stops_at_start_up(tmp_path, name, value, message):
    env = dict(os.environ, CRUNCH_DATA_DIR=str(tmp_path)) | {name: value}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_worker_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from api import env

    monkeypatch.setenv("CRUNCH_CONTAINER_RUN_ARGS", "--network none --label 'a b' --x=\"$HOME\"")
    assert env.env_words("CRUNCH_CONTAINER_RUN_ARGS") == [
        "--network",
        "none",
        "--label",
        "a b",
        "--x=$HOME",  # split, never expanded
    ]
    monkeypatch.delenv("CRUNCH_CONTAINER_RUN_ARGS")
    assert env.env_words("CRUNCH_CONTAINER_RUN_ARGS") == []
    monkeypatch.setenv("CRUNCH_CONTAINER_CLI", "/usr/bin/podman")
    assert env.env_command("CRUNCH_CONTAINER_CLI") == "/usr/bin/podman"


def test_crunch_dev_points_its_worker_at_its_own_port() -> None:
    from crunch.cli import dev_environment

    assert dev_environment("127.0.0.1:8125", {})["CRUNCH_API_URL"] == "http://127.0.0.1:8125"
    assert dev_environment("0.0.0.0:9000", {})["CRUNCH_API_URL"] == "http://127.0.0.1:9000"
    given = {"CRUNCH_API_URL": "https://crunch.example.org"}
    assert dev_environment("127.0.0.1:8000", given)["CRUNCH_API_URL"] == given["CRUNCH_API_URL"]


def test_a_closed_output_pipe_is_not_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write fails with EPIPE
    try:
        # A command whose output is larger than a pipe's buffer, so the write fails in main.
        program = (
            "import sys\n"
            "import crunch.submitcli as submitcli\n"
            "submitcli.cmd_submit = lambda args: print('x' * 200000)\n"
            "from crunch.cli import main\n"
            "sys.exit(main(['submit', '--repository', 'r', '--script', 's']))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
