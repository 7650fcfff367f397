"""Lineage and reuse-summary latency, against a get-by-uuid, measured side by side in one run.

    .venv/bin/python bench/provenance.py [--requests N] [--noise N] [--submissions N]
                                        [--database-url URL]

What it does:

1. Uses a real PostgreSQL (`--database-url`, default
   postgres://postgres@127.0.0.1:5432/crunch_bench_provenance), creating it if missing, and
   migrates it. A re-run reuses the data when the layout and counts match.
2. Loads a history of 1,000 jobs five levels deep, owned by a non-admin user (through a
   project shared with it): the result's job reads 10 collections, produced by 10 jobs that
   read 50 more, then 200, then 739; each job has an output and a log collection, a commit
   and an image, and each input is recorded as the API records it (`job_inputs`). Plus
   `--noise` other jobs (default 100,000) with their inputs, in other users' projects.
3. Loads the reuse tallies that `--submissions` submissions (default 1,000,000) asking for
   reuse leave behind: spread over 365 days and 50 users (each in two of 20 projects, 80% of
   the time through one of 4 doors), hits (with the core-seconds saved) and misses under 5
   reasons, counted per (day, user, project, door,
   outcome, reason) as the API counts them.
4. Starts the real server (`crunch serve`) and measures, interleaved round-robin, each
   endpoint on its own keep-alive connection, one request at a time:
   - `get`: GET /arvados/v1/jobs/<the result's job> (the baseline);
   - `provenance`: GET /arvados/v1/collections/<the result>/provenance (depth 5: all 1,000
     jobs, as the non-admin user);
   - `summary`, `summary_by_day`: GET /arvados/v1/jobs/reuse_summary as an admin, over all
     the submissions, overall and grouped by day.
5. Prints median and p90 latency and the targets: provenance at most 10x a get; the summary
   at most 1 s.

It reports; it does not assert (exit status 0 whether or not targets are met).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from bench.api import (  # noqa: E402
    Caller,
    Endpoint,
    django_setup,
    ensure_database,
    free_port,
    p90,
    start_server,
    stop_server,
    wait_until_up,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crunch_bench_provenance"
LEVELS = (1, 10, 50, 200, 739)  # jobs per level of the history: 1,000 in all
LAYOUT = 2  # bump when what is loaded changes
BATCH = 5000
TARGET_PROVENANCE = 10.0  # x a get
TARGET_SUMMARY_MS = 1000.0


def pdh(tag: str) -> str:
    return f"{hashlib.md5(tag.encode()).hexdigest()}+{len(tag)}"


@dataclass
class Fixture:
    user: Any
    admin: Any
    root_job: str
    root_output: str


def _uuid(model: Any, tag: str, n: int) -> str:
    from django.conf import settings

    return f"{settings.CRUNCH_UUID_PREFIX}-{model.infix()}-{tag}{n:0{15 - len(tag)}d}"


def _jobs(tag: str, count: int, owner: str, inputs_of: Any) -> tuple[list[Any], list[Any]]:
    from django.utils import timezone

    from jobs.models import Job, JobInput

    now = timezone.now()
    jobs, inputs = [], []
    for i in range(count):
        uuid = _uuid(Job, tag, i)
        jobs.append(
            Job(
                uuid=uuid,
                owner_uuid=owner,
                created_at=now,
                modified_at=now,
                command=["python3", f"step{tag}.py"],
                script_parameters={"inputs": inputs_of(i)},
                script_parameters_digest=hashlib.md5(uuid.encode()).hexdigest(),
                repository="benchuser/pipeline",
                script_version=hashlib.sha1(tag.encode()).hexdigest(),
                docker_image_locator=pdh("image"),
                state="Complete",
                success=True,
                running=False,
                output=pdh(f"out-{uuid}"),
                log=pdh(f"log-{uuid}"),
                started_at=now - dt.timedelta(minutes=10),
                finished_at=now,
                runtime_constraints={"vcpus": 2},
                door="arvados",
            )
        )
        for source in inputs_of(i):
            inputs.append(
                JobInput(job_uuid=uuid, portable_data_hash=source, kind="parameter", name="inputs")
            )
    return jobs, inputs


def load_data(*, noise: int, submissions: int) -> Fixture:
    from django.utils import timezone

    from jobs.models import Collection, Group, Job, JobInput, Link, ReuseTally
    from jobs.services.tokens import user_get_or_create

    now = timezone.now()
    user = user_get_or_create(username="benchuser", admin=False)
    admin = user_get_or_create(username="benchadmin", admin=True)
    project, _ = Group.objects.get_or_create(
        uuid=_uuid(Group, "prov", 1),
        defaults={
            "owner_uuid": admin.uuid,
            "name": "pipeline",
            "group_class": "project",
            "created_at": now,
            "modified_at": now,
        },
    )
    Link.objects.get_or_create(
        uuid=_uuid(Link, "prov", 1),
        defaults={
            "owner_uuid": admin.uuid,
            "link_class": "permission",
            "name": "can_read",
            "tail_uuid": user.uuid,
            "head_uuid": project.uuid,
            "created_at": now,
            "modified_at": now,
        },
    )
    marker = f"layout {LAYOUT} noise {noise} submissions {submissions}"
    root = _uuid(Job, "L0x", 0)
    fx = Fixture(user, admin, root, pdh(f"out-{root}"))
    if Group.objects.filter(uuid=project.uuid, description=marker).exists():
        return fx
    print("loading the history, the noise and the tallies (once) ...", flush=True)
    Job.objects.filter(uuid__startswith=_uuid(Job, "", 0)[:12]).delete()
    JobInput.objects.all().delete()
    Collection.objects.filter(uuid__startswith=_uuid(Collection, "", 0)[:12]).delete()
    ReuseTally.objects.all().delete()

    # The history: level k's job i reads the outputs of level k+1's jobs j with j % n_k == i.
    for level, count in enumerate(LEVELS):
        nxt = LEVELS[level + 1] if level + 1 < len(LEVELS) else 0

        def inputs_of(i: int, level: int = level, count: int = count, nxt: int = nxt) -> list[str]:
            if nxt == 0:
                return [pdh(f"raw-{level}-{i}")]
            tag = f"L{level + 1}x"
            return [pdh(f"out-{_uuid(Job, tag, j)}") for j in range(i, nxt, count)]

        jobs, inputs = _jobs(f"L{level}x", count, project.uuid, inputs_of)
        Job.objects.bulk_create(jobs, batch_size=BATCH)
        JobInput.objects.bulk_create(inputs, batch_size=BATCH)
    outputs = [
        Collection(
            uuid=_uuid(Collection, "P", i),
            owner_uuid=project.uuid,
            portable_data_hash=j.output,
            manifest_text="",
            name=f"output of {j.uuid}",
            created_at=now,
            modified_at=now,
        )
        for i, j in enumerate(Job.objects.filter(owner_uuid=project.uuid).only("uuid", "output"))
    ]
    Collection.objects.bulk_create(outputs, batch_size=BATCH)

    rng = random.Random(7)
    for start in range(0, noise, BATCH):
        n = min(BATCH, noise - start)
        jobs, inputs = _jobs(
            f"N{start // BATCH}x",
            n,
            _uuid(Group, "noise", rng.randrange(20)),
            lambda i: [pdh(f"noise-{rng.randrange(noise)}")],
        )
        Job.objects.bulk_create(jobs, batch_size=BATCH)
        JobInput.objects.bulk_create(inputs, batch_size=BATCH)

    today = now.date()
    doors = ("arvados", "bacalhau", "nomad", "ray")
    reasons = ("no earlier job with the same inputs", "a", "b", "c", "d")
    counts: Counter[tuple[Any, ...]] = Counter()
    saved: Counter[tuple[Any, ...]] = Counter()
    for _ in range(submissions):
        hit = rng.random() < 0.4
        user_n = rng.randrange(50)
        # Each user works in two projects and mostly through one door.
        door = doors[user_n % 4] if rng.random() < 0.8 else rng.choice(doors)
        key = (
            today - dt.timedelta(days=rng.randrange(365)),
            f"zzzzz-tpzed-{user_n:015d}",
            f"zzzzz-j7d0g-{(user_n + rng.randrange(2)) % 20:015d}",
            door,
            hit,
            "" if hit else rng.choice(reasons),
        )
        counts[key] += 1
        if hit:
            saved[key] += rng.randrange(60, 7200)
    ReuseTally.objects.bulk_create(
        (
            ReuseTally(
                day=k[0],
                user_uuid=k[1],
                project_uuid=k[2],
                door=k[3],
                hit=k[4],
                reason=k[5],
                count=n,
                saved_core_seconds=saved[k],
            )
            for k, n in counts.items()
        ),
        batch_size=BATCH,
    )
    Group.objects.filter(uuid=project.uuid).update(description=marker)
    return fx


def analyze() -> None:
    """Fresh planner statistics, as autovacuum keeps them on a live database (after a bulk
    load they would still describe empty tables)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("jobs", "job_inputs", "collections", "job_reuse_tallies", "job_reuses"):
            cursor.execute(f"ANALYZE {table}")


