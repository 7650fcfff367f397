"""The long-running git processes behind ref resolution and internal tags (`jobs.pipes.GitPipe`):
what a request sees must not depend on whether the repository's process started before or
after a change. Runs on the spec's example `active/foo` (C1 -> C2 -> C3 -> C4, tag1 = C2,
master = C3, b1 = C4, HEAD -> b1)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from jobs import git
from jobs.exceptions import RepositoryUnusable
from jobs.git import commits, pipes
from jobs.git.run import init_bare
from tests.jobs.test_git_ranges import Foo, make_foo


@pytest.fixture
def foo(api: Any, active: tuple[Any, str], tmp_path: Path) -> Foo:
    return make_foo(api, active, tmp_path)


def resolver(foo: Foo) -> pipes.GitPipe:
    return pipes.PIPES.get(foo.bare, *pipes.CAT_FILE)


def resolver_pid(foo: Foo) -> int:
    proc = resolver(foo).proc
    assert proc is not None and proc.poll() is None
    return proc.pid


def test_one_process_serves_every_request(foo: Foo) -> None:
    assert foo.names(foo.range("tag1", "b1")) == ["C4", "C3", "C2"]
    pid = resolver_pid(foo)
    for _ in range(5):
        assert foo.names(foo.range(None, "master")) == ["C3"]
    assert resolver_pid(foo) == pid


def test_a_ref_pushed_after_the_resolver_started_is_seen(foo: Foo) -> None:
    ex = foo.example
    assert foo.range(None, "b2") == []
    pid = resolver_pid(foo)
    ex.git("checkout", "-q", "-b", "b2", "b1")
    c5 = ex.commit("C5", 1_500_000_240)
    ex.git("tag", "t5", c5)
    ex.git("push", "-q", str(foo.bare), "b2", "t5")  # a few objects: unpacked, loose
    assert foo.range(None, "b2") == [c5]
    assert foo.range(None, "t5") == [c5]
    assert foo.range(None, c5) == [c5]
    assert foo.range(None, c5[:10]) == [c5]
    assert foo.names(foo.range("tag1", "b2")) == [c5, "C4", "C3", "C2"]
    assert resolver_pid(foo) == pid  # the same process saw all of it


def test_a_push_that_arrives_as_a_pack_is_seen(foo: Foo) -> None:
    ex = foo.example
    foo.bare_git("config", "receive.unpackLimit", "1")  # keep every push as a pack
    assert foo.names(foo.range(None, "master")) == ["C3"]
    ex.git("checkout", "-q", "-b", "b3", "master")
    c6 = ex.commit("C6", 1_500_000_300)
    ex.git("push", "-q", str(foo.bare), "b3")
    assert foo.range(None, "b3") == [c6]
    assert foo.range(None, c6) == [c6]


def test_a_moved_or_deleted_branch_is_seen(foo: Foo) -> None:
    ex = foo.example
    assert foo.names(foo.range(None, "master")) == ["C3"]
    pid = resolver_pid(foo)
    foo.bare_git("update-ref", "refs/heads/master", ex.c1)
    assert foo.names(foo.range(None, "master")) == ["C1"]
    foo.bare_git("update-ref", "-d", "refs/heads/master")
    assert foo.range(None, "master") == []
    assert foo.range("master", "b1") == []
    # Packed refs: deleting rewrites packed-refs, which git checks on every lookup.
    foo.bare_git("pack-refs", "--all")
    assert foo.names(foo.range(None, "tag1")) == ["C2"]
    assert foo.names(foo.range(None, "b1")) == ["C4"]
    foo.bare_git("update-ref", "-d", "refs/heads/b1")
    foo.bare_git("tag", "-d", "tag1")
    assert foo.range(None, "b1") == []
    assert foo.range(None, "tag1") == []
    assert resolver_pid(foo) == pid


def test_head_repointed_is_seen(foo: Foo) -> None:
    assert foo.names(foo.range(None, None)) == ["C4"]  # HEAD -> b1
    foo.bare_git("symbolic-ref", "HEAD", "refs/heads/master")
    assert foo.names(foo.range(None, None)) == ["C3"]
    assert foo.names(foo.range(None, "HEAD")) == ["C3"]


def test_a_replaced_repository_is_read_afresh(foo: Foo, tmp_path: Path) -> None:
    ex = foo.example
    assert foo.names(foo.range(None, "b1")) == ["C4"]
    pid = resolver_pid(foo)
    # Same path, new repository: only C1 and C2, b1 at C2.
    os.rename(foo.bare, tmp_path / "old.git")
    git.repository_init(foo.uuid)
    ex.git("push", "-q", str(foo.bare), f"{ex.c2}:refs/heads/b1")
    assert foo.names(foo.range(None, "b1")) == ["C2"]
    assert foo.range(None, ex.c4) == []
    assert resolver_pid(foo) != pid


def test_a_broken_repository_raises_and_recovers(foo: Foo) -> None:
    assert foo.names(foo.range(None, "master")) == ["C3"]
    head = (foo.bare / "HEAD").read_text()
    (foo.bare / "HEAD").write_text("garbage\n")
    with pytest.raises(RepositoryUnusable, match="git cat-file failed"):
        foo.range(None, "master")
    (foo.bare / "HEAD").write_text(head)
    assert foo.names(foo.range(None, "master")) == ["C3"]


def test_a_killed_process_is_replaced(foo: Foo) -> None:
    assert foo.names(foo.range(None, "master")) == ["C3"]
    pid = resolver_pid(foo)
    os.kill(pid, signal.SIGKILL)
    assert foo.names(foo.range(None, "master")) == ["C3"]  # retried once, with a new process
    assert resolver_pid(foo) != pid


def test_git_that_does_not_answer_times_out(
    foo: Foo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nexec sleep 60\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    settings.CRUNCH_GIT_TIMEOUT = 1
    with pytest.raises(RepositoryUnusable, match="did not answer within 1s"):
        foo.range(None, "master")
    assert resolver(foo).proc is None  # stopped, not left behind
    monkeypatch.undo()
    assert foo.names(foo.range(None, "master")) == ["C3"]


def test_many_names_in_one_call(foo: Foo) -> None:
    """More text than a pipe holds, in both directions (git echoes unknown names)."""
    excludes = [f"nosuch/{i:05d}-" + "x" * 200 for i in range(3000)]
    assert foo.names(foo.range("tag1", "b1", excludes)) == ["C4", "C3", "C2"]
    assert foo.names(foo.range("tag1", "b1", [*excludes, "master"])) == ["C4", "C2"]
    huge = "y" * 200_000
    assert foo.range(None, huge) == []
    assert foo.names(foo.range(None, "b1")) == ["C4"]


def test_concurrent_requests_get_their_own_answers(foo: Foo) -> None:
    """Threads share one process per repository (no database here: SQLite's in-memory test
    database does not take concurrent writers)."""
    ex = foo.example
    cases = [
        (["master"], [ex.c3]),
        (["b1", "tag1", "nosuch"], [ex.c4, ex.c2, None]),
        ([ex.c1, ex.c3[:12], "heads/master"], [ex.c1, ex.c3, ex.c3]),
        ([f"x{i}" for i in range(200)] + ["b1"], [None] * 200 + [ex.c4]),
    ]
    failures: list[str] = []

    def work(n: int) -> None:
        for i in range(50):
            refs, expected = cases[(n + i) % len(cases)]
            try:
                found = commits.resolve_refs(foo.bare, refs)
            except Exception as exc:  # collected and reported below
                failures.append(repr(exc))
                continue
            if [found[r] for r in refs] != expected:
                failures.append(f"{refs[:3]}: {found} != {expected}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_idle_and_surplus_processes_are_stopped(
    foo: Foo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert foo.names(foo.range(None, "master")) == ["C3"]
    first = resolver(foo).proc
    assert first is not None
    monkeypatch.setattr(pipes.GitPipes, "MAX", 1)
    other = tmp_path / "other.git"
    init_bare(other, what="test")
    assert commits.resolve_refs(other, ["HEAD"]) == {"HEAD": None}
    assert first.poll() is not None  # stopped and reaped
    monkeypatch.setattr(pipes.GitPipes, "MAX", 64)
    assert foo.names(foo.range(None, "master")) == ["C3"]  # started again when needed


def test_internal_tags_through_the_long_running_processes(foo: Foo) -> None:
    ex = foo.example
    tag = "zzzzz-8i9sb-000000000000002"
    internal = git.internal_repository_path()
    git.tag_in_internal_repository("active/foo", ex.c2, tag, user=foo.user)
    assert foo.bare_git("--git-dir", str(internal), "rev-parse", tag).strip() == ex.c2
    update_ref = pipes.PIPES.get(internal, *pipes.UPDATE_REF).proc
    assert update_ref is not None
    git.tag_in_internal_repository("active/foo", ex.c2, tag)  # already there: nothing to do
    git.tag_in_internal_repository("active/foo", ex.c1, tag)  # moved, C1 is already copied
    assert foo.bare_git("--git-dir", str(internal), "rev-parse", tag).strip() == ex.c1
    assert pipes.PIPES.get(internal, *pipes.UPDATE_REF).proc is update_ref
    # A commit pushed later is copied, then tagged.
    ex.git("checkout", "-q", "-b", "b2", "b1")
    c5 = ex.commit("C5", 1_500_000_240)
    ex.git("push", "-q", str(foo.bare), "b2")
    git.tag_in_internal_repository("active/foo", c5, tag)
    assert foo.bare_git("--git-dir", str(internal), "rev-parse", tag).strip() == c5
    # A failed update raises with git's reason, and the next one works.
    with pytest.raises(RepositoryUnusable, match="tagging"):
        git.tag_in_internal_repository("active/foo", "2" * 40, tag)
    git.tag_in_internal_repository("active/foo", ex.c3, tag)
    assert foo.bare_git("--git-dir", str(internal), "rev-parse", tag).strip() == ex.c3
