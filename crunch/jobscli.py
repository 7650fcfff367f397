"""`crunch` commands that watch and steer jobs: get, list, queue, cancel, logs, whoami.

    crunch get UUID                 one job: state, commit, image, parameters, timings, output
    crunch list [--state S] [--filter JSON]... [--limit N] [--order "ATTR desc"]...
    crunch queue                    queued jobs in the order they will run, with position
    crunch cancel UUID...
    crunch logs UUID                the whole log so far, then exit
    crunch logs --follow UUID       the last 8 KiB, then live lines until the job ends
                  [--since N | --all]   from chunk N, or the whole log, instead
    crunch whoami                   the token's user and the API host

Every command takes `--json`. Exit codes: 0 the command worked (`get` of a failed job
included), 1 it did not, 2 a followed job ended Failed or Cancelled, or cannot be placed.

Following uses the Server-Sent Events form of `log_tail_follow`: log chunks carry their
sequence number as the event id, so a dropped connection is resumed after the last chunk
shown (`Last-Event-ID`, and `since` for the same point), with no line lost or repeated; a
few attempts with growing pauses, then exit 1. Log lines go to stdout unchanged; the queue
status and the end state go to stderr (on a terminal, the status as one updating line).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from crunch.client import ApiClient, ApiError, ClientError, EventParser, ServerEvent
from crunch.output import (
    BOLD,
    DIM,
    EXIT_ERROR,
    EXIT_JOB,
    EXIT_OK,
    RED,
    STATE_STYLES,
    YELLOW,
    CommandError,
    Output,
    UsageError,
    format_duration,
    job_duration,
    parse_time,
    print_json,
    run_command,
)

JOB_UUID_RE = re.compile(r"^[a-z0-9]{5}-8i9sb-[a-z0-9]{15}\Z")
STATES = ("Queued", "Running", "Complete", "Failed", "Cancelled")
RECONNECT_ATTEMPTS = 5
RECONNECT_PAUSE = 0.5  # seconds before the first attempt; doubled each time after
# The server sends a keep-alive comment on a quiet stream every 15 s: this much silence
# means the connection is dead, and a new one resumes where it stopped.
STREAM_READ_TIMEOUT = 75.0


def is_job_uuid(text: str) -> bool:
    return bool(JOB_UUID_RE.match(text))


def check_job_uuid(text: str) -> str:
    if not is_job_uuid(text):
        raise UsageError(f"{text!r} is not a job uuid (like zzzzz-8i9sb-0123456789abcde)")
    return text


def parse_filter(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or len(value) != 3:
        raise UsageError(f"--filter {text}: must be a JSON array [attribute, operator, operand]")
    return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stdout() -> Output:
    return Output(sys.stdout)


def _stderr() -> Output:
    return Output(sys.stderr)


# --- one job -------------------------------------------------------------------------------


def job_row(job: dict[str, Any], out: Output, now: dt.datetime) -> list[str]:
    """UUID, STATE, SCRIPT, REPOSITORY, COMMIT, CREATED, RUNTIME."""
    ran = job_duration(job, now)
    return [
        job["uuid"],
        out.state(job.get("state")),
        job.get("script") or "-",
        job.get("repository") or "-",
        (job.get("script_version") or "-")[:12],
        out.when(job.get("created_at"), now),
        format_duration(ran) if ran is not None else "-",
    ]


JOB_HEADERS = ("UUID", "STATE", "SCRIPT", "REPOSITORY", "COMMIT", "CREATED", "RUNTIME")


def show_job(job: dict[str, Any], out: Output, now: dt.datetime) -> None:
    def stamp(name: str) -> str:
        value = job.get(name)
        if not value:
            return "-"
        if out.rich and parse_time(value) is not None:
            return f"{value}  {out.paint(out.when(value, now), DIM)}"
        return str(value)

    version = job.get("script_version") or "-"
    supplied = job.get("supplied_script_version")
    if supplied and supplied != version:
        version = f"{version} ({supplied})"
    ran = job_duration(job, now)
    pairs = [
        ("uuid", job["uuid"]),
        ("state", out.state(job.get("state"))),
        ("script", job.get("script") or "-"),
        ("repository", job.get("repository") or "-"),
        ("version", version),
        ("image", job.get("docker_image_locator") or "-"),
        ("parameters", json.dumps(job.get("script_parameters") or {}, sort_keys=True)),
        ("priority", str(job.get("priority", "-"))),
        ("created", stamp("created_at")),
        ("started", stamp("started_at")),
        ("finished", stamp("finished_at")),
        ("runtime", format_duration(ran) if ran is not None else "-"),
        ("output", job.get("output") or "-"),
        ("log", job.get("log") or "-"),
        ("nodes", " ".join(job.get("node_uuids") or []) or "-"),
    ]
    if job.get("scheduling_status"):
        pairs.append(("placement", out.paint(job["scheduling_status"], RED)))
    if job.get("description"):
        pairs.append(("description", str(job["description"]).splitlines()[0]))
    out.fields(pairs)


def cmd_get_job(args: argparse.Namespace) -> int:
    def body() -> int:
        uuid = check_job_uuid(args.target)
        job = ApiClient.from_env().call("GET", f"jobs/{uuid}")
        if args.json:
            print_json(job)
        else:
            show_job(job, _stdout(), _now())
        return EXIT_OK

    return run_command("get", body)


# --- lists ---------------------------------------------------------------------------------


def _state(value: str) -> str:
    for state in STATES:
        if state.lower() == value.lower():
            return state
    raise argparse.ArgumentTypeError(f"--state takes one of {', '.join(STATES)}, not {value!r}")


def _limit(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--limit takes a positive number, not {value!r}")
    return int(value)


def list_query(args: argparse.Namespace) -> dict[str, Any]:
    filters = [parse_filter(f) for f in args.filters or []]
    if args.state:
        filters.append(["state", "in", args.state])
    query: dict[str, Any] = {"limit": args.limit}
    if filters:
        query["filters"] = filters
    if args.order:
        query["order"] = args.order
    return query


def _footer(out: Output, answer: dict[str, Any], noun: str) -> None:
    shown, total = len(answer.get("items") or []), answer.get("items_available")
    if out.rich and isinstance(total, int) and total > shown:
        out.line(out.paint(f"{shown} of {total} {noun} (--limit shows more)", DIM))


def cmd_list(args: argparse.Namespace) -> int:
    def body() -> int:
        query = list_query(args)
        query.setdefault("order", ["created_at desc"])
        answer = ApiClient.from_env().call("GET", "jobs", query=query)
        if args.json:
            print_json(answer)
            return EXIT_OK
        out, now = _stdout(), _now()
        out.table(JOB_HEADERS, [job_row(job, out, now) for job in answer["items"]])
        _footer(out, answer, "jobs")
        return EXIT_OK

    return run_command("list", body)


def cmd_queue(args: argparse.Namespace) -> int:
    def body() -> int:
        answer = ApiClient.from_env().call("GET", "jobs/queue", query=list_query(args))
        if args.json:
            print_json(answer)
            return EXIT_OK
        out, now = _stdout(), _now()
        rows = []
        for position, job in enumerate(answer["items"], start=1):
            created = parse_time(job.get("created_at"))
            waited = format_duration((now - created).total_seconds()) if created else "-"
            status = job.get("scheduling_status") or ""
            rows.append(
                [
                    str(position),
                    job["uuid"],
                    str(job.get("priority", "-")),
                    job.get("script") or "-",
                    job.get("repository") or "-",
                    waited,
                    out.paint(status, RED) if status else "-",
                ]
            )
        headers = ("POS", "UUID", "PRIORITY", "SCRIPT", "REPOSITORY", "WAITING", "PLACEMENT")
        out.table(headers, rows)
        if out.rich and not rows:
            out.line(out.paint("the queue is empty", DIM))
        _footer(out, answer, "queued jobs")
        return EXIT_OK

    return run_command("queue", body)


# --- cancel --------------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    def body() -> int:
        uuids = [check_job_uuid(u) for u in args.uuids]
        client = ApiClient.from_env()
        out = _stdout()
        done: list[dict[str, Any]] = []
        failed = False
        for uuid in uuids:
            try:
                query = {"cascade": "true"} if args.cascade else None
                job = client.call("POST", f"jobs/{uuid}/cancel", query=query)
            except ApiError as exc:
                print(f"crunch cancel: {uuid}: {'; '.join(exc.errors) or exc}", file=sys.stderr)
                failed = True
                continue
            done.append(job)
            if not args.json:
                out.line(f"{job['uuid']}  {out.state(job.get('state'))}")
                out.flush()
        if args.json:
            print_json(done)
        return EXIT_ERROR if failed else EXIT_OK

    return run_command("cancel", body)


# --- whoami --------------------------------------------------------------------------------


def cmd_whoami(args: argparse.Namespace) -> int:
    def body() -> int:
        client = ApiClient.from_env()
        user = client.call("GET", "users/current")
        if args.json:
            print_json({**user, "api_host": client.config.base_url})
            return EXIT_OK
        out = _stdout()
        name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
        out.fields(
            [
                ("uuid", user.get("uuid") or "-"),
                ("username", user.get("username") or "-"),
                ("email", user.get("email") or "-"),
                ("name", name or user.get("full_name") or "-"),
                ("admin", out.paint("yes", BOLD) if user.get("is_admin") else "no"),
                ("api host", client.config.base_url),
            ]
        )
        return EXIT_OK

    return run_command("whoami", body)


# --- following a log -----------------------------------------------------------------------


@dataclass
class FollowOutcome:
    end: dict[str, Any] | None = None  # the end event: the job finished
    cannot_run: str | None = None  # why the job cannot be placed, if a status said so

    @property
    def exit_code(self) -> int:
        if self.cannot_run:
            return EXIT_JOB
        if self.end is None:
            return EXIT_OK
        state = self.end.get("state")
        if state == "Complete":
            return EXIT_OK
        return EXIT_JOB if state in ("Failed", "Cancelled") else EXIT_ERROR


def _json_data(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {"line": text}
    return data if isinstance(data, dict) else {"line": text}


class LogView:
    """Where a followed log's events go: lines to stdout unchanged, the queue status and the
    end state to stderr (one updating line on a terminal); with `json`, one JSON object per
    event on stdout: {"event": "log", "id": N, "lines": [...]}, {"event": "status", ...},
    {"event": "end", ...}."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json = json_mode
        self.out = _stdout()
        self.err = _stderr()
        self._status_shown = False  # a status line is on the terminal, without a newline
        self._last_status: tuple[Any, ...] | None = None

    def _clear_status(self) -> None:
        if self._status_shown:
            self.err.stream.write("\r\x1b[K")
            self.err.flush()
            self._status_shown = False

    def log(self, event_id: str | None, lines: list[str]) -> None:
        if self.json:
            number = int(event_id) if event_id and event_id.isdigit() else event_id
            print_json({"event": "log", "id": number, "lines": lines}, compact=True)
            return
        self._clear_status()
        self.out.stream.write("".join(line + "\n" for line in lines))

    def flush(self) -> None:
        self.out.flush()

    def status(self, data: dict[str, Any]) -> None:
        if self.json:
            print_json({"event": "status", **data}, compact=True)
            return
        key = tuple(
            data.get(k)
            for k in ("state", "queue_position", "queue_size", "nodes_idle", "nodes_alloc")
        )
        reason = data.get("cannot_run")
        if self.err.tty:
            self.out.flush()
            text = self._status_text(data)
            self.err.stream.write("\r\x1b[K" + self.err.paint(text, YELLOW))
            self._status_shown = True
            if reason:
                self._clear_status()
                self.err.line(self.err.paint(f"cannot be placed: {reason}", RED, BOLD))
            self.err.flush()
        elif key != self._last_status or reason:
            self.err.line(str(data.get("line") or self._status_text(data)))
            self.err.flush()
        self._last_status = key

    @staticmethod
    def _status_text(data: dict[str, Any]) -> str:
        # queue_position counts the jobs that run before this one.
        state = data.get("state") or "Queued"
        ahead, size = data.get("queue_position"), data.get("queue_size")
        parts = [f"{state}:"]
        if isinstance(ahead, int):
            parts.append("next in line," if ahead == 0 else f"{ahead} ahead,")
        if size is not None:
            parts.append(f"{size} queued,")
        idle, busy = data.get("nodes_idle", "?"), data.get("nodes_alloc", "?")
        parts.append(f"nodes {idle} idle {busy} busy")
        return " ".join(parts)

    def end(self, data: dict[str, Any]) -> None:
        if self.json:
            print_json({"event": "end", **data}, compact=True)
            return
        self._clear_status()
        self.out.flush()
        if not self.err.rich:
            self.err.line(str(data.get("line") or f"job {data.get('uuid')} {data.get('state')}"))
        else:
            state = str(data.get("state") or "?")
            parts = [self.err.paint(f"● {state}", STATE_STYLES.get(state, ""), BOLD)]
            parts.append(str(data.get("uuid") or ""))
            for name in ("output", "log"):
                if data.get(name):
                    parts.append(f"{name} {data[name]}")
            self.err.line("  ".join(parts))
        self.err.flush()

    def notice(self, text: str) -> None:
        self._clear_status()
        self.out.flush()
        self.err.line(self.err.paint(f"crunch: {text}", DIM))
        self.err.flush()

    def close(self) -> None:
        self._clear_status()
        self.out.flush()


