"""Real git for tests: an isolated client environment and the spec's example repository.

The example (spec conventions): a linear history C1 -> C2 -> C3 -> C4, lightweight tag `tag1`
at C2, branch `master` at C3, branch `b1` at C4, HEAD -> b1. Every commit holds the script
`crunch_scripts/hash` (jobs are refused unless their script is in their commit).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def client_env(home: Path) -> dict[str, str]:
    """Environment for git run as a *client*: its own HOME and global config, no prompts,
    fixed identities and dates (so runs are reproducible), no Arvados token."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / ".gitconfig"
    config.touch()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "ARVADOS_API_TOKEN"
    }
    env.update(
        {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(config),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "Crunch Test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Crunch Test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
        }
    )
    return env


def run_git(
    env: dict[str, str], *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # Without a cwd, the isolated HOME: never whatever repository the tests run from.
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd or env["HOME"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@dataclass
class Example:
    work: Path  # the working repository the commits were made in
    env: dict[str, str]
    c1: str
    c2: str
    c3: str
    c4: str

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_git(self.env, *args, cwd=self.work, check=check)

    def commit(self, message: str, when: int) -> str:
        (self.work / "file.txt").write_text(f"{message}\n")
        self.git("add", "file.txt")
        env_date = {"GIT_AUTHOR_DATE": f"@{when} +0000", "GIT_COMMITTER_DATE": f"@{when} +0000"}
        run_git(self.env | env_date, "commit", "-q", "-m", message, cwd=self.work)
        return self.git("rev-parse", "HEAD").stdout.strip()


EXAMPLE_SCRIPT = "hash"


def build_example(tmp: Path) -> Example:
    """The example history in a working repository under `tmp` (not pushed anywhere)."""
    env = client_env(tmp / "home")
    work = tmp / "work"
    run_git(env, "init", "-q", "--initial-branch=b1", str(work))
    example = Example(work=work, env=env, c1="", c2="", c3="", c4="")
    script = work / "crunch_scripts" / EXAMPLE_SCRIPT
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nmd5sum "$0"\n')
    script.chmod(0o755)
    example.git("add", "crunch_scripts")
    base = 1_500_000_000
    example.c1 = example.commit("C1", base)
    example.c2 = example.commit("C2", base + 60)
    example.c3 = example.commit("C3", base + 120)
    example.c4 = example.commit("C4", base + 180)
    example.git("tag", "tag1", example.c2)
    example.git("branch", "master", example.c3)
    return example


def push_example(example: Example, destination: str) -> None:
    """Push the example's branches and tags to `destination` (a path or a URL)."""
    example.git("push", "-q", destination, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")


def in_bare(env: dict[str, str], bare: Path, *args: str) -> str:
    """Run git in a bare repository directly (e.g. `symbolic-ref HEAD`, which a push
    cannot change); returns stdout."""
    return run_git(env, f"--git-dir={bare}", *args).stdout


def join_server_threads(timeout: float = 10.0) -> None:
    """Wait for the live server's request threads to end.

    With in-memory SQLite the live server's threads share the test's connection; a request
    thread still closing its connection when the session's live server stops fails with
    "DatabaseWrapper objects created in a thread can only be used in that same thread".
    Tests that talk to the live server call this on teardown so no thread outlives them.
    """
    import threading
    import time

    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and "process_request_thread" in thread.name:
            thread.join(max(0.0, deadline - time.monotonic()))
