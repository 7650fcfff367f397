"""Log following: lines per second reaching a follower, and a follower's latency.

    .venv/bin/python bench/logs.py [--stack services|embedded] [--lines 500000] [--ticks 100]

It starts a real Crunch (`crunch serve` and one `crunch worker`, with the test suite's
`running_stack`): `services` is PostgreSQL and Redis (DATABASE_URL and REDIS_URL, default
postgres://postgres@127.0.0.1:5432/crunch and redis://127.0.0.1:6379/0; a fresh database
is created and dropped); `embedded` is SQLite without Redis, as `make run` (followers poll).

1. Throughput: a follower connects (text/plain, `since=0`) while the job is still queued (no
   worker yet), then a worker starts and the job prints `--lines` short lines as fast as it
   can (`seq | sed`). Lines per second reaching the follower = lines / (time the last line
   arrived - time the first line arrived); also counted from the job's `started_at`. Side
   by side, in the same run: the same pipeline writing into a pipe read by this process
   (what the script alone can do here), and the job's own run time as the server recorded
   it (started_at -> finished_at).
2. Latency: a job prints `--ticks` lines at 10 lines/s, each carrying the time it was
   printed (`date +%s.%N`); a follower connected before it started notes when each line
   arrives. Latency = arrival - printed, same machine, same clock: median and p99.

Targets (from the issue): at least 50,000 lines/s end to end; median latency at most
100 ms. It reports; it does not assert.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)  # bench/api.py would shadow the `api` package
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import http.client  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

SCRIPTS = {
    "count": '#!/bin/sh\nseq 0 $((JOB_PARAMETER_N - 1)) | sed "s/^/line /"\n',
    "tick": (
        "#!/bin/sh\ni=0\n"
        'while [ $i -lt "$JOB_PARAMETER_N" ]; do echo "tick $i $(date +%s.%N)"; '
        "i=$((i + 1)); sleep 0.1; done\n"
    ),
}


class Follower(threading.Thread):
    """Reads a text/plain log stream, noting when each line arrives."""

    def __init__(self, url: str, token: str, uuid: str) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        self.connection.request(
            "GET",
            f"/arvados/v1/jobs/{uuid}/log_tail_follow?since=0",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/plain"},
        )
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()
        self.uuid = uuid
        self.arrivals: list[tuple[float, bytes]] = []  # (time, line) for tick lines
        self.count_lines = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.last_wall = 0.0
        self.end_line = b""
        self.queued_status = threading.Event()

    def run(self) -> None:
        rest = b""
        while True:
            data = self.response.read1(1 << 16)
            now = time.perf_counter()
            if not data:
                break
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line.startswith(b"line "):
                    if not self.count_lines:
                        self.first_at = now
                    self.count_lines += 1
                    self.last_at = now
                    self.last_wall = time.time()
                elif line.startswith(b"tick "):
                    self.arrivals.append((time.time(), line))
                elif b" queue_position " in line:
                    self.queued_status.set()
                elif f" job {self.uuid} ".encode() in line and b" finished_at " in line:
                    self.end_line = line
        self.connection.close()


def pipeline_rate(lines: int) -> float:
    """The same script's pipeline into a pipe read here: lines per second it can produce."""
    script = SCRIPTS["count"].replace("$((JOB_PARAMETER_N - 1))", str(lines - 1))
    started = time.perf_counter()
    process = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE)
    assert process.stdout is not None
    count = 0
    while True:
        data = process.stdout.read1(1 << 16)
        if not data:
            break
        count += data.count(b"\n")
    process.wait()
    assert count == lines, count
    return lines / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("services", "embedded"), default="services")
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--ticks", type=int, default=100)
    args = parser.parse_args()

    if args.stack == "services":
        os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/crunch")
        os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")
    os.environ.setdefault("CRUNCH_DATA_DIR", tempfile.mkdtemp(prefix="crunch-bench-logs-"))
    import django
    import requests

    django.setup()
    from tests.crunch.stack import running_stack

    work = Path(tempfile.mkdtemp(prefix="crunch-bench-logs-"))
    with running_stack(args.stack, work, SCRIPTS, workers=0) as stack:
        print(f"stack: {args.stack} ({stack.url}), Python {sys.version.split()[0]}")
        # 1. throughput
        job = stack.submit("count", {"N": str(args.lines)})
        follower = Follower(stack.url, stack.token, job["uuid"])
        follower.start()
        assert follower.queued_status.wait(30), "no queue status line"
        stack.start_worker("bench-logs")
        follower.join(600)
        done = stack.wait(job["uuid"], timeout=600)
        assert done["state"] == "Complete", done["state"]
        assert follower.count_lines == args.lines, follower.count_lines
        assert follower.end_line, "no end line"
        rate = args.lines / (follower.last_at - follower.first_at)
        server_run = _seconds(done["finished_at"]) - _seconds(done["started_at"])
        from_start = args.lines / (follower.last_wall - _seconds(done["started_at"]))
        raw = pipeline_rate(args.lines)
        print(f"\nthroughput: {args.lines:,} lines, one follower connected while the job queued")
        print(f"  lines/s reaching the follower: {rate:,.0f}  (target >= 50,000)")
        print(
            f"  counted from the job's started_at instead (with the checkout and the script's"
            f" start): {from_start:,.0f} lines/s"
        )
        print(f"  the script's pipeline alone, into a pipe: {raw:,.0f} lines/s")
        print(f"  ratio follower / pipeline alone: {rate / raw:.2f}")
        print(f"  job run time (started_at -> finished_at): {server_run:.2f} s")

        # 2. latency at 10 lines/s
        job = stack.submit("tick", {"N": str(args.ticks)})
        follower = Follower(stack.url, stack.token, job["uuid"])
        follower.start()
        follower.join(args.ticks * 0.2 + 60)
        delays = sorted(
            (arrived - float(line.split()[2])) * 1000 for arrived, line in follower.arrivals
        )
        assert len(delays) == args.ticks, len(delays)
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(f"\nlatency: {args.ticks} lines at 10 lines/s, printed -> at the follower")
        print(f"  median {statistics.median(delays):.1f} ms  (target <= 100 ms)")
        print(f"  p99 {p99:.1f} ms, max {delays[-1]:.1f} ms, min {delays[0]:.1f} ms")
        requests.Session().close()
    return 0


def _seconds(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    sys.exit(main())
