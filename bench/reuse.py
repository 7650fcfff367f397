"""find_or_create latency on a million jobs, against a get-by-uuid and the original's git calls.

    .venv/bin/python bench/reuse.py [--jobs N] [--requests N] [--database-url URL]

What it does:

1. Uses a real PostgreSQL (`--database-url`, default
   postgres://postgres@127.0.0.1:5432/crunch_bench_reuse), creating the database if missing,
   and migrates it. Only the benchmark's own rows are ever deleted (fixed `bench` uuids, and
   jobs it created itself, marked by their description).
2. Creates 100 hosted repositories on disk under `--data-dir` (default
   `<tmp>/crunch-bench-reuse`) with `git fast-import`: `benchuser/hits` has 1,500 commits on
   `main`, the others 100 each, 20 scripts per repository. Dates and contents are fixed, so
   the commit ids are the same on every machine and every run.
3. Bulk-loads `--jobs` jobs (default 1,000,000) with COPY, not through the API: every
   (repository, script) pair gets about the same number of jobs, with parameter sets drawn
   from a shared pool with a skewed popularity (so digests repeat across scripts and
   repositories), script versions drawn from the repository's commits (skewed to recent),
   mixed states (Complete 80%, Failed 12%, Cancelled 5%, Queued 2%, Running 1%) and owners
   (the bench user, a project shared with it, another user, a private project). Plus the
   jobs the hits find: `hit` in `benchuser/hits` with one parameter set, 40 jobs over the
   last 1,400 commits (Complete ones agree on the output; Failed, Cancelled, another user's
   Queued/Running, an unreadable Complete one), with output and log collections readable
   by the bench user. A re-run reuses the data when the layout and count match.
4. Starts the real server (`crunch serve`, `bench.settings`) and measures, interleaved
   round-robin (the order rotates every round), one request at a time, each endpoint on its
   own keep-alive connection:
   - `get`: GET /arvados/v1/jobs/<uuid> of the job the hits reuse;
   - `hit_filters`: POST /arvados/v1/jobs?find_or_create=true with filters
     `[["repository","=",..],["script","=",..],["script_version","in git",<commit 1,000
     before main>]]`, script_version `main`: the range is 1,000 commits plus the minimum;
   - `hit_legacy`: the same without filters (the legacy form: script_version `main`);
   - `hit_command`: POST /arvados/v1/jobs?find_or_create=true of a command job (an argv over
     an uploaded directory, its environment in another order) that one completed job has:
     found by its reuse key among the million;
   - `miss`: like `hit_filters` with parameters no job has (different every request): a job
     is created (resolution, validation, internal tag, insert);
   - `original_git`: the original's per-request git processes, as subprocesses timed here:
     `git check-ref-format --allow-onelevel` for min and for max, and
     `git rev-list <min>..<max>` (the target's baseline);
   - `original_git_full`: for information, every git process the original's
     find_commit_range ran for that request (spec §4): the same plus
     `git rev-list --max-count=1` to resolve max and min;
   - `crunch_git`: for information, `jobs.git.find_commit_range` for the same range, called
     in this process (includes the repository lookup query).
5. Prints median, p90 and mean latency, SQL queries per request (counted in-process with
   django.test.Client), and the ratios against the targets: a hit at most 1.5x a get, and a
   hit faster than the original's git subprocesses alone.

It reports; it does not assert: the exit status is 0 whether or not targets are met (non-zero
only if the benchmark itself could not run, e.g. a request failed or answered wrongly).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as `python bench/reuse.py`, sys.path[0] is bench/, where bench/api.py would shadow the
# `api` package; put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid as uuidlib  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import quote, urlencode, urlsplit  # noqa: E402

from bench.api import (  # noqa: E402
    _fixed_uuid,
    ensure_database,
    free_port,
    p90,
    start_server,
    stop_server,
    wait_until_up,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crunch_bench_reuse"
DEFAULT_JOBS = 1_000_000
DATA_LAYOUT = 1  # bump when the loaded data changes; a re-run then reloads

N_REPOSITORIES = 100
HIT_REPOSITORY = "benchuser/hits"
HIT_SCRIPT = "hit"
HIT_COMMITS = 1_500
OTHER_COMMITS = 100
SCRIPTS_PER_REPOSITORY = 20
RANGE = 1_000  # the `in git` minimum is this many commits before main
PARAMETER_POOL = 20_000
OUTPUT_POOL = 20_000
IMAGES = 5
MISS_DESCRIPTION = "bench-reuse miss"  # jobs the benchmark created; deleted on the next run
BASE_TIME = 1_600_000_000  # commit dates: fixed, so commit ids are the same everywhere
TARGETS = {"hit/get": 1.5, "hit/original_git": 1.0}

HIT_PARAMETERS = {
    "input": "0f1e2d3c4b5a69788796a5b4c3d2e1f0+1048576",
    "reference": "GRCh38",
    "threads": 8,
}


# --- git ------------------------------------------------------------------------------------


def fast_import_stream(n_commits: int, scripts: list[str]) -> bytes:
    """A linear history on refs/heads/main: commit i changes crunch_scripts/<one script>;
    a lightweight tag v<k> every 100 commits. Fixed dates and contents."""
    out: list[bytes] = []
    for i in range(1, n_commits + 1):
        message = f"commit {i}\n".encode()
        stamp = BASE_TIME + 60 * i
        out.append(
            b"commit refs/heads/main\nmark :%d\n"
            b"committer Bench <bench@example.com> %d +0000\ndata %d\n%s"
            % (i, stamp, len(message), message)
        )
        if i > 1:
            out.append(b"from :%d\n" % (i - 1))
        if i <= len(scripts):  # every script exists from the first commits on
            script = scripts[i - 1]
        else:
            script = scripts[i % len(scripts)]
        content = f"#!/bin/sh\necho {script} at commit {i}\n".encode()
        out.append(
            b"M 100755 inline crunch_scripts/%s\ndata %d\n%s\n"
            % (script.encode(), len(content), content)
        )
        if i % 100 == 0:
            out.append(b"reset refs/tags/v%d\nfrom :%d\n\n" % (i // 100, i))
    return b"".join(out)


def _git_out(git_dir: Path, *args: str, stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=stdin,
        capture_output=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: git {args[0]} in {git_dir} failed: {proc.stderr.decode()}")
    return proc.stdout.decode()


def build_repository(path: Path, n_commits: int, scripts: list[str]) -> list[str]:
    """The repository's commits on main, newest first; built with fast-import if missing
    (or if it is not what this layout builds)."""
    from jobs import git

    if (path / "HEAD").is_file():
        proc = subprocess.run(
            ["git", f"--git-dir={path}", "rev-list", "refs/heads/main", "--"],
            capture_output=True,
            check=False,
        )
        commits = proc.stdout.decode().split()
        if proc.returncode == 0 and len(commits) == n_commits:
            return commits
        import shutil

        shutil.rmtree(path)
    git.repository_init(path.name.removesuffix(".git"))
    _git_out(path, "fast-import", "--quiet", stdin=fast_import_stream(n_commits, scripts))
    _git_out(path, "symbolic-ref", "HEAD", "refs/heads/main")
    commits = _git_out(path, "rev-list", "refs/heads/main", "--").split()
    if len(commits) != n_commits:
        raise SystemExit(f"bench: {path} has {len(commits)} commits, expected {n_commits}")
    return commits


# --- the data -------------------------------------------------------------------------------


@dataclass
class Fixture:
    user: Any
    token: str
    hit_repo_path: Path
    head: str  # main in the hit repository
    minimum: str  # RANGE commits before main
    filters_hit_uuid: str  # what hit_filters must return
    legacy_hit_uuid: str  # what hit_legacy must return
    jobs_total: int
    command_hit_uuid: str = ""  # what hit_command must return
    command_workdir: str = ""  # its working directory (a PDH)


def manifest_for(name: str, content: str) -> tuple[str, str]:
    """A one-file manifest and its portable data hash."""
    data = content.encode()
    manifest = f". {hashlib.md5(data).hexdigest()}+{len(data)} 0:{len(data)}:{name}\n"
    return manifest, f"{hashlib.md5(manifest.encode()).hexdigest()}+{len(manifest)}"


def _copy_columns(model: Any) -> tuple[list[str], dict[str, Any]]:
    """COPY columns of `model` (all but the primary key) and the value each gets unless a
    row says otherwise: the field's default (Django defaults live in Python, not in SQL)."""
    from django.db.models import NOT_PROVIDED

    columns, defaults = [], {}
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(f.column)
        default = f.default if f.default is not NOT_PROVIDED and not callable(f.default) else None
        defaults[f.column] = default
    return columns, defaults


