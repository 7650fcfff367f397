"""Git: hosted repositories, remote caches, commit ranges (spec §4), internal tags (§2.12) and
the CGI side of git smart HTTP.

- `run`: running git (environment, timeouts, locks, atomic bare init);
- `refs`: which text may be handed to git as a revision;
- `hosted`: hosted repositories (`<CRUNCH_GIT_DIR>/repositories/<uuid>.git`);
- `remote`: fetch caches of remote URLs (`<CRUNCH_GIT_DIR>/remote/<sha1 of the URL>.git`)
  and `git_dir_for`, which finds any repository's commits;
- `pipes`: the long-running `cat-file --batch-check` / `update-ref --stdin` processes;
- `commits`: resolving refs, commit ranges, paths in a commit;
- `internal`: the internal repository (`<CRUNCH_GIT_DIR>/internal.git`), commits tagged with
  the uuids of the jobs that ran them;
- `http`: the CGI side of git smart HTTP.

Every git command runs with an argument list (never a shell), with user text only where git
cannot read it as an option (after `--`, or on stdin), with ARVADOS_API_TOKEN removed from the
environment so credential helpers cannot see it, and with a timeout (CRUNCH_GIT_TIMEOUT).

Errors follow the contract of §4: a revision that does not exist is an *empty result*; a
repository that cannot be used (unknown, unreadable, fetch failed, git failed or timed out)
*raises* `RepositoryUnusable`, so a transient problem never looks like a bad revision.

The names other packages use are re-exported here.
"""

from jobs.git.commits import find_commit_range, path_exists, resolve_commit
from jobs.git.hosted import name_errors, repositories_dir, repository_init, repository_path
from jobs.git.http import (
    READ,
    WRITE,
    Access,
    BackendBody,
    BackendResponse,
    http_access,
    http_backend,
    http_repository,
)
from jobs.git.internal import internal_repository_path, tag_in_internal_repository
from jobs.git.refs import check_ref_format
from jobs.git.remote import git_dir_for, is_remote, remote_cache_path, remote_fetch
from jobs.git.run import git_env

__all__ = [
    "READ",
    "WRITE",
    "Access",
    "BackendBody",
    "BackendResponse",
    "check_ref_format",
    "find_commit_range",
    "git_dir_for",
    "git_env",
    "http_access",
    "http_backend",
    "http_repository",
    "internal_repository_path",
    "is_remote",
    "name_errors",
    "path_exists",
    "remote_cache_path",
    "remote_fetch",
    "repositories_dir",
    "repository_init",
    "repository_path",
    "resolve_commit",
    "tag_in_internal_repository",
]
