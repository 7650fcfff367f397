"""`crunch job run|describe|list|history|executions|logs|stop`: Bacalhau's job commands
against the Bacalhau-style door (`/api/v1/orchestrator/...`).

    crunch job run job.yaml --wait           # Bacalhau's YAML (or JSON) job spec
    crunch job run job.yaml --follow         # and its log as it runs
    crunch job list --labels 'env=prod,tier in (a,b)'
    crunch job logs j-1234abcd --follow

Exit codes: 0 success, 1 an error (a refused spec, an unknown job, no connection), 2 the
job failed, was stopped, or no node can run it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crunch.client import ApiClient, ApiError, ClientError

EXIT_OK, EXIT_ERROR, EXIT_FAILED = 0, 1, 2
POLL_SECONDS = 0.5
BASE = "/api/v1/orchestrator"
TERMINAL = ("Completed", "Failed", "Stopped")


class Failure(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def read_spec(path: str) -> dict[str, Any]:
    """A Bacalhau job spec from YAML or JSON (a file, or - for stdin): the job itself or
    `{"Job": ...}`."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise Failure(f"Error: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Failure(f"Error: {path} is not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Failure(f"Error: {path} does not hold a job spec (a mapping)")
    job = data.get("Job", data)
    if not isinstance(job, dict):
        raise Failure(f"Error: {path}: Job must be a mapping")
    return job


def _call(client: ApiClient, method: str, path: str, **kw: Any) -> Any:
    try:
        return client.request(method, path, **kw).json()
    except ApiError as exc:
        detail = "; ".join(exc.errors) or str(exc)
        code = EXIT_FAILED if "not enough nodes to run job" in detail else EXIT_ERROR
        raise Failure(f"Error: {detail}", code) from None


def _job(client: ApiClient, job_id: str, include: str = "") -> dict[str, Any]:
    query = {"include": include} if include else None
    return _call(client, "GET", f"{BASE}/jobs/{quote(job_id, safe='')}", query=query)


def _when(nanos: int) -> str:
    moment = dt.datetime.fromtimestamp(nanos / 1e9, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _instance(client: ApiClient, job_id: str) -> str | None:
    items = _call(client, "GET", f"{BASE}/jobs/{quote(job_id, safe='')}/executions")["Items"]
    uuids = [(i.get("Crunch") or {}).get("job_uuid") for i in items]
    return uuids[-1] if uuids and uuids[-1] else None


def _follow(client: ApiClient, job_id: str) -> None:
    """The job's newest instance's log, through the core's gap-free follow stream."""
    from crunch.jobscli import LogView, follow_log

    deadline = time.monotonic() + 30
    uuid = _instance(client, job_id)
    while uuid is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        uuid = _instance(client, job_id)
    if uuid is None:
        raise Failure(f"Error: job {job_id} has no execution to follow")
    follow_log(client, uuid, LogView(json_mode=False), since=0, follow=True)


def _wait(client: ApiClient, job_id: str) -> dict[str, Any]:
    while True:
        job = _job(client, job_id)["Job"]
        if job["State"]["StateType"] in TERMINAL:
            return job
        time.sleep(POLL_SECONDS)


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args, ApiClient.from_env()) or EXIT_OK)
        except Failure as exc:
            print(str(exc), file=sys.stderr)
            return exc.code
        except ClientError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


@_guard
def cmd_run(args: argparse.Namespace, client: ApiClient) -> int:
    job = read_spec(args.file)
    if args.reuse:
        job["Meta"] = dict(job.get("Meta") or {}) | {"crunch.reuse": "true"}
    answer = _call(client, "PUT", f"{BASE}/jobs", body=json.dumps({"Job": job}).encode())
    job_id = answer["JobID"]
    if args.id_only:
        print(job_id)
    else:
        for warning in answer.get("Warnings") or []:
            print(f"Warning: {warning}", file=sys.stderr)
        print(f"Job successfully submitted. Job ID: {job_id}")
    if args.explain:
        _explain(job, answer)
    if args.follow:
        _follow(client, job_id)
    if not (args.wait or args.follow):
        if not args.id_only:
            print(f"To get more details about the run, execute:\n\tcrunch job describe {job_id}")
        return EXIT_OK
    final = _wait(client, job_id)
    state = final["State"]
    if not args.id_only:
        message = f": {state['Message']}" if state.get("Message") else ""
        print(f"Job {job_id} {state['StateType']}{message}")
    return EXIT_OK if state["StateType"] == "Completed" else EXIT_FAILED


def _explain(job: dict[str, Any], answer: dict[str, Any]) -> None:
    reused = [w for w in answer.get("Warnings") or [] if "results are returned" in w]
    if reused:
        print(f"Reused: {reused[0]}", file=sys.stderr)
    elif (job.get("Meta") or {}).get("crunch.reuse", "").lower() != "true":
        print("Not reused: reuse was not asked for (--reuse)", file=sys.stderr)
    else:
        print(
            "Not reused: no earlier batch job you can read ran the same image, "
            "command, environment and inputs as many times and completed",
            file=sys.stderr,
        )