def follow_log(
    client: ApiClient,
    uuid: str,
    view: LogView,
    *,
    since: int | None,
    follow: bool,
    attempts: int | None = None,
    pause: float | None = None,
) -> FollowOutcome:
    """Show a job's log through `view`; with `follow`, until the job ends or a status says it
    cannot be placed. `since` None means the server's default tail (the last 8 KiB).

    A broken stream is resumed after the last chunk shown: `Last-Event-ID` says so and
    `since` says the same (sequence > N is sequence >= N+1), and chunks already shown are
    skipped should the server send them again. After `attempts` failures in a row (no
    connection, or one that delivered nothing), raises `ClientError`. `attempts` and
    `pause` default to RECONNECT_ATTEMPTS and RECONNECT_PAUSE."""
    attempts = RECONNECT_ATTEMPTS if attempts is None else attempts
    pause = RECONNECT_PAUSE if pause is None else pause
    path = f"/arvados/v1/jobs/{quote(uuid)}/log_tail_follow"
    state = _FollowState()
    failures = 0
    try:
        while True:
            query: dict[str, Any] = {"follow": "true" if follow else "false"}
            headers = {"Accept": "text/event-stream"}
            if state.last_id is not None:
                query["since"] = state.last_id + 1
                headers["Last-Event-ID"] = str(state.last_id)
            elif since is not None:
                query["since"] = since
            try:
                with client.stream(
                    path, query=query, headers=headers, read_timeout=STREAM_READ_TIMEOUT
                ) as stream:
                    kind = stream.headers.get("content-type", "")
                    if not kind.startswith("text/event-stream"):
                        raise CommandError(f"the server did not stream the log ({kind or '?'})")
                    parser = EventParser()
                    for piece in stream:
                        failures = 0
                        for event in parser.feed(piece):
                            outcome = state.show(event, view, follow=follow)
                            if outcome is not None:
                                return outcome
                        view.flush()
                if not follow:
                    return FollowOutcome()
                reason = "the stream ended before the job did"
            except ApiError as exc:
                if exc.status < 500:
                    raise
                reason = str(exc)
            except ClientError as exc:
                reason = str(exc)
            failures += 1
            if failures > attempts:
                raise ClientError(f"lost the log stream of {uuid}: {reason}")
            view.notice(f"reconnecting ({reason})")
            time.sleep(pause * 2 ** (failures - 1))
    finally:
        view.close()


