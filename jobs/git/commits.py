"""Commits (spec §4): resolving refs, ranges of commits, and whether a path is in a commit,
asked of the repository's long-running `cat-file --batch-check` (jobs.git.pipes).

Errors follow the contract of §4: a revision that does not exist is an *empty result*; a
repository that cannot be used (unknown, unreadable, fetch failed, git failed or timed out)
*raises* `RepositoryUnusable`, so a transient problem never looks like a bad revision."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from jobs.exceptions import InvalidRequest, RepositoryUnusable
from jobs.git.pipes import CAT_FILE, PIPES
from jobs.git.refs import HEX40_RE, check_ref_format
from jobs.git.remote import git_dir_for
from jobs.git.run import CONTROL_RE, run_git
from jobs.models import User


def resolve_refs(git_dir: Path, refs: Sequence[str]) -> dict[str, str | None]:
    """Each ref's commit (None when unknown, ambiguous or not a commit), asked of the
    repository's long-running `git cat-file --batch-check` (`GitPipe`).

    `cat-file --batch-check` resolves names like `rev-list <ref> --` does: a full 40-hex
    string is that object even if a ref has the same name, refs win over abbreviated ids,
    `heads/<name>` forces the branch, tags are peeled. Refs go to its stdin, one per line;
    they passed `check_ref_format`, so they hold no whitespace and no `^`, and the appended
    `^{commit}` cannot change how the ref itself is read.
    """
    unique = list(dict.fromkeys(refs))
    if not unique:
        return {}
    lines = PIPES.get(git_dir, *CAT_FILE).query(
        [(os.fsencode(ref) + b"^{commit}\n", 1) for ref in unique], what="git cat-file failed"
    )
    if len(lines) != len(unique):
        raise RepositoryUnusable("git cat-file failed: unexpected output")
    resolved: dict[str, str | None] = {}
    for ref, line in zip(unique, lines, strict=True):
        fields = line.decode("ascii", "replace").split(" ")
        found = len(fields) == 3 and fields[1] == "commit" and HEX40_RE.fullmatch(fields[0])
        resolved[ref] = fields[0] if found else None
    return resolved


@functools.lru_cache(maxsize=512)
def rev_list(git_dir: str, min_hash: str, max_hash: str) -> tuple[str, ...]:
    """`git rev-list <min>..<max>` (reverse chronological). Cached: both ends are commit ids
    that exist in this repository, and the commits between two commits never change."""
    out = run_git(
        Path(git_dir), "rev-list", f"{min_hash}..{max_hash}", "--", what="git rev-list failed"
    )
    return tuple(out.decode("ascii").split())


def find_commit_range(
    *,
    user: User | None,
    repo: str,
    min: str | None,
    max: str | None,
    exclude: Sequence[str] | None,
) -> list[str]:
    """The commits from `min` to `max` in `repo`, minus `exclude` (spec §4).

    Returns 40-hex commit ids: `rev-list min..max` order then `min`, or `[max]` without a
    min. An empty list means a bad or unknown revision (including invalid ref syntax).
    Raises RepositoryUnusable when the repository cannot be used: not found or not readable
    by `user` ("Repository not found: '<repo>'"), "Name conflict", a failed fetch of a
    remote URL, any git failure.
    """
    if min == "":
        min = None
    for ref in (min, max):
        if ref is not None and not check_ref_format(ref):
            return []
    if max is None:
        max = "HEAD"
    git_dir = git_dir_for(user=user, repo=repo)
    excludes: list[str] = []
    if exclude is not None:
        if not isinstance(exclude, list | tuple) or not all(map(check_ref_format, exclude)):
            return []
        excludes = list(exclude)
    resolved = resolve_refs(git_dir, [max, *excludes, *([min] if min is not None else [])])
    max_hash = resolved[max]
    if max_hash is None or not check_ref_format(max_hash):
        return []
    excluded = {resolved[e] for e in excludes} - {None}
    if min is None:
        return [] if max_hash in excluded else [max_hash]
    min_hash = resolved[min]
    if min_hash is None or not check_ref_format(min_hash):
        return []
    commits = [c for c in rev_list(str(git_dir), min_hash, max_hash) if c not in excluded]
    if min_hash not in excluded:
        commits.append(min_hash)
    return commits


def resolve_commit(*, user: User | None, repo: str, ref: str | None) -> str | None:
    """The commit `ref` names in `repo` (None: HEAD), or None when it names none.
    Raises like `find_commit_range` when the repository is unusable."""
    found = find_commit_range(user=user, repo=repo, min=None, max=ref, exclude=None)
    return found[0] if found else None


def path_exists(*, user: User | None, repo: str, commit: str, path: str) -> bool:
    """Whether `path` (relative, `/`-separated) is a file (a blob: a regular file or a
    symbolic link) in commit `commit` of `repo`.

    `commit` is a 40-hex commit id (as `resolve_commit` returns). A remote repository is
    looked up in its cache, not fetched again: resolving the commit fetched it. The name
    `<commit>:<path>` goes to the repository's long-running `git cat-file --batch-check` on
    stdin. Raises InvalidRequest for a malformed commit or path, RepositoryUnusable like
    `find_commit_range`.
    """
    if not isinstance(commit, str) or not HEX40_RE.fullmatch(commit):
        raise InvalidRequest(f"invalid commit {commit}")
    # Path components git stores: no empty, `.` or `..` part; no control character (nothing
    # git could read as more than one line of `cat-file --batch-check` input).
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or CONTROL_RE.search(path) or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequest(f"invalid path {path!r}")
    git_dir = git_dir_for(user=user, repo=repo, fetch=False)
    (line,) = PIPES.get(git_dir, *CAT_FILE).query(
        [(f"{commit}:".encode() + os.fsencode(path) + b"\n", 1)], what="git cat-file failed"
    )
    fields = line.split(b" ")
    return len(fields) == 3 and fields[1] == b"blob"