def copy_rows(conn: Any, model: Any, rows: Iterator[dict[str, Any]]) -> int:
    """COPY dict rows into `model`'s table (JSON fields given as Python objects)."""
    from django.db.models import JSONField

    columns, defaults = _copy_columns(model)
    json_columns = {f.column for f in model._meta.concrete_fields if isinstance(f, JSONField)}
    table = model._meta.db_table
    n = 0
    with conn.cursor() as cursor:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(sql) as copy:
            for row in rows:
                values = []
                for column in columns:
                    value = row.get(column, defaults[column])
                    if column in json_columns and value is not None:
                        value = json.dumps(value, separators=(",", ":"))
                    values.append(value)
                copy.write_row(values)
                n += 1
    return n


def load_data(*, n_jobs: int, database_url: str) -> Fixture:
    from django.db import connection, transaction
    from django.utils import timezone

    from jobs import git
    from jobs.models import Collection, Group, Job, Link, Repository
    from jobs.services.jobs import parameters_digest
    from jobs.services.tokens import token_create, user_get_or_create

    user = user_get_or_create(username="benchuser")
    other = user_get_or_create(username="benchother")
    now = timezone.now()

    def group(tag: int, name: str, owner: str) -> Any:
        obj, _ = Group.objects.get_or_create(
            uuid=_fixed_uuid(Group, "benchr", tag),
            defaults={
                "name": name,
                "owner_uuid": owner,
                "group_class": "project",
                "created_at": now,
                "modified_at": now,
            },
        )
        return obj

    shared = group(1, "bench reuse shared project", other.uuid)
    private = group(2, "bench reuse private project", other.uuid)
    Link.objects.get_or_create(
        uuid=_fixed_uuid(Link, "benchr", 1),
        defaults={
            "link_class": "permission",
            "name": "can_read",
            "tail_uuid": user.uuid,
            "head_uuid": shared.uuid,
            "owner_uuid": other.uuid,
            "created_at": now,
            "modified_at": now,
            "properties": {},
        },
    )

    # Repositories: the hit repository first; half of the rest are the bench user's, half
    # the other user's, shared with the bench user through a permission link.
    started = time.perf_counter()
    repos: list[tuple[str, list[str], list[str]]] = []  # name, scripts, commits (newest first)
    for r in range(N_REPOSITORIES):
        if r == 0:
            name, owner, n_commits = HIT_REPOSITORY, user.uuid, HIT_COMMITS
            scripts = [HIT_SCRIPT, *(f"s{k}" for k in range(SCRIPTS_PER_REPOSITORY - 1))]
        else:
            mine = r % 2 == 1
            name = f"{'benchuser' if mine else 'benchother'}/pipeline{r:02d}"
            owner, n_commits = (user.uuid if mine else other.uuid), OTHER_COMMITS
            scripts = [f"s{k}" for k in range(SCRIPTS_PER_REPOSITORY)]
        repo_uuid = _fixed_uuid(Repository, "benchr", r)
        Repository.objects.get_or_create(
            uuid=repo_uuid,
            defaults={"name": name, "owner_uuid": owner, "created_at": now, "modified_at": now},
        )
        if owner == other.uuid:
            Link.objects.get_or_create(
                uuid=_fixed_uuid(Link, "benchrr", r),
                defaults={
                    "link_class": "permission",
                    "name": "can_read",
                    "tail_uuid": user.uuid,
                    "head_uuid": repo_uuid,
                    "owner_uuid": other.uuid,
                    "created_at": now,
                    "modified_at": now,
                    "properties": {},
                },
            )
        commits = build_repository(git.repository_path(repo_uuid), n_commits, scripts)
        repos.append((name, scripts, commits))
    print(f"{N_REPOSITORIES} repositories ready in {time.perf_counter() - started:.1f}s")
    hit_commits = repos[0][2]
    head, minimum = hit_commits[0], hit_commits[RANGE]

    # Job uuids: "bench" + 10 digits, in load order; the hit jobs come first.
    def job_uuid(i: int) -> str:
        return _fixed_uuid(Job, "bench", i)

    marker = f"bench-reuse layout {DATA_LAYOUT}, {n_jobs} jobs, head {head}"
    bench_jobs = Job.objects.filter(uuid__startswith=job_uuid(0)[:-10])
    removed, _ = Job.objects.filter(description=MISS_DESCRIPTION).delete()
    if removed:
        print(f"deleted {removed} jobs created by an earlier run")
    current = Job.objects.filter(uuid=job_uuid(0), description=marker).exists()
    have = bench_jobs.count() if current else None
    if have != n_jobs:
        if current or bench_jobs.exists():
            print("found bench jobs of another layout or count: reloading")
        _load_jobs(
            n_jobs=n_jobs,
            database_url=database_url,
            repos=repos,
            user=user,
            other=other,
            shared=shared,
            private=private,
            marker=marker,
            job_uuid=job_uuid,
        )
        with connection.cursor() as cursor:
            for model in (Job, Collection, Repository, Link, Group):
                cursor.execute(f"ANALYZE {model._meta.db_table}")
    else:
        print(f"reusing {have} bench jobs")

    # What the hits must return (§3.5-3.6): the oldest readable Complete job in range (the
    # filters form), the oldest readable Complete job at main (the legacy form).
    in_range = set(hit_commits[: RANGE + 1])
    hit_digest = parameters_digest(HIT_PARAMETERS)
    hit_jobs = list(
        Job.objects.filter(
            repository=HIT_REPOSITORY,
            script=HIT_SCRIPT,
            script_parameters_digest=hit_digest,
            state="Complete",
            owner_uuid=user.uuid,
        ).order_by("created_at")
    )
    filters_hit = next(j for j in hit_jobs if j.script_version in in_range)
    legacy_hit = next(j for j in hit_jobs if j.script_version == head)

    with transaction.atomic():
        token = token_create(user=user).api_token
    assert token is not None
    command_hit_uuid, command_workdir = command_hit(user)
    return Fixture(
        command_hit_uuid=command_hit_uuid,
        command_workdir=command_workdir,
        user=user,
        token=token,
        hit_repo_path=git.repository_path(_fixed_uuid(Repository, "benchr", 0)),
        head=head,
        minimum=minimum,
        filters_hit_uuid=filters_hit.uuid,
        legacy_hit_uuid=legacy_hit.uuid,
        jobs_total=n_jobs,
    )


