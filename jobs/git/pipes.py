"""Long-running git processes (`cat-file --batch-check`, `update-ref --stdin`), one of each
per repository and process, shared by every request."""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, cast

from django.conf import settings

from jobs.exceptions import RepositoryUnusable
from jobs.git.run import git_env, redact


class GitPipe:
    """One long-running git process for one repository that answers lines on stdin with
    lines on stdout: `cat-file --batch-check` (resolving names) or `update-ref --stdin`
    (moving refs in transactions). Forking git for every request costs more than the rest
    of a reuse lookup, so each repository keeps one of each, used by one caller at a time
    (a lock). What stays correct across requests, and why:

    - refs: git reads a loose ref file, and checks packed-refs' stat data, on every lookup,
      so a push, a new tag or a deleted branch is seen by the next request;
    - objects: a name git cannot find makes it re-scan the packs (and drop its cache of
      loose objects) before it answers "missing", so pushed commits are found;
    - the repository itself: before every use the stat data of the git directory, `HEAD`,
      `config` and `objects/pack` are compared with those at start. Any change (a HEAD
      re-pointed or broken, new packs, a repack that deleted packs the process still has
      open, a repository replaced) restarts the process, and a fresh git checks the
      repository as it does on every start: a broken one raises.

    Any failure (git died, no answer within CRUNCH_GIT_TIMEOUT) stops the process and raises
    RepositoryUnusable; when a process that had served earlier requests ended by itself (it
    may have been killed from outside), the request is first tried once more with a new one.
    Callers send only text that passed `check_ref_format` or is 40 hex: no whitespace, no
    newline.
    """

    CHUNK_BYTES = 16384  # written before answers are read: both pipes stay far from full

    def __init__(self, git_dir: Path, args: tuple[str, ...]) -> None:
        self.git_dir = git_dir
        self.args = args
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.signature: tuple[object, ...] | None = None
        self.pending = b""
        self.stderr = bytearray()
        self.stderr_thread: threading.Thread | None = None
        self.died = False  # the process ended by itself (as opposed to: did not answer)
        self.retired = False  # dropped by `GitPipes` while in use: close after that use
        self.last_used = time.monotonic()

    # --- life cycle ---

    def _signature(self) -> tuple[object, ...] | None:
        stats: list[object] = []
        try:
            stats.append(os.stat(self.git_dir).st_ino)
            for name in ("HEAD", "config", "objects/pack"):
                st = os.stat(self.git_dir / name)
                stats.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            return None
        return tuple(stats)

    def _start(self, signature: tuple[object, ...] | None, what: str) -> None:
        try:
            proc = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=git_env(),
                bufsize=0,
            )
        except OSError as exc:
            raise RepositoryUnusable(f"{what}: cannot run git: {exc.strerror}") from None
        self.proc, self.signature, self.pending, self.died = proc, signature, b"", False
        self.stderr = bytearray()
        # Warnings (e.g. "refname is ambiguous") must never fill the pipe and block git.
        self.stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(proc, self.stderr), daemon=True
        )
        self.stderr_thread.start()

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen[bytes], keep: bytearray) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in proc.stderr:
                keep += line
                del keep[:-4096]

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            cast(IO[bytes], proc.stdin).close()  # git exits at the end of its input
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.stderr_thread is not None:
            self.stderr_thread.join(timeout=1)
        with contextlib.suppress(OSError):
            cast(IO[bytes], proc.stdout).close()

    def _failure(self, what: str, reason: str) -> RepositoryUnusable:
        """Stop the process; the error names git's last complaint when there is one."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self.close()
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return RepositoryUnusable(f"{what}: {redact(lines[-1]) if lines else reason}")

    # --- talking to git ---

    def _readline(self, deadline: float, what: str) -> bytes:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timeout = settings.CRUNCH_GIT_TIMEOUT
                raise self._failure(what, f"git did not answer within {timeout}s")
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.died = True
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
                if self.stderr_thread is not None:
                    self.stderr_thread.join(timeout=1)
                raise self._failure(what, f"git exited with status {proc.returncode}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line

    def _ask(self, requests: Sequence[tuple[bytes, int]], what: str) -> list[bytes]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        deadline = time.monotonic() + settings.CRUNCH_GIT_TIMEOUT
        answers: list[bytes] = []
        start = 0
        while start < len(requests):
            # A chunk of at most CHUNK_BYTES (or one request): git's answers to it (which
            # may echo the input) fit in the stdout pipe while we are still writing.
            end, size = start, 0
            while end < len(requests) and (
                end == start or size + len(requests[end][0]) <= self.CHUNK_BYTES
            ):
                size += len(requests[end][0])
                end += 1
            data = memoryview(b"".join(text for text, _ in requests[start:end]))
            try:
                while data:
                    data = data[proc.stdin.write(data) or 0 :]
            except (BrokenPipeError, ValueError):
                pass  # git died: reading finds the end of its output and says why
            for _ in range(sum(n for _, n in requests[start:end])):
                answers.append(self._readline(deadline, what))
            start = end
        return answers

    def query(self, requests: Sequence[tuple[bytes, int]], *, what: str) -> list[bytes]:
        """Send each request (text, number of answer lines it gets); return the answers."""
        with self.lock:
            self.last_used = time.monotonic()
            signature = self._signature()
            if self.proc is not None and (signature is None or signature != self.signature):
                self.close()
            for attempt in (1, 2):
                fresh = self.proc is None
                if fresh:
                    self._start(signature, what)
                try:
                    return self._ask(requests, what)
                except RepositoryUnusable:
                    if fresh or attempt == 2 or not self.died:
                        raise
                    # an old process ended (killed from outside?): once more, with a new one
                finally:
                    if self.retired:
                        self.close()
            raise AssertionError("unreachable")


class GitPipes:
    """The long-running git processes of this process: at most MAX, each closed once IDLE
    seconds unused (checked on every use), so that none holds deleted packs open for long."""

    MAX = 64
    IDLE = 300.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pipes: dict[tuple[str, tuple[str, ...]], GitPipe] = {}

    def get(self, git_dir: Path, *args: str) -> GitPipe:
        key = (str(git_dir), args)
        stale: list[GitPipe] = []
        with self.lock:
            pipe = self.pipes.pop(key, None) or GitPipe(git_dir, args)
            self.pipes[key] = pipe  # the most recently used last
            now = time.monotonic()
            for other_key, other in list(self.pipes.items()):
                too_many = len(self.pipes) > self.MAX
                if other is not pipe and (too_many or now - other.last_used > self.IDLE):
                    stale.append(self.pipes.pop(other_key))
        for old in stale:
            old.retired = True  # if it is in use right now, its user closes it afterwards
            if old.lock.acquire(blocking=False):
                try:
                    old.close()
                finally:
                    old.lock.release()
        return pipe

    def close_all(self) -> None:
        with self.lock:
            pipes, self.pipes = list(self.pipes.values()), {}
        for pipe in pipes:
            with pipe.lock:
                pipe.close()

    def forget_after_fork(self) -> None:
        """In a forked child: the processes are the parent's; close our copies of their
        pipes without touching the processes."""
        self.lock = threading.Lock()
        for pipe in self.pipes.values():
            pipe.lock = threading.Lock()
            proc, pipe.proc = pipe.proc, None
            for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
                with contextlib.suppress(OSError, ValueError):
                    cast(IO[bytes], stream).close()
        self.pipes = {}


PIPES = GitPipes()
atexit.register(PIPES.close_all)
os.register_at_fork(after_in_child=PIPES.forget_after_fork)

CAT_FILE = ("cat-file", "--batch-check")
UPDATE_REF = ("update-ref", "--stdin")
