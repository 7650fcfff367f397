"""A run's source tree from a commit (crunch.sources.checkout), with a real git repository:
a commit extracted once in a process is extracted again without git."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from crunch import sources
from crunch.runtimes import RunFailed
from jobs.models import Job

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def commit_in_cache(tmp_path: Path) -> tuple[str, Path, Path]:
    """A commit with a script and a data file, already in the worker's bare cache of the
    hosted repository `alice/tools` (as after a first fetch): (commit, cache_root, cache)."""
    work = tmp_path / "work"
    (work / "crunch_scripts").mkdir(parents=True)
    (work / "crunch_scripts" / "noop").write_text("#!/bin/sh\ntrue\n")
    (work / "data.txt").write_text("some data\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "a script", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work)
    cache_root = tmp_path / "repos"
    url = f"{settings.CRUNCH_API_URL}/git/alice/tools.git"
    cache = cache_root / (hashlib.sha1(url.encode()).hexdigest() + ".git")
    cache_root.mkdir()
    git("clone", "-q", "--bare", str(work), str(cache), cwd=tmp_path)
    return commit, cache_root, cache


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


def test_a_commit_is_extracted_again_from_the_process_s_archive(
    commit_in_cache: tuple[str, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit, cache_root, cache = commit_in_cache
    monkeypatch.setattr(sources, "ARCHIVES", sources.ArchiveCache(1 << 20))
    job = Job(repository="alice/tools", script="noop", script_version=commit)
    first = tmp_path / "first"
    first.mkdir()
    sources.checkout(job=job, token=None, dest=first, cache_root=cache_root)
    assert (first / "data.txt").read_text() == "some data\n"
    assert (first / "crunch_scripts" / "noop").stat().st_mode & 0o111 == 0o111
    # Without the bare cache, git could not answer: the same commit comes from memory.
    subprocess.run(["rm", "-rf", "--", str(cache)], check=True)
    second = tmp_path / "second"
    second.mkdir()
    sources.checkout(job=job, token=None, dest=second, cache_root=cache_root)
    assert tree(second) == tree(first)
    # A script the commit lacks is still refused, whichever way the tree came.
    missing = Job(repository="alice/tools", script="absent", script_version=commit)
    third = tmp_path / "third"
    third.mkdir()
    with pytest.raises(RunFailed, match="crunch_scripts/absent is not in commit"):
        sources.checkout(job=missing, token=None, dest=third, cache_root=cache_root)


def test_the_archive_cache_keeps_the_most_recent_within_its_bound(tmp_path: Path) -> None:
    kept = sources.ArchiveCache(100)
    a, b = tmp_path / "a.git", tmp_path / "b.git"
    kept.put(a, "1" * 40, b"x" * 20)
    kept.put(b, "1" * 40, b"y" * 20)  # another repository's cache: another entry
    kept.put(a, "2" * 40, b"z" * 26)  # larger than a quarter: not kept
    assert kept.get(a, "2" * 40) is None and kept.size == 40
    assert kept.get(a, "1" * 40) == b"x" * 20  # now the most recently used
    for n in range(3, 6):
        kept.put(a, str(n) * 40, bytes(25))
    assert kept.size <= 100
    assert kept.get(a, "1" * 40) == b"x" * 20 and kept.get(b, "1" * 40) is None