def measure(callers: list[Caller], rounds: int, *, record: bool) -> None:
    n = len(callers)
    for r in range(rounds):
        for k in range(n):
            caller = callers[(r + k) % n]
            elapsed, _ = caller.call()
            if record:
                caller.ep.samples.append(elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, metavar="N")
    parser.add_argument("--warmup", type=int, default=5, metavar="N")
    parser.add_argument("--noise", type=int, default=100_000, metavar="N")
    parser.add_argument("--submissions", type=int, default=1_000_000, metavar="N")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    )
    args = parser.parse_args(argv)
    data_dir = tempfile.mkdtemp(prefix="crunch-bench-provenance-")
    ensure_database(args.database_url)
    django_setup(args.database_url, data_dir)
    fx = load_data(noise=args.noise, submissions=args.submissions)
    analyze()

    from django.db import connection

    from jobs.models import ReuseTally
    from jobs.services.tokens import token_create

    user_token = token_create(user=fx.user).api_token
    admin_token = token_create(user=fx.admin).api_token
    tally_rows = ReuseTally.objects.count()
    connection.close()

    eps = [
        (Endpoint("get", f"/arvados/v1/jobs/{fx.root_job}", True), user_token),
        (
            Endpoint("provenance", f"/arvados/v1/collections/{fx.root_output}/provenance", True),
            user_token,
        ),
        (Endpoint("summary", "/arvados/v1/jobs/reuse_summary", True), admin_token),
        (Endpoint("summary_by_day", "/arvados/v1/jobs/reuse_summary?by=day", True), admin_token),
    ]
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": args.database_url,
            "CRUNCH_DATA_DIR": data_dir,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    port = free_port()
    server = start_server(port, env)
    try:
        wait_until_up(server, port, "/discovery/v1/apis/arvados/v1/rest")
        callers = [Caller(port, ep, token or "") for ep, token in eps]
        graph = json.loads(callers[1].call()[1])
        jobs = sum(1 for n in graph["nodes"] if n["kind"] == "job")
        summary = json.loads(callers[2].call()[1])
        if jobs != sum(LEVELS) or summary["hits"] + summary["misses"] != args.submissions:
            raise SystemExit(f"bench: wrong answers: {jobs} jobs, {summary}")
        measure(callers, args.warmup, record=False)
        started = time.perf_counter()
        measure(callers, args.requests, record=True)
        wall = time.perf_counter() - started
    finally:
        stop_server(server)

    print()
    print(
        f"history: {sum(LEVELS)} jobs in {len(LEVELS)} levels ({len(graph['nodes'])} nodes, "
        f"{len(graph['edges'])} edges) among {args.noise:,} other jobs; tallies: "
        f"{tally_rows:,} rows for {args.submissions:,} submissions"
    )
    print(f"{args.requests} requests per endpoint, round-robin, keep-alive; {wall:.1f}s")
    print(f"{'endpoint':<16} {'median ms':>10} {'p90 ms':>9}")
    for ep, _ in eps:
        print(f"{ep.name:<16} {statistics.median(ep.samples):>10.2f} {p90(ep.samples):>9.2f}")
    get = statistics.median(eps[0][0].samples)
    prov = statistics.median(eps[1][0].samples) / get
    print()
    verdict = "MET" if prov <= TARGET_PROVENANCE else "NOT MET"
    print(f"provenance/get = {prov:.2f}x (target <= {TARGET_PROVENANCE:g}x: {verdict})")
    for ep, _ in eps[2:]:
        ms = max(ep.samples)
        verdict = "MET" if ms <= TARGET_SUMMARY_MS else "NOT MET"
        print(f"{ep.name}: slowest {ms:.1f} ms (target <= {TARGET_SUMMARY_MS:g} ms: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