COMMAND = ["python3", "train.py", "--epochs", "3"]
COMMAND_ENVIRONMENT = {"SEED": "7", "MODE": "fast"}
COMMAND_DESCRIPTION = "bench: the command job hit_command reuses"


def command_hit(user: Any) -> tuple[str, str]:
    """A completed command job of `user` over an uploaded directory, made through the job
    service (so its reuse key is the product's), that `hit_command` must return; and that
    directory's PDH. Among a million jobs with keys of their own, it is found by its key."""
    from jobs.models import Collection, Job
    from jobs.services.jobs import SERVICE
    from jobs.services.objects import Actor
    from jobs.services.resources import service_for
    from jobs.services.tokens import system_user

    found = Job.objects.filter(description=COMMAND_DESCRIPTION, owner_uuid=user.uuid).first()
    if found is not None:  # a re-run over the same data
        return found.uuid, str(found.working_dir)

    def collection(name: str, content: str) -> str:
        made = service_for(Collection).create(
            actor=Actor(system_user()),
            attrs={"manifest_text": manifest_for(name, content)[0], "owner_uuid": user.uuid},
        )
        return str(made.portable_data_hash)

    workdir = collection("train.py", "print('training')\n")
    job = SERVICE.create(
        actor=Actor(user),
        attrs={
            "command": COMMAND,
            "working_dir": workdir,
            "environment": COMMAND_ENVIRONMENT,
            "state": "Complete",
            "output": collection("model.txt", "the command's output\n"),
            "log": collection("job.log", "the command's log\n"),
            "description": COMMAND_DESCRIPTION,
        },
    )
    return job.uuid, workdir


