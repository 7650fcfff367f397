"""Remote repositories (`http://`, `https://`, `git://` URLs): one fetch cache per URL under
`<CRUNCH_GIT_DIR>/remote/<sha1 of the URL>.git`, so commits never leak between URLs; and
`git_dir_for`, which finds the commits of any repository name (spec §4 step 4)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from django.conf import settings

from jobs.exceptions import RepositoryUnusable
from jobs.git.hosted import hosted_git_dir
from jobs.git.run import CONTROL_RE, git_env, init_bare, locked, redact, run_git
from jobs.models import User


def remote_cache_path(url: str) -> Path:
    """The fetch cache of a remote URL: `<CRUNCH_GIT_DIR>/remote/<sha1 hex of the URL>.git`."""
    digest = hashlib.sha1(url.encode("utf-8", "surrogateescape")).hexdigest()
    return Path(settings.CRUNCH_GIT_DIR) / "remote" / f"{digest}.git"


# --- Locating the git directory ---------------------------------------------------------------

_REMOTE_RE = re.compile(r"^(https?|git)://")
_URL_SCHEME_RE = re.compile(r"^[a-z]+://")


def is_remote(repo: str) -> bool:
    """`http://`, `https://` and `git://` URLs name remote repositories; anything else
    (`file:///x.git`, `/abs/path`, `github.com/x.git`) is the name of a hosted one."""
    return isinstance(repo, str) and bool(_REMOTE_RE.match(repo))


def remote_fetch(url: str) -> Path:
    """Bring the cache of `url` up to date and return its path.

    Creates the cache if missing, then fetches every remote branch into the local branch of
    the same name, plus all tags, with force and prune. Any failure raises.
    """
    # Never a "--flag" or a bare path (git's local-clone tricks) in the URL position.
    if not _URL_SCHEME_RE.match(url) or CONTROL_RE.search(url):
        raise RepositoryUnusable(f"invalid git url {redact(url)}")
    path = remote_cache_path(url)
    what = f"git fetch from {redact(url)} failed"
    env = git_env()
    # Redirects and helpers must not take git to another transport (ext::, file://...).
    env["GIT_ALLOW_PROTOCOL"] = "http:https:git"
    with locked(path):
        init_bare(path, what=what)
        run_git(
            path,
            "fetch",
            "--quiet",
            "--no-progress",
            "--tags",
            "--prune",
            "--force",
            "--update-head-ok",
            "--",
            url,
            "refs/heads/*:refs/heads/*",
            what=what,
            env=env,
        )
    return path


def git_dir_for(*, user: User | None, repo: str, fetch: bool = True) -> Path:
    """Where the commits of `repo` are (spec §4 step 4): a remote URL's cache (fetched
    first unless `fetch` is false), or a hosted repository readable by `user`."""
    if is_remote(repo):
        if fetch:
            return remote_fetch(repo)
        path = remote_cache_path(repo)
        if not (path / "HEAD").is_file():
            raise RepositoryUnusable(f"no local repository for {redact(repo)}")
        return path
    return hosted_git_dir(user=user, repo=repo)
