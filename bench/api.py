"""API read latency against a bare Django view, measured side by side in one run.

    .venv/bin/python bench/api.py [--requests N] [--database-url URL]

What it does:

1. Uses a real PostgreSQL (`--database-url`, else DATABASE_URL, else
   postgres://postgres@127.0.0.1:5432/crunch_bench), creating the database if missing, and
   migrates it.
2. Loads 100,000 links (`link_class` "bench", names `n0`..`n99999`) with `bulk_create`, owned
   by a non-admin user `benchuser` or by projects it reaches through a role group, a
   permission link and sub-projects; a few are owned by a project it cannot read. A re-run
   reuses the data when the count matches.
3. Creates a token for `benchuser` (`jobs.services.tokens.token_create`) and counts the SQL
   queries of one request to each endpoint, in-process.
4. Starts the real server (`crunch serve`) with `DJANGO_SETTINGS_MODULE=bench.settings`, which
   adds the baseline `/bench/bare/<pk>`: a plain Django view returning one Link row by
   primary key. Same process, middleware and database handling as the API.
5. After a warm-up, sends N requests to each endpoint, round-robin (the order rotates every
   round, so drift and noise hit all endpoints alike), each endpoint on its own keep-alive
   connection, one request at a time; prints median and p90 latency and the ratios of the
   medians to the bare view, and which targets are met.

It reports; it does not assert: the exit status is 0 whether or not targets are met (non-zero
only if the benchmark itself could not run, e.g. a request failed).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as `python bench/api.py`, sys.path[0] is bench/, where this very file would shadow the
# `api` package; put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import http.client  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import quote, urlencode, urlsplit, urlunsplit  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crunch_bench"
N_LINKS = 100_000
BATCH = 5_000
LINK_CLASS = "bench"
# n1, n10..n19, n100..n199, ...: about 11,000 names match, minus the unreadable ones; a page
# of 100 is always full, so `count=exact` really has to count.
LIST_FILTERS = [["link_class", "=", LINK_CLASS], ["name", "like", "n1%"]]
PAGE = 100
SPREAD = 7919  # a prime: i -> i * SPREAD mod N_LINKS is a permutation
DATA_LAYOUT = 2  # bump when load_data changes what it loads; a re-run then reloads
TARGETS = {"get": 2.0, "list100": 6.0}  # ratio of medians to the bare view, at most


# --- database set-up ----------------------------------------------------------------------


def ensure_database(url: str) -> None:
    """Create the database named in `url` if it does not exist (connecting to `postgres`)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit(f"bench: the database URL names no database: {url}")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def django_setup(database_url: str, data_dir: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["CRUNCH_DATA_DIR"] = data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


@dataclass
class Fixture:
    user: Any
    link_pk: int
    link_uuid: str
    readable_links: int


def _fixed_uuid(model: Any, tag: str, number: int) -> str:
    """Deterministic uuids, so a re-run finds the same rows: `<prefix>-<infix>-<tag><digits>`."""
    from django.conf import settings

    body = f"{tag}{number:0{15 - len(tag)}d}"
    return f"{settings.CRUNCH_UUID_PREFIX}-{model.infix()}-{body}"


def load_data() -> Fixture:
    """Users, groups and permission links, then 100,000 links; reused when already there.

    benchuser ──can_write──▶ role group "bench readers" (owned by benchother)
                                  └──can_read──▶ project P2 (benchother's) ──owns──▶ P3
    benchuser ──owns──▶ project P1;   benchother ──owns──▶ P4 (unreadable to benchuser)
    Links are owned by benchuser (70%), P1 (10%), P2 (10%), P3 (5%), P4 (5%).
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from jobs.models import Group, Link
    from jobs.services.tokens import user_get_or_create

    user = user_get_or_create(username="benchuser")
    other = user_get_or_create(username="benchother")
    now = timezone.now()

    def group(tag: int, name: str, owner: str, group_class: str) -> Group:
        obj, _ = Group.objects.get_or_create(
            uuid=_fixed_uuid(Group, "bench", tag),
            defaults={
                "name": name,
                "owner_uuid": owner,
                "group_class": group_class,
                "created_at": now,
                "modified_at": now,
            },
        )
        return obj

    role = group(1, "bench readers", other.uuid, "role")
    p1 = group(2, "bench project P1", user.uuid, "project")
    p2 = group(3, "bench project P2", other.uuid, "project")
    p3 = group(4, "bench project P3", p2.uuid, "project")
    p4 = group(5, "bench project P4 (private)", other.uuid, "project")

    def permission(tag: int, tail: str, head: str, level: str, owner: str) -> None:
        Link.objects.get_or_create(
            uuid=_fixed_uuid(Link, "benchperm", tag),
            defaults={
                "link_class": "permission",
                "name": level,
                "tail_uuid": tail,
                "head_uuid": head,
                "owner_uuid": owner,
                "created_at": now,
                "modified_at": now,
                "properties": {},
            },
        )

    permission(1, user.uuid, role.uuid, "can_write", other.uuid)
    permission(2, role.uuid, p2.uuid, "can_read", other.uuid)

    owners = [user.uuid] * 14 + [p1.uuid] * 2 + [p2.uuid] * 2 + [p3.uuid, p4.uuid]
    unreadable_owner = p4.uuid
    bench_links = Link.objects.filter(link_class=LINK_CLASS)
    have = bench_links.count()
    current = bench_links.filter(
        uuid=_fixed_uuid(Link, "bench", 0), properties__layout=DATA_LAYOUT
    ).exists()
    if have != N_LINKS or not current:
        if have:
            print(f"found {have} bench links of another layout or count: reloading")
        started = time.perf_counter()
        with transaction.atomic():
            bench_links.delete()
            base = now - dt.timedelta(days=30)
            for start in range(0, N_LINKS, BATCH):
                batch = []
                for i in range(start, min(start + BATCH, N_LINKS)):
                    # Times are a permutation of the names' order, so a name filter's
                    # matches are spread over time as in real data, not bunched at one end
                    # of the modified_at index.
                    stamp = base + dt.timedelta(seconds=17 * ((i * SPREAD) % N_LINKS))
                    batch.append(
                        Link(
                            uuid=_fixed_uuid(Link, "bench", i),
                            owner_uuid=owners[i % len(owners)],
                            created_at=stamp,
                            modified_at=stamp,
                            modified_by_user_uuid=user.uuid,
                            link_class=LINK_CLASS,
                            name=f"n{i}",
                            tail_uuid=user.uuid,
                            head_uuid=_fixed_uuid(Group, "bench", 2 + i % 4),
                            properties={"i": i, "layout": DATA_LAYOUT},
                        )
                    )
                Link.objects.bulk_create(batch, batch_size=BATCH)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Link._meta.db_table}")
            cursor.execute(f"ANALYZE {Group._meta.db_table}")
        print(f"loaded {N_LINKS} links in {time.perf_counter() - started:.1f}s")
    else:
        print(f"reusing {have} bench links")

    # The single-object requests read a link in P2: readable only through the role group.
    middle = N_LINKS // 2
    sample_i = middle + (owners.index(p2.uuid) - middle) % len(owners)
    sample = bench_links.get(uuid=_fixed_uuid(Link, "bench", sample_i))
    assert sample.owner_uuid == p2.uuid
    readable = bench_links.exclude(owner_uuid=unreadable_owner).count()
    return Fixture(user=user, link_pk=sample.pk, link_uuid=sample.uuid, readable_links=readable)


# --- what is measured ---------------------------------------------------------------------


@dataclass
class Endpoint:
    name: str
    path: str
    authenticated: bool
    samples: list[float] = field(default_factory=list)  # milliseconds


def endpoints(fx: Fixture) -> list[Endpoint]:
    query = {"filters": json.dumps(LIST_FILTERS, separators=(",", ":")), "limit": str(PAGE)}
    list_path = "/arvados/v1/links?" + urlencode(query, quote_via=quote)
    return [
        Endpoint("bare", f"/bench/bare/{fx.link_pk}", authenticated=False),
        Endpoint("get", f"/arvados/v1/links/{fx.link_uuid}", authenticated=True),
        Endpoint("list100", list_path, authenticated=True),
        Endpoint("list100_count_none", list_path + "&count=none", authenticated=True),
    ]


def check_body(ep: Endpoint, body: dict[str, Any], fx: Fixture) -> None:
    """The answers must be the real thing, or the timings mean nothing."""
    if ep.name in ("bare", "get"):
        ok = body.get("uuid") == fx.link_uuid
    else:
        ok = len(body.get("items", ())) == PAGE and all(
            item.get("link_class") == LINK_CLASS and item["name"].startswith("n1")
            for item in body["items"]
        )
        if ep.name == "list100":
            ok = ok and isinstance(body.get("items_available"), int)
        else:
            ok = ok and "items_available" not in body
    if not ok:
        raise SystemExit(f"bench: unexpected answer from {ep.name}: {json.dumps(body)[:300]}")


def query_counts(eps: list[Endpoint], token: str) -> dict[str, int]:
    """SQL queries per request, counted in-process (django.test.Client, same settings)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    counts = {}
    for ep in eps:
        client.get(ep.path)  # first use: token touch, caches
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(ep.path)
        if response.status_code != 200:
            raise SystemExit(f"bench: {ep.name} answered {response.status_code} in-process")
        counts[ep.name] = len(ctx.captured_queries)
    return counts


# --- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    crunch = Path(sys.executable).parent / "crunch"
    command = [str(crunch)] if crunch.exists() else [sys.executable, "-m", "crunch.cli"]
    # Access logging off (warning level): it would add the same cost to every endpoint.
    command += ["serve", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    return subprocess.Popen(command, env=env, cwd=REPO)


def wait_until_up(server: subprocess.Popen[bytes], port: int, path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"bench: the server exited with status {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("bench: the server did not answer within 60s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def pg_sessions(database_url: str) -> int | None:
    """Sessions ever opened on the database (pg_stat_database, PostgreSQL 14+)."""
    import psycopg

    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


# --- measuring ----------------------------------------------------------------------------


class Caller:
    """One keep-alive connection per endpoint; reconnects if the server closes it."""

    def __init__(self, port: int, ep: Endpoint, token: str) -> None:
        self.port, self.ep = port, ep
        self.headers = {"Authorization": f"Bearer {token}"} if ep.authenticated else {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self) -> tuple[float, bytes]:
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("GET", self.ep.path, headers=self.headers)
                response = self.conn.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
                continue
            elapsed = (time.perf_counter() - started) * 1000.0
            if response.status != 200:
                raise SystemExit(
                    f"bench: {self.ep.name} answered {response.status}: {body[:300]!r}"
                )
            return elapsed, body
        raise AssertionError("unreachable")


def measure(callers: list[Caller], rounds: int, *, record: bool) -> None:
    n = len(callers)
    for r in range(rounds):
        for k in range(n):
            caller = callers[(r + k) % n]  # rotate the order every round
            elapsed, _ = caller.call()
            if record:
                caller.ep.samples.append(elapsed)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def report(eps: list[Endpoint], counts: dict[str, int]) -> None:
    by_name = {ep.name: ep for ep in eps}
    bare = statistics.median(by_name["bare"].samples)
    print()
    print(f"{'endpoint':<20} {'median ms':>10} {'p90 ms':>9} {'mean ms':>9} {'queries':>8}")
    for ep in eps:
        print(
            f"{ep.name:<20} {statistics.median(ep.samples):>10.2f} {p90(ep.samples):>9.2f} "
            f"{statistics.fmean(ep.samples):>9.2f} {counts.get(ep.name, '?'):>8}"
        )
    print()
    met = []
    for ep in eps[1:]:
        ratio = statistics.median(ep.samples) / bare
        target = TARGETS.get(ep.name)
        if target is None:
            verdict = "(no target; compare with list100 for what count=exact costs)"
        else:
            ok = ratio <= target
            met.append(ok)
            verdict = f"(target <= {target:g}x: {'MET' if ok else 'NOT MET'})"
        print(f"{ep.name}/bare = {ratio:.2f}x {verdict}")
    count_cost = statistics.median(by_name["list100"].samples) - statistics.median(
        by_name["list100_count_none"].samples
    )
    print(f"count=exact costs {count_cost:.2f} ms at the median")
    print()
    print(f"targets met: {sum(met)} of {len(met)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=400,
        metavar="N",
        help="measured requests per endpoint (default 400)",
    )
    parser.add_argument(
        "--warmup", type=int, default=30, metavar="N", help="unmeasured rounds first (default 30)"
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("CRUNCH_DATA_DIR"),
        help="CRUNCH_DATA_DIR for the server (default: a new temporary one)",
    )
    parser.add_argument(
        "--db-pool",
        action="store_true",
        help="run the server with Django's PostgreSQL connection pool (needs psycopg_pool)",
    )
    args = parser.parse_args(argv)
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL (postgres://...)")
    if args.requests < 10:
        parser.error("--requests must be at least 10")
    if args.db_pool:
        if importlib.util.find_spec("psycopg_pool") is None:
            parser.error("--db-pool needs psycopg_pool (pip install psycopg-pool)")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="crunch-bench-")

    ensure_database(args.database_url)
    django_setup(args.database_url, data_dir)
    fx = load_data()

    from jobs.services.tokens import token_create

    token = token_create(user=fx.user).api_token
    assert token is not None
    eps = endpoints(fx)
    counts = query_counts(eps, token)
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
    env.pop("CRUNCH_DEBUG", None)
    if args.db_pool:
        env["CRUNCH_BENCH_DB_POOL"] = "1"
    else:
        env.pop("CRUNCH_BENCH_DB_POOL", None)
    port = free_port()
    server = start_server(port, env)
    try:
        wait_until_up(server, port, eps[0].path)
        callers = [Caller(port, ep, token) for ep in eps]
        for caller in callers:  # the answers are checked once, outside the timings
            check_body(caller.ep, json.loads(caller.call()[1]), fx)
        measure(callers, args.warmup, record=False)
        sessions_before = pg_sessions(args.database_url)
        started = time.perf_counter()
        measure(callers, args.requests, record=True)
        wall = time.perf_counter() - started
        for caller in callers:
            caller.conn.close()
    finally:
        stop_server(server)
    time.sleep(1.0)  # let the server's sessions reach pg_stat_database
    sessions_after = pg_sessions(args.database_url)

    print()
    db = urlsplit(args.database_url)
    print(
        f"database: PostgreSQL {db.hostname}:{db.port or 5432}{db.path}; links: {N_LINKS} "
        f"({fx.readable_links} readable by benchuser, a non-admin)"
    )
    print(
        f"server: crunch serve (uvicorn, 1 worker), settings bench.settings"
        f"{', Django DB pool' if args.db_pool else ''}"
    )
    print(
        f"{args.requests} requests per endpoint after {args.warmup} warm-up rounds, "
        f"round-robin, keep-alive, one at a time; {wall:.1f}s"
    )
    if sessions_before is not None and sessions_after is not None:
        total = args.requests * len(eps)
        opened = sessions_after - sessions_before - 1  # minus our own reading connection
        print(
            f"PostgreSQL sessions opened during the measured run: {opened} "
            f"for {total} requests ({opened / total:.2f} per request)"
        )
        if opened >= total // 2:
            print(
                "note: the server opened a new database connection for (nearly) every "
                "request; that cost is in every endpoint, the bare view's included, and "
                "narrows the ratios (compare a run with --db-pool)"
            )
    report(eps, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
