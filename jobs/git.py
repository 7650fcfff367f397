"""Hosted git repositories: names, paths on disk, creation.

Every git command runs with an argument list (never a shell), with user text only in
positions where git cannot read it as an option, and with ARVADOS_API_TOKEN removed from the
environment so credential helpers cannot see it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import git
from django.conf import settings

# One component of a repository name: a letter first, then letters, digits, `_`, `-`, `.`.
_NAME_PART_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")


def name_errors(name: str) -> list[str]:
    """Why `name` cannot name a repository (empty list when it can)."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or len(parts) > 2:
        return ["Repository name must be <owner>/<name> or <name>"]
    for part in parts:
        if not _NAME_PART_RE.match(part) or ".." in part or part.endswith((".git", ".lock", ".")):
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


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ARVADOS_API_TOKEN"}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    return env


def repository_init(uuid: str) -> Path:
    """Create the bare repository for `uuid` (idempotent); pushes over HTTP are allowed."""
    path = repository_path(uuid)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, bare=True, initial_branch="main")
        with repo.config_writer() as config:
            config.set_value("http", "receivepack", "true")
            config.set_value("core", "sharedRepository", "false")
    return path