class _FollowState:
    """What a follower has shown so far: the number of the last log chunk."""

    def __init__(self) -> None:
        self.last_id: int | None = None

    def show(self, event: ServerEvent, view: LogView, *, follow: bool) -> FollowOutcome | None:
        """Show one event; the outcome when it ends the following."""
        if event.event == "end":
            data = _json_data(event.data)
            view.end(data)
            return FollowOutcome(end=data)
        if event.event == "status":
            data = _json_data(event.data)
            view.status(data)
            if follow and data.get("cannot_run"):
                return FollowOutcome(cannot_run=str(data["cannot_run"]))
            return None
        if event.event != "message":
            return None
        number = int(event.id) if event.id and event.id.isdigit() else None
        if number is not None and self.last_id is not None and number <= self.last_id:
            return None  # shown before the connection broke
        view.log(event.id, event.lines)
        if number is not None:
            self.last_id = number
        return None


def cmd_logs(args: argparse.Namespace) -> int:
    def body() -> int:
        uuid = check_job_uuid(args.uuid)
        since = 0 if args.all else args.since
        if not args.follow and since is None:
            since = 0  # without --follow: the whole log so far
        client = ApiClient.from_env()
        view = LogView(json_mode=args.json)
        outcome = follow_log(client, uuid, view, since=since, follow=args.follow)
        if outcome.cannot_run:
            print(f"crunch logs: {uuid} cannot be placed: {outcome.cannot_run}", file=sys.stderr)
        return outcome.exit_code if args.follow else EXIT_OK

    return run_command("logs", body)