def _load_jobs(
    *,
    n_jobs: int,
    database_url: str,
    repos: list[tuple[str, list[str], list[str]]],
    user: Any,
    other: Any,
    shared: Any,
    private: Any,
    marker: str,
    job_uuid: Callable[[int], str],
) -> None:
    import psycopg

    from jobs.models import Collection, Job
    from jobs.services.jobs import parameters_digest

    started = time.perf_counter()
    rng = random.Random(20240601)
    base = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    span = 700 * 86400  # seconds of history

    # Collections: a pool of outputs and logs for the background jobs, plus the hit jobs'.
    outputs: list[str] = []
    collection_rows: list[dict[str, Any]] = []

    def collection(tag: int, name: str, content: str, owner: str) -> str:
        manifest, pdh = manifest_for(name, content)
        stamp = base + dt.timedelta(seconds=rng.randrange(span))
        collection_rows.append(
            {
                "uuid": _fixed_uuid(Collection, "benchr", tag),
                "owner_uuid": owner,
                "created_at": stamp,
                "modified_at": stamp,
                "modified_by_user_uuid": user.uuid,
                "name": name,
                "manifest_text": manifest,
                "portable_data_hash": pdh,
                "properties": {},
                "is_trashed": False,
                "file_count": 1,
                "file_size_total": len(content),
            }
        )
        return pdh

    owners_cycle = [user.uuid, shared.uuid, other.uuid, private.uuid]
    for k in range(OUTPUT_POOL):
        outputs.append(collection(k, "output.txt", f"output {k}\n", owners_cycle[k % 4]))
    logs = [
        collection(OUTPUT_POOL + k, "job.log", f"log {k}\n", owners_cycle[k % 4])
        for k in range(OUTPUT_POOL)
    ]
    hit_output = collection(2 * OUTPUT_POOL, "output.txt", "the hit output\n", user.uuid)
    hit_logs = [
        collection(2 * OUTPUT_POOL + 1 + k, "job.log", f"hit log {k}\n", user.uuid)
        for k in range(40)
    ]
    images = [manifest_for("image.tar", f"image {k}\n")[1] for k in range(IMAGES)]

    # Parameter sets: a shared pool; each (repository, script) pair draws ~100 of them with
    # a skewed popularity, so a digest repeats within a pair and across pairs.
    pool = [
        {"input": manifest_for("in", f"input {k % 5000}\n")[1], "chunk": k // 5000, "k": k % 7}
        for k in range(PARAMETER_POOL)
    ]
    pool_digests = [parameters_digest(p) for p in pool]

    system = f"{user.uuid[:5]}-tpzed-000000000000000"
    state_weights = [
        ("Complete", 80),
        ("Failed", 12),
        ("Cancelled", 5),
        ("Queued", 2),
        ("Running", 1),
    ]
    state_table = [s for s, w in state_weights for _ in range(w)]
    owner_table = [user.uuid] * 3 + [shared.uuid] * 3 + [other.uuid] * 2 + [private.uuid] * 2

    def job_row(
        i: int,
        *,
        repository: str,
        script: str,
        commit: str,
        supplied: str,
        params: Any,
        digest: str,
        state: str,
        owner: str,
        created: dt.datetime,
        output: str | None = None,
        log: str | None = None,
        image: str | None = None,
        nondeterministic: bool | None = None,
    ) -> dict[str, Any]:
        started_at = created + dt.timedelta(seconds=30) if state != "Queued" else None
        finished = created + dt.timedelta(seconds=600) if state in ("Complete", "Failed") else None
        cancelled = created + dt.timedelta(seconds=120) if state == "Cancelled" else None
        if state == "Cancelled":
            started_at = None
        row = {
            "uuid": job_uuid(i),
            "owner_uuid": owner,
            "created_at": created,
            "modified_at": finished or cancelled or started_at or created,
            "modified_by_user_uuid": user.uuid if owner in (user.uuid, shared.uuid) else other.uuid,
            "priority": 1 if state in ("Queued", "Running") else 0,
            "script": script,
            "script_parameters": params,
            "script_parameters_digest": digest,
            "script_version": commit,
            "supplied_script_version": supplied,
            "repository": repository,
            "state": state,
            "running": state == "Running",
            "success": {"Complete": True, "Failed": False, "Cancelled": False}.get(state),
            "started_at": started_at,
            "finished_at": finished,
            "cancelled_at": cancelled,
            "cancelled_by_user_uuid": other.uuid if cancelled else None,
            "is_locked_by_uuid": system if state == "Running" else None,
            "output": output if state == "Complete" else None,
            "log": log if state in ("Complete", "Failed", "Cancelled") else None,
            "runtime_constraints": {"docker_image": "arvados/jobs"} if image else {},
            "docker_image_locator": image,
            "nondeterministic": nondeterministic,
            "tasks_summary": {"done": 1, "running": 0, "failed": 0, "todo": 0} if finished else {},
        }
        return row

    hit_digest = parameters_digest(HIT_PARAMETERS)
    hit_commits = repos[0][2]

    def hit_rows() -> Iterator[dict[str, Any]]:
        """40 jobs with the hit parameters in the hit pair. Versions are commit indexes
        (0 = main); created_at increases with the list order, so the first Complete one in
        range is what `hit_filters` must return."""
        plan: list[tuple[int, str, str]] = [  # (commit index, state, owner)
            (1400, "Complete", user.uuid),  # out of range (older than the minimum)
            (1100, "Complete", user.uuid),  # out of range
            (RANGE, "Failed", user.uuid),
            (900, "Complete", private.uuid),  # in range but unreadable: not a candidate
            (800, "Complete", user.uuid),  # the oldest readable Complete in range: reused
        ]
        for k in range(25):
            plan.append((700 - 28 * k, "Complete", [user.uuid, shared.uuid][k % 2]))
        plan += [(0, "Complete", user.uuid)]  # at main: the legacy form's oldest Complete
        plan += [(5 * k, "Failed", user.uuid) for k in range(4)]
        plan += [(3, "Cancelled", user.uuid), (9, "Cancelled", shared.uuid)]
        plan += [(0, "Queued", other.uuid), (0, "Running", other.uuid)]
        plan += [(0, "Complete", user.uuid)]  # a later job at main, same output
        assert len(plan) == 40, len(plan)
        first = base + dt.timedelta(days=100)
        for k, (index, state, owner) in enumerate(plan):
            yield job_row(
                k,
                repository=HIT_REPOSITORY,
                script=HIT_SCRIPT,
                commit=hit_commits[index],
                supplied="main" if index == 0 else hit_commits[index],
                params=HIT_PARAMETERS,
                digest=hit_digest,
                state=state,
                owner=owner,
                created=first + dt.timedelta(days=10 * k),
                output=hit_output,
                log=hit_logs[k],
            )

    n_hit = 40
    pairs = [(name, script, commits) for name, scripts, commits in repos for script in scripts]

    def background_rows() -> Iterator[dict[str, Any]]:
        for i in range(n_hit, n_jobs):
            p = i % len(pairs)
            repository, script, commits = pairs[p]
            # ~100 parameter sets per pair, popularity skewed (rank ~ 100 * u^3).
            rank = int(100 * rng.random() ** 3)
            if rank == 0 and rng.random() < 0.02:
                params, digest = HIT_PARAMETERS, hit_digest  # the hit digest, elsewhere
                if repository == HIT_REPOSITORY and script == HIT_SCRIPT:
                    params, digest = pool[0], pool_digests[0]
            else:
                q = (p * 7919 + rank * 104729) % PARAMETER_POOL
                params, digest = pool[q], pool_digests[q]
            index = min(int(len(commits) * rng.random() ** 2), len(commits) - 1)
            state = state_table[rng.randrange(len(state_table))]
            owner = owner_table[rng.randrange(len(owner_table))]
            yield job_row(
                i,
                repository=repository,
                script=script,
                commit=commits[index],
                supplied=commits[index] if rng.random() < 0.5 else "main",
                params=params,
                digest=digest,
                state=state,
                owner=owner,
                created=base + dt.timedelta(seconds=rng.randrange(span)),
                output=outputs[rng.randrange(OUTPUT_POOL)],
                log=logs[rng.randrange(OUTPUT_POOL)],
                image=images[rng.randrange(IMAGES)] if rng.random() < 0.3 else None,
                nondeterministic=True if rng.random() < 0.02 else None,
            )

    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cursor:
            prefix = job_uuid(0)[:-10]
            cursor.execute("DELETE FROM jobs WHERE uuid LIKE %s", [prefix + "%"])
            cursor.execute(
                f"DELETE FROM {Collection._meta.db_table} WHERE uuid LIKE %s",
                [_fixed_uuid(Collection, "benchr", 0)[:-9] + "%"],
            )
        copy_rows(conn, Collection, iter(collection_rows))

        def all_rows() -> Iterator[dict[str, Any]]:
            for n, row in enumerate(_chain(hit_rows(), background_rows())):
                if n == 0:
                    row["description"] = marker
                if n and n % 100_000 == 0:
                    print(f"  {n} jobs ({time.perf_counter() - started:.0f}s)", flush=True)
                yield row

        loaded = copy_rows(conn, Job, all_rows())
        conn.commit()
    print(
        f"loaded {loaded} jobs and {len(collection_rows)} collections with COPY in "
        f"{time.perf_counter() - started:.1f}s"
    )


def _chain(*iterators: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for it in iterators:
        yield from it


# --- what is measured -----------------------------------------------------------------------


@dataclass
class Endpoint:
    name: str
    call: Callable[[], tuple[float, Any]]  # -> (milliseconds, answer)
    samples: list[float] = field(default_factory=list)


class Http:
    """One keep-alive connection; reconnects if the server closes it."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: Any = None) -> tuple[float, Any]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
                continue
            elapsed = (time.perf_counter() - started) * 1000.0
            if response.status != 200:
                raise SystemExit(
                    f"bench: {method} {path} answered {response.status}: {raw[:400]!r}"
                )
            return elapsed, json.loads(raw)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def requests_for(fx: Fixture, run_id: str) -> dict[str, tuple[str, str, Callable[[], Any]]]:
    """name -> (method, path, body factory) of the HTTP endpoints."""
    filters = [
        ["repository", "=", HIT_REPOSITORY],
        ["script", "=", HIT_SCRIPT],
        ["script_version", "in git", fx.minimum],
    ]
    create = "/arvados/v1/jobs?" + urlencode(
        {"find_or_create": "true", "filters": json.dumps(filters, separators=(",", ":"))},
        quote_via=quote,
    )
    legacy = "/arvados/v1/jobs?find_or_create=true"

    def job(params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "job": {
                "repository": HIT_REPOSITORY,
                "script": HIT_SCRIPT,
                "script_version": "main",
                "script_parameters": params,
                **extra,
            }
        }

    counter = iter(range(10**9))
    return {
        "get": ("GET", f"/arvados/v1/jobs/{fx.filters_hit_uuid}", lambda: None),
        "hit_filters": ("POST", create, lambda: job(HIT_PARAMETERS)),
        "hit_legacy": ("POST", legacy, lambda: job(HIT_PARAMETERS)),
        "hit_command": (
            "POST",
            legacy,
            lambda: {
                "job": {
                    "command": COMMAND,
                    "working_dir": fx.command_workdir,
                    # Another order of the same environment: the same identity.
                    "environment": dict(reversed(COMMAND_ENVIRONMENT.items())),
                }
            },
        ),
        "miss": (
            "POST",
            create,
            lambda: job(
                {**HIT_PARAMETERS, "run": run_id, "n": next(counter)},
                description=MISS_DESCRIPTION,
            ),
        ),
    }


def check(name: str, answer: Any, fx: Fixture) -> None:
    """The answers must be the real thing, or the timings mean nothing."""
    if name in ("get", "hit_filters"):
        ok = answer.get("uuid") == fx.filters_hit_uuid and answer.get("state") == "Complete"
    elif name == "hit_command":
        ok = answer.get("uuid") == fx.command_hit_uuid and answer.get("state") == "Complete"
    elif name == "hit_legacy":
        ok = answer.get("uuid") == fx.legacy_hit_uuid and answer.get("script_version") == fx.head
    elif name == "miss":
        ok = (
            answer.get("state") == "Queued"
            and answer.get("script_version") == fx.head
            and answer.get("uuid") not in (fx.filters_hit_uuid, fx.legacy_hit_uuid)
        )
    elif name in ("original_git", "original_git_full"):
        ok = len(answer) == RANGE and answer[0] == fx.head
    elif name == "crunch_git":
        ok = len(answer) == RANGE + 1 and answer[0] == fx.head and answer[-1] == fx.minimum
    else:
        ok = False
    if not ok:
        raise SystemExit(f"bench: unexpected answer from {name}: {json.dumps(answer)[:400]}")


def original_git(fx: Fixture, max_ref: str = "main") -> tuple[float, Any]:
    """The original's per-request git work for `in git <min>` up to `max`, as it did it:
    a process per ref to check its syntax, then `git rev-list min..max`."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    env.pop("ARVADOS_API_TOKEN", None)
    started = time.perf_counter()
    for ref in (fx.minimum, max_ref):
        subprocess.run(
            ["git", "check-ref-format", "--allow-onelevel", ref],
            capture_output=True,
            check=True,
            env=env,
        )
    proc = subprocess.run(
        ["git", f"--git-dir={fx.hit_repo_path}", "rev-list", f"{fx.minimum}..{max_ref}"],
        capture_output=True,
        check=True,
        env=env,
    )
    elapsed = (time.perf_counter() - started) * 1000.0
    return elapsed, proc.stdout.decode().split()


def original_git_full(fx: Fixture, max_ref: str = "main") -> tuple[float, Any]:
    """All the git processes of the original's find_commit_range (spec §4) for the same
    range: check-ref-format for min and max, `rev-list --max-count=1` to resolve each, then
    `rev-list <min>..<max>`."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    env.pop("ARVADOS_API_TOKEN", None)
    git_dir = f"--git-dir={fx.hit_repo_path}"
    started = time.perf_counter()
    for ref in (fx.minimum, max_ref):
        subprocess.run(
            ["git", "check-ref-format", "--allow-onelevel", ref],
            capture_output=True,
            check=True,
            env=env,
        )
    resolved = []
    for ref in (max_ref, fx.minimum):
        proc = subprocess.run(
            ["git", git_dir, "rev-list", "--max-count=1", ref, "--"],
            capture_output=True,
            check=True,
            env=env,
        )
        resolved.append(proc.stdout.decode().strip())
    proc = subprocess.run(
        ["git", git_dir, "rev-list", f"{resolved[1]}..{resolved[0]}"],
        capture_output=True,
        check=True,
        env=env,
    )
    elapsed = (time.perf_counter() - started) * 1000.0
    return elapsed, proc.stdout.decode().split()


def crunch_git(fx: Fixture) -> tuple[float, Any]:
    from jobs import git

    started = time.perf_counter()
    found = git.find_commit_range(
        user=fx.user, repo=HIT_REPOSITORY, min=fx.minimum, max="main", exclude=None
    )
    return (time.perf_counter() - started) * 1000.0, found


def query_counts(fx: Fixture, run_id: str) -> dict[str, int]:
    """SQL queries per request, counted in-process (django.test.Client, same settings)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {fx.token}")
    counts = {}
    for name, (method, path, body) in requests_for(fx, run_id + "-count").items():
        for _ in range(2):  # the first use warms caches (token touch, the internal repository)
            with CaptureQueriesContext(connection) as ctx:
                if method == "GET":
                    response = client.get(path)
                else:
                    response = client.post(
                        path, json.dumps(body()), content_type="application/json"
                    )
            if response.status_code != 200:
                raise SystemExit(
                    f"bench: {name} answered {response.status_code} in-process: "
                    f"{response.content[:400]!r}"
                )
            check(name, response.json(), fx)
        counts[name] = len(ctx.captured_queries)
    with CaptureQueriesContext(connection) as ctx:
        crunch_git(fx)
    counts["crunch_git"] = len(ctx.captured_queries)
    counts["original_git"] = counts["original_git_full"] = 0
    return counts


def _send(conn: Http, method: str, path: str, body: Callable[[], Any]) -> tuple[float, Any]:
    return conn.request(method, path, body())


def measure(eps: list[Endpoint], rounds: int, *, record: bool) -> None:
    n = len(eps)
    for r in range(rounds):
        for k in range(n):
            ep = eps[(r + k) % n]  # rotate the order every round
            elapsed, _ = ep.call()
            if record:
                ep.samples.append(elapsed)


SUBPROCESSES = {
    "original_git": "3 git processes (check-ref-format x2, rev-list)",
    "original_git_full": "5 (check-ref-format x2, rev-list --max-count=1 x2, rev-list)",
}


def report(eps: list[Endpoint], counts: dict[str, int]) -> None:
    by = {ep.name: statistics.median(ep.samples) for ep in eps}
    print()
    print(f"{'endpoint':<18} {'median ms':>10} {'p90 ms':>9} {'mean ms':>9} {'queries':>8}")
    for ep in eps:
        print(
            f"{ep.name:<18} {by[ep.name]:>10.2f} {p90(ep.samples):>9.2f} "
            f"{statistics.fmean(ep.samples):>9.2f} {counts.get(ep.name, '?'):>8}"
        )
    print()
    met: list[bool] = []

    def ratio(a: str, b: str, target: float | None, what: str) -> None:
        value = by[a] / by[b]
        if target is None:
            verdict = "(no target)"
        else:
            ok = value <= target if target != 1.0 else value < 1.0
            met.append(ok)
            bound = f"<= {target:g}x" if target != 1.0 else "< 1x, i.e. faster"
            verdict = f"(target {bound}: {'MET' if ok else 'NOT MET'})"
        print(f"{a}/{b} = {value:.2f}x {verdict}  {what}")

    ratio("hit_filters", "get", TARGETS["hit/get"], "")
    ratio("hit_legacy", "get", TARGETS["hit/get"], "")
    ratio("hit_command", "get", TARGETS["hit/get"], "a command job found by its reuse key")
    ratio("hit_filters", "original_git", TARGETS["hit/original_git"], "whole request vs git alone")
    ratio("hit_legacy", "original_git", TARGETS["hit/original_git"], "whole request vs git alone")
    ratio("hit_filters", "original_git_full", None, "vs every git process the original ran")
    ratio("hit_legacy", "original_git_full", None, "vs every git process the original ran")
    ratio("miss", "get", None, "creates a job")
    ratio("crunch_git", "original_git", None, "our range resolution vs the original's")
    print()
    print(f"targets met: {sum(met)} of {len(met)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, metavar="N", help="jobs to load (1,000,000)"
    )
    parser.add_argument(
        "--requests", type=int, default=400, metavar="N", help="measured per endpoint (400)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, metavar="N", help="unmeasured rounds first (20)"
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--data-dir",
        default=str(Path(tempfile.gettempdir()) / "crunch-bench-reuse"),
        help="CRUNCH_DATA_DIR: repositories live there, kept for re-runs",
    )
    args = parser.parse_args(argv)
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL (postgres://...)")
    if args.requests < 10:
        parser.error("--requests must be at least 10")
    if args.jobs < 1000:
        parser.error("--jobs must be at least 1000")
    data_dir = str(Path(args.data_dir).resolve())
    Path(data_dir).mkdir(parents=True, exist_ok=True)

    ensure_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["CRUNCH_DATA_DIR"] = data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.pop("CRUNCH_DEBUG", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    fx = load_data(n_jobs=args.jobs, database_url=args.database_url)
    from jobs.models import Job

    run_id = uuidlib.uuid4().hex[:12]
    counts = query_counts(fx, run_id)
    from django.db import connection

    connection.close()  # the benchmark's own connection stays out of the measured run

    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": args.database_url,
            "CRUNCH_DATA_DIR": data_dir,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    env.pop("CRUNCH_BENCH_DB_POOL", None)
    port = free_port()
    server = start_server(port, env)
    connections: list[Http] = []
    try:
        wait_until_up(server, port, "/discovery/v1/apis/arvados/v1/rest")
        eps: list[Endpoint] = []
        for name, (method, path, body) in requests_for(fx, run_id).items():
            conn = Http(port, fx.token)
            connections.append(conn)
            eps.append(Endpoint(name, functools.partial(_send, conn, method, path, body)))
        eps.append(Endpoint("original_git", lambda: original_git(fx)))
        eps.append(Endpoint("original_git_full", lambda: original_git_full(fx)))
        eps.append(Endpoint("crunch_git", lambda: crunch_git(fx)))
        for ep in eps:  # the answers are checked once, outside the timings
            check(ep.name, ep.call()[1], fx)
        measure(eps, args.warmup, record=False)
        started = time.perf_counter()
        measure(eps, args.requests, record=True)
        wall = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
        stop_server(server)

    total = Job.objects.count()
    db = urlsplit(args.database_url)
    print()
    print(
        f"database: PostgreSQL {db.hostname}:{db.port or 5432}{db.path}; jobs: {total} "
        f"({fx.jobs_total} loaded, the rest created by misses)"
    )
    print(
        f"repositories: {N_REPOSITORIES} under {data_dir}; range: {RANGE} commits of "
        f"{HIT_REPOSITORY} ({fx.minimum[:12]}..main={fx.head[:12]})"
    )
    print("server: crunch serve (uvicorn, 1 worker), settings bench.settings; user: benchuser")
    print(
        f"{args.requests} requests per endpoint after {args.warmup} warm-up rounds, "
        f"round-robin, keep-alive, one at a time; {wall:.1f}s"
    )
    for name, what in SUBPROCESSES.items():
        print(f"{name}: {what}, timed in the benchmark process")
    report(eps, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
