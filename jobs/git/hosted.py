"""Hosted repositories: their names, where they live (`<CRUNCH_GIT_DIR>/repositories/
<uuid>.git`: paths come from uuids, never from names), creating them, and finding the one a
user may read by name."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import git
from django.conf import settings

from jobs import permissions, rowsql
from jobs.exceptions import RepositoryUnusable
from jobs.models import Repository, User

log = logging.getLogger("crunch.git")

# One component of a repository name: a letter first, then letters, digits, `_`, `-`, `.`.
_NAME_PART_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}\Z")


def name_errors(name: str) -> list[str]:
    """Why `name` cannot name a repository (empty list when it can)."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or len(parts) > 2:
        return ["Repository name must be <owner>/<name> or <name>"]
    for part in parts:
        if (
            not _NAME_PART_RE.fullmatch(part)
            or ".." in part
            or part.endswith((".git", ".lock", "."))
        ):
            return [
                f"Repository name {name!r} is invalid: each part must start with a letter and "
                "contain only letters, digits, '_', '-' and single dots"
            ]
    return []


def repositories_dir() -> Path:
    return Path(settings.CRUNCH_GIT_DIR) / "repositories"


def repository_path(uuid: str) -> Path:
    """Hosted repositories live at `<CRUNCH_DATA_DIR>/git/repositories/<uuid>.git`."""
    return repositories_dir() / f"{uuid}.git"


# After a push: when HEAD names no existing branch (a new repository whose first push was
# not `main`), point it at `main`, else `master`, else the first branch, so that clones get
# a checkout and a job's default script_version (HEAD) resolves. Fixed text: no user input.
POST_RECEIVE_HOOK = """#!/bin/sh
git rev-parse -q --verify HEAD >/dev/null && exit 0
for branch in main master; do
  if git rev-parse -q --verify "refs/heads/$branch" >/dev/null; then
    exec git symbolic-ref HEAD "refs/heads/$branch"
  fi
done
first=$(git for-each-ref --count=1 --format='%(refname)' refs/heads/)
[ -n "$first" ] && exec git symbolic-ref HEAD "$first"
exit 0
"""


def repository_init(uuid: str) -> Path:
    """Create the bare repository for `uuid` (idempotent); pushes over HTTP are allowed."""
    path = repository_path(uuid)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, bare=True, initial_branch="main")
        with repo.config_writer() as config:
            config.set_value("http", "receivepack", "true")
            config.set_value("core", "sharedRepository", "false")
    hook = path / "hooks" / "post-receive"
    if not hook.exists() or hook.read_text() != POST_RECEIVE_HOOK:
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(POST_RECEIVE_HOOK)
        hook.chmod(0o755)
    return path


def hosted_git_dir(*, user: User | None, repo: str, restrict: bool = True) -> Path:
    """The on-disk directory of the hosted repository named `repo` that `user` can read
    (any user's when `restrict` is false)."""
    not_found = RepositoryUnusable(f"Repository not found: '{repo}'")
    if not isinstance(repo, str) or not repo or "\x00" in repo:
        raise not_found
    if restrict and user is None:
        raise not_found
    # A request asks several times (the commit, the script in it, the internal tag): the
    # answer is kept on the user object, which lives as long as the request, as the
    # permission map is.
    cache: dict[str, Path] | None = getattr(user, "_hosted_git_dirs", None) if restrict else None
    if cache is not None and repo in cache and (cache[repo] / "HEAD").is_file():
        return cache[repo]
    # The rows by name, then the read check against the user's (cached) permission map, as
    # `selectors.readable_object` does: cheaper than joining the permission condition in.
    # Written out: every submission asks, and the ORM's query building cost more than the
    # query.
    rows = rowsql.fetch_all(
        f"SELECT uuid, owner_uuid FROM {Repository._meta.db_table} WHERE name = %s LIMIT 2",
        [repo],
    )
    found = [Repository(uuid=uuid, owner_uuid=owner) for uuid, owner in rows]
    if restrict:
        assert user is not None
        found = [r for r in found if permissions.can_read(user, r)]
    if not found:
        raise not_found
    if len(found) > 1:
        log.error("several repositories are named %r", repo)
        raise RepositoryUnusable("Name conflict")
    path = repository_path(found[0].uuid)
    if not (path / "HEAD").is_file():
        raise RepositoryUnusable(f"no local repository for '{repo}'")
    if restrict and user is not None:
        if cache is None:
            cache = {}
            user._hosted_git_dirs = cache  # type: ignore[attr-defined]
        cache[repo] = path
    return path
