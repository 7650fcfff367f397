"""The internal repository (spec §2.12), `<CRUNCH_GIT_DIR>/internal.git`: the commits jobs
ran, each tagged with the job's uuid."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from jobs.exceptions import InvalidRequest, RepositoryUnusable
from jobs.git.commits import resolve_refs
from jobs.git.hosted import hosted_git_dir
from jobs.git.pipes import CAT_FILE, PIPES, UPDATE_REF
from jobs.git.refs import HEX40_RE, check_ref_format
from jobs.git.remote import git_dir_for, is_remote
from jobs.git.run import init_bare, locked, redact, run_git
from jobs.models import User


def internal_repository_path() -> Path:
    return Path(settings.CRUNCH_GIT_DIR) / "internal.git"


def tag_in_internal_repository(repo: str, sha1: str, tag: str, *, user: User | None = None) -> None:
    """Copy commit `sha1` with its history from `repo` into the internal repository and
    point the lightweight tag `tag` (a job uuid) at it, moving the tag if it exists.

    `repo` is a hosted name or a remote URL, whose cache must already hold the commit (no
    fetch here). With `user`, a hosted repository must be readable by that user; without,
    any hosted repository of that name is used (the caller resolved the commit for its user
    already). Raises InvalidRequest for a bad tag or sha1, RepositoryUnusable otherwise.
    """
    if not check_ref_format(tag):
        raise InvalidRequest(f"invalid tag {tag}")
    if not isinstance(sha1, str) or not HEX40_RE.fullmatch(sha1):
        raise InvalidRequest(f"invalid sha1 {sha1}")
    if is_remote(repo):
        source = git_dir_for(user=user, repo=repo, fetch=False)
    else:
        source = hosted_git_dir(user=user, repo=repo, restrict=user is not None)
    internal = internal_repository_path()
    what = f"tagging {sha1} from {redact(repo)} failed"
    tag_ref = f"refs/tags/{tag}"
    with locked(internal):
        init_bare(internal, what=what)
        have, tagged = PIPES.get(internal, *CAT_FILE).query(
            [(f"{sha1}^{{commit}}\n".encode(), 1), (os.fsencode(tag_ref) + b"\n", 1)], what=what
        )
        if have.split(b" ")[:2] != [sha1.encode(), b"commit"]:
            # Fetching by id needs the source to allow unadvertised wants; `-c` reaches the
            # upload-pack that fetch starts through GIT_CONFIG_PARAMETERS.
            run_git(
                internal,
                "-c",
                "uploadpack.allowAnySHA1InWant=true",
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-progress",
                "--",
                str(source),
                sha1,
                what=what,
            )
            if resolve_refs(internal, [sha1])[sha1] != sha1:
                raise RepositoryUnusable(f"{what}: {sha1} is not a commit")
        elif tagged.split(b" ")[:2] == [sha1.encode(), b"commit"]:
            return  # the lightweight tag is there already (a job re-saved)
        # One transaction on the internal repository's long-running `update-ref --stdin`;
        # the tag and the id passed the checks above, so they hold no whitespace.
        answers = PIPES.get(internal, *UPDATE_REF).query(
            [(f"start\nupdate {tag_ref} {sha1}\nprepare\ncommit\n".encode(), 3)], what=what
        )
        if answers != [b"start: ok", b"prepare: ok", b"commit: ok"]:
            raise RepositoryUnusable(f"{what}: unexpected answer from git update-ref")
