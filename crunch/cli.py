"""`crunch`: the production processes (`serve`, `worker`), `dev` for a first run, and the
client commands, which talk to the API named by `ARVADOS_API_HOST` with `ARVADOS_API_TOKEN`:

    submit                      `crunch.submitcli` (with --follow)
    get UUID, list, queue, cancel, logs, whoami
                                `crunch.jobscli`
    put, get PDH DEST, ls       `crunch.keepcli`
    keepdocker                  `crunch.dockercli`

Client commands print through `crunch.output`: rich on a terminal, plain and stable when
piped, JSON with `--json`. Exit codes: 0 ok; 1 an error (a wrong command line included),
with a message on stderr; 2 a followed job failed, was cancelled or cannot be placed.
Configuration of the server processes comes from the environment (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import NoReturn


def _bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"--bind takes HOST:PORT, not {value!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "api.settings")
    host, port = args.bind
    if bool(args.tls_cert) != bool(args.tls_key):
        print("crunch serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    uvicorn.run(
        "api.asgi:application",
        host=host,
        port=port,
        workers=args.workers,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level=args.log_level,
        proxy_headers=True,
        timeout_keep_alive=30,
    )
    return 0


def api_problem(base_url: str, *, wait: float, attempt_timeout: float = 3.0) -> str | None:
    """Why the API at `base_url` does not answer its discovery document, trying again for
    up to `wait` seconds (an API started at the same time may not listen yet); None once it
    answers."""
    url = f"{base_url}/discovery/v1/apis/arvados/v1/rest"
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=attempt_timeout) as response:
                document = json.loads(response.read())
            if isinstance(document, dict) and document.get("kind") == "discovery#restDescription":
                return None
            problem = f"{url} is not a Crunch API's discovery document"
        except urllib.error.HTTPError as exc:
            problem = f"{url} answered {exc.code} {exc.reason}"
        except (OSError, ValueError) as exc:
            problem = f"{url}: {getattr(exc, 'reason', None) or exc}"
        if time.monotonic() >= deadline:
            return problem
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def cmd_worker(args: argparse.Namespace) -> int:
    from django.conf import settings

    from crunch.celery import app

    # Every job needs the API (git, Keep): a worker that cannot reach it would fail them all.
    problem = api_problem(settings.CRUNCH_API_URL, wait=args.api_wait)
    if problem is not None:
        print(
            f"crunch worker: cannot reach the API at {settings.CRUNCH_API_URL} ({problem}); "
            "set CRUNCH_API_URL (default: CRUNCH_EXTERNAL_URL) to where workers reach it",
            file=sys.stderr,
        )
        return 1
    argv = [
        "worker",
        f"--concurrency={args.concurrency}",
        f"--loglevel={args.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return 0


def dev_environment(bind_text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """`crunch dev`'s children's environment: the worker reaches this API (git, Keep) where
    it listens, unless CRUNCH_API_URL says otherwise."""
    env = dict(environ)
    if not env.get("CRUNCH_API_URL"):
        host, port = _bind(bind_text)
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        env["CRUNCH_API_URL"] = f"http://{reachable}:{port}"
    return env


def cmd_dev(args: argparse.Namespace) -> int:
    """API and one worker together, stopped together (what `make run` starts)."""
    exe = [sys.executable, "-m", "crunch.cli"]
    env = dev_environment(args.bind_text, os.environ)
    worker = subprocess.Popen([*exe, "worker", "--concurrency", "1"], env=env)
    server = subprocess.Popen([*exe, "serve", "--bind", args.bind_text], env=env)
    children = [server, worker]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return max((c.returncode or 0) for c in children)


class Parser(argparse.ArgumentParser):
    """A wrong command line is an error like any other: exit 1 (argparse's own is 2, which
    `crunch` keeps for jobs that failed)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="crunch", description="Crunch job service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (ASGI, streams)")
    serve.add_argument("--bind", type=_bind, default=("127.0.0.1", 8000), metavar="HOST:PORT")
    serve.add_argument("--tls-cert", metavar="FILE")
    serve.add_argument("--tls-key", metavar="FILE")
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a Celery worker that executes jobs")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--hostname", help="worker node name (default: celery@<host>)")
    worker.add_argument("--log-level", default="INFO")
    worker.add_argument(
        "--api-wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for the API (CRUNCH_API_URL) to answer at start-up",
    )
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="API and one worker together (make run)")
    dev.add_argument("--bind", dest="bind_text", default="127.0.0.1:8000", metavar="HOST:PORT")
    dev.set_defaults(func=cmd_dev)

    from crunch.dockercli import add_parsers as add_docker_parsers
    from crunch.jobscli import add_parsers as add_jobs_parsers
    from crunch.keepcli import add_parsers as add_keep_parsers
    from crunch.provenancecli import add_parsers as add_provenance_parsers
    from crunch.submitcli import add_parsers as add_submit_parsers

    add_submit_parsers(sub)
    add_jobs_parsers(sub)
    add_keep_parsers(sub)
    add_docker_parsers(sub)
    add_provenance_parsers(sub)

    from crunch.bacalhaucli import add_job_parsers as add_bacalhau_parsers
    from crunch.nomadcli import add_job_parsers as add_nomad_parsers

    job = sub.add_parser(
        "job",
        help="job specs (run, describe, list, ... as Bacalhau's) and parameterized jobs "
        "(register, dispatch, as Nomad's)",
    )
    job_sub = job.add_subparsers(dest="job_command", required=True)
    add_bacalhau_parsers(job_sub)
    add_nomad_parsers(job_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from crunch.submitcli import split_command

    try:
        options, command = split_command(list(sys.argv[1:] if argv is None else argv))
        args = build_parser().parse_args(options)
        args.command_argv = command
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`crunch ... | head`): stop quietly, with no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