@_guard
def cmd_describe(args: argparse.Namespace, client: ApiClient) -> int:
    import yaml

    answer = _job(client, args.id, include="executions")
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    job = answer["Job"]
    print(yaml.safe_dump({"Job": job}, sort_keys=False).rstrip())
    print("\nExecutions:")
    rows = [
        [
            e["ID"][:10],
            e["NodeID"][:10],
            e["ComputeState"]["StateType"],
            str((e.get("RunOutput") or {}).get("ExitCode", "")),
            (e.get("PublishedResult") or {}).get("Params", {}).get("PDH", ""),
        ]
        for e in answer.get("Executions", {}).get("Items", [])
    ]
    _table(["ID", "NODE", "STATE", "EXIT", "RESULT"], rows)
    for execution in answer.get("Executions", {}).get("Items", []):
        output = execution.get("RunOutput") or {}
        if output.get("Stdout"):
            print(f"\nStandard output of {execution['ID'][:10]}:\n{output['Stdout'].rstrip()}")
    return EXIT_OK


@_guard
def cmd_list(args: argparse.Namespace, client: ApiClient) -> int:
    query: dict[str, str] = {"order_by": "created_at", "limit": str(args.limit)}
    if args.labels:
        query["labels"] = args.labels
    if args.namespace:
        query["namespace"] = args.namespace
    items = _call(client, "GET", f"{BASE}/jobs", query=query)["Items"]
    if args.json:
        print(json.dumps(items, indent=2))
        return EXIT_OK
    rows = [
        [_when(j["CreateTime"]), j["ID"][:10], j["Name"], j["Type"], j["State"]["StateType"]]
        for j in items
    ]
    _table(["CREATED", "ID", "JOB", "TYPE", "STATE"], rows)
    return EXIT_OK


@_guard
def cmd_history(args: argparse.Namespace, client: ApiClient) -> int:
    query = {"event_type": args.event_type}
    path = f"{BASE}/jobs/{quote(args.id, safe='')}/history"
    items = _call(client, "GET", path, query=query)["Items"]
    rows = []
    for item in items:
        level = "Job" if item["Type"] == "JobLevel" else "Execution"
        states = item.get("JobState") or item.get("ExecutionState") or {}
        change = f"{states.get('Previous', '')} -> {states.get('New', '')}"
        rows.append(
            [
                item["Time"][:19].replace("T", " "),
                level,
                str(item["NewRevision"]),
                (item.get("ExecutionID") or "")[:10],
                change,
                item["Event"]["Message"],
            ]
        )
    _table(["TIME", "LEVEL", "REV.", "EXEC. ID", "STATE", "EVENT"], rows)
    return EXIT_OK


@_guard
def cmd_executions(args: argparse.Namespace, client: ApiClient) -> int:
    path = f"{BASE}/jobs/{quote(args.id, safe='')}/executions"
    items = _call(client, "GET", path)["Items"]
    rows = [
        [
            _when(e["CreateTime"]),
            e["ID"][:10],
            e["NodeID"][:10],
            e["ComputeState"]["StateType"],
            e["DesiredState"]["StateType"],
            str((e.get("RunOutput") or {}).get("ExitCode", "")),
        ]
        for e in items
    ]
    _table(["CREATED", "ID", "NODE ID", "STATE", "DESIRED", "EXIT"], rows)
    return EXIT_OK


@_guard
def cmd_logs(args: argparse.Namespace, client: ApiClient) -> int:
    if args.follow:
        _follow(client, args.id)
        return EXIT_OK
    answer = _job(client, args.id, include="executions")
    for execution in answer.get("Executions", {}).get("Items", []):
        sys.stdout.write((execution.get("RunOutput") or {}).get("Stdout", ""))
    return EXIT_OK


@_guard
def cmd_stop(args: argparse.Namespace, client: ApiClient) -> int:
    query = {"reason": args.reason} if args.reason else None
    _call(client, "DELETE", f"{BASE}/jobs/{quote(args.id, safe='')}", query=query, body=b"{}")
    print(f"Job stop successfully submitted: {args.id}")
    return EXIT_OK


def add_job_parsers(job_sub: Any) -> None:
    run = job_sub.add_parser("run", help="submit a Bacalhau job spec (YAML or JSON)")
    run.add_argument("file", metavar="SPEC", help="a job spec file, or - for stdin")
    run.add_argument("--wait", action="store_true", help="wait for the job to end")
    run.add_argument("--follow", action="store_true", help="follow its log, then wait")
    run.add_argument("--id-only", action="store_true", help="print only the job ID")
    run.add_argument("--reuse", action="store_true", help="an identical earlier job's results")
    run.add_argument("--explain", action="store_true", help="say why it was reused or not")
    run.set_defaults(func=cmd_run)

    describe = job_sub.add_parser("describe", help="a job, its executions and their output")
    describe.add_argument("id", metavar="ID")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(func=cmd_describe)

    listing = job_sub.add_parser("list", help="jobs, newest last")
    listing.add_argument("--labels", metavar="SELECTOR", help="e.g. 'env=prod,tier in (a,b)'")
    listing.add_argument("--namespace", metavar="NS")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    history = job_sub.add_parser("history", help="a job's state changes")
    history.add_argument("id", metavar="ID")
    history.add_argument("--event-type", default="all", choices=["all", "job", "execution"])
    history.set_defaults(func=cmd_history)

    executions = job_sub.add_parser("executions", help="a job's executions")
    executions.add_argument("id", metavar="ID")
    executions.set_defaults(func=cmd_executions)

    logs = job_sub.add_parser("logs", help="a job's output")
    logs.add_argument("id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.set_defaults(func=cmd_logs)

    stop = job_sub.add_parser("stop", help="stop a job and cancel its executions")
    stop.add_argument("id", metavar="ID")
    stop.add_argument("--reason", default="")
    stop.set_defaults(func=cmd_stop)
