"""Where a request's time goes: the endpoints of `bench/api.py`, profiled in-process.

    .venv/bin/python bench/profile_api.py [--requests N] [--database-url URL] [--top N]

Uses the data `bench/api.py` loads (run that first; this script loads it too if missing),
sends N requests per endpoint through `django.test.Client` (the full middleware and DRF
stack, without uvicorn and without the per-request database connection of ASGI) under
cProfile, and prints, per endpoint: SQL queries per request, the time per request in the
stages of the stack, and the functions with the most time of their own.

cProfile slows Python code down (roughly 1.5-2x), not the database: read stages against each
other, and take absolute latencies from `bench/api.py`.
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
import cProfile  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# Stages of a request: (label, file suffix, function name). Cumulative time, so they nest:
# "handler" includes everything after it.
STAGES = [
    ("whole request (Django handler)", "django/core/handlers/base.py", "get_response"),
    ("  DRF dispatch (view)", "rest_framework/views.py", "dispatch"),
    ("    token_authenticate (1 query)", "jobs/services/tokens.py", "token_authenticate"),
    ("    permission_map (BFS queries)", "jobs/permissions.py", "permission_map"),
    ("    parse_list_params", "api/params.py", "parse_list_params"),
    ("    apply_filters", "jobs/filters.py", "apply_filters"),
    ("    get_object (query)", "api/viewsets/base.py", "get_object"),
    ("    list_response (query, count, serialize)", "api/viewsets/base.py", "list_response"),
    ("      QuerySet.count", "django/db/models/query.py", "count"),
    ("      serialize", "api/serializers.py", "serialize"),
    ("        etag_of", "api/serializers.py", "etag_of"),
    ("    DRF finalize_response", "rest_framework/views.py", "finalize_response"),
    ("  response rendering (JSON)", "rest_framework/response.py", "rendered_content"),
    ("SQL: cursor.execute (all queries)", "django/db/backends/utils.py", "_execute"),
    ("SQL: compiler.as_sql (building SQL)", "django/db/models/sql/compiler.py", "as_sql"),
]


def stage_times(stats: pstats.Stats, requests: int) -> list[tuple[str, float, int]]:
    found = []
    raw = stats.stats  # type: ignore[attr-defined]
    for label, suffix, func in STAGES:
        total, calls = 0.0, 0
        for (filename, _line, name), (_cc, nc, _tt, ct, callers) in raw.items():
            if name == func and filename.endswith(suffix):
                # Recursive or re-entrant functions: count only calls from outside themselves.
                outer = {k: v for k, v in callers.items() if k[2] != func}
                total += sum(v[3] for v in outer.values()) if outer else ct
                calls += nc
        found.append((label, total * 1000.0 / requests, calls // requests if requests else 0))
    return found


def main(argv: list[str] | None = None) -> int:
    from bench import api as bench_api

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        metavar="N",
        help="requests per endpoint (default 1000)",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL") or bench_api.DEFAULT_DATABASE_URL
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed per endpoint")
    parser.add_argument("--only", help="one endpoint: bare, get, list100, list100_count_none")
    args = parser.parse_args(argv)

    data_dir = os.environ.get("CRUNCH_DATA_DIR") or tempfile.mkdtemp(prefix="crunch-bench-")
    bench_api.ensure_database(args.database_url)
    bench_api.django_setup(args.database_url, data_dir)
    fx = bench_api.load_data()

    from django.db import connection
    from django.test import Client

    from jobs.services.tokens import token_create

    token = token_create(user=fx.user).api_token
    assert token is not None
    counts = bench_api.query_counts(bench_api.endpoints(fx), token)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    for ep in bench_api.endpoints(fx):
        if args.only and ep.name != args.only:
            continue
        for _ in range(20):
            client.get(ep.path)
        started = time.perf_counter()
        for _ in range(args.requests):
            client.get(ep.path)
        plain_ms = (time.perf_counter() - started) * 1000.0 / args.requests
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.requests):
            response = client.get(ep.path)
        profile.disable()
        assert response.status_code == 200, response.content[:300]
        stats = pstats.Stats(profile)
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        print()
        print(
            f"=== {ep.name}: {counts[ep.name]} SQL queries per request; "
            f"{plain_ms:.2f} ms per request in-process without profiler, "
            f"{total * 1000.0 / args.requests:.2f} ms with"
        )
        for label, ms, calls in stage_times(stats, args.requests):
            if ms:
                print(f"  {label:<46} {ms:>7.2f} ms/request  ({calls} calls/request)")
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
        lines = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print("  top functions by own time (over all requests):")
        for line in lines[start:]:
            if line.strip():
                print(
                    "   ",
                    line.replace(str(REPO) + "/", "").replace(str(Path(sys.prefix)) + "/lib/", ""),
                )
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
