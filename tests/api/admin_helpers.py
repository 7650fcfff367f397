"""Data for the admin tests: jobs, nodes and log chunks written straight to the database
(the admin shows whatever state they are in), and a hosted repository for requeueing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.utils import timezone

from jobs import git
from jobs.models import Job, Node
from tests.git_helpers import Example, build_example, in_bare
from tests.rows import add_chunks

PASSWORD = "correct horse battery staple"


def with_password(user: Any) -> Any:
    user.set_password(PASSWORD)
    user.save()
    return user


def make_node(hostname: str, *, alive: bool = True, concurrency: int = 1, **info: Any) -> Node:
    now = timezone.now()
    seen = now if alive else now - dt.timedelta(hours=1)
    return Node.objects.create(
        uuid=Node.new_uuid(),
        owner_uuid="zzzzz-tpzed-000000000000000",
        created_at=now,
        modified_at=now,
        hostname=hostname,
        first_ping_at=seen,
        last_ping_at=seen,
        info={"cores": 4, "ram_mb": 8192, "labels": [], "concurrency": concurrency, **info},
    )


def log_lines(job: Job, lines: list[str], *, start: int = 0) -> None:
    """One chunk per line, numbered from `start`."""
    add_chunks(job, [f"{line}\n" for line in lines], start=start)


def hosted_foo(api: Any, token: str, tmp_path: Path) -> Example:
    """`active/foo` holding the spec's example history (master = C3), HEAD at b1."""
    repo = api.ok("POST", "repositories", body={"repository": {"name": "active/foo"}}, token=token)
    example = build_example(tmp_path / "example")
    bare = git.repository_path(repo["uuid"])
    example.git("push", "-q", str(bare), "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
    in_bare(example.env, bare, "symbolic-ref", "HEAD", "refs/heads/b1")
    return example