# --- the parsers ---------------------------------------------------------------------------


def _since(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"--since takes a chunk number, not {value!r}")
    return int(value)


def add_list_options(parser: argparse.ArgumentParser, *, limit: int) -> None:
    parser.add_argument(
        "--filter",
        dest="filters",
        action="append",
        metavar="JSON",
        help='a condition, e.g. \'["script","=","hash"]\' (repeatable)',
    )
    parser.add_argument(
        "--state", type=_state, action="append", help=f"only jobs in this state: {STATES}"
    )
    parser.add_argument("--limit", type=_limit, default=limit, help=f"at most N (default {limit})")
    parser.add_argument(
        "--order",
        action="append",
        metavar='"ATTR [asc|desc]"',
        help="sort by an attribute (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def add_parsers(sub: Any) -> None:
    """Register list, queue, cancel, logs and whoami (`get UUID` is in `crunch.keepcli`)."""
    listing = sub.add_parser("list", help="jobs, newest first")
    add_list_options(listing, limit=20)
    listing.set_defaults(func=cmd_list)

    queue = sub.add_parser("queue", help="queued jobs in the order they will run")
    add_list_options(queue, limit=100)
    queue.set_defaults(func=cmd_queue)

    cancel = sub.add_parser("cancel", help="cancel queued or running jobs")
    cancel.add_argument("uuids", nargs="+", metavar="UUID")
    cancel.add_argument("--cascade", action="store_true", help="also cancel their child jobs")
    cancel.add_argument("--json", action="store_true", help="print the cancelled jobs as JSON")
    cancel.set_defaults(func=cmd_cancel)

    logs = sub.add_parser("logs", help="a job's log; with --follow, until the job ends")
    logs.add_argument("uuid", metavar="UUID")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep streaming until the job ends"
    )
    start = logs.add_mutually_exclusive_group()
    start.add_argument("--since", type=_since, metavar="N", help="from log chunk N on")
    start.add_argument("--all", action="store_true", help="the whole log (same as --since 0)")
    logs.add_argument("--json", action="store_true", help="one JSON object per event")
    logs.set_defaults(func=cmd_logs)

    whoami = sub.add_parser("whoami", help="the user of ARVADOS_API_TOKEN, and the API host")
    whoami.add_argument("--json", action="store_true", help="print the user as JSON")
    whoami.set_defaults(func=cmd_whoami)
