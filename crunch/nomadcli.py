"""`crunch job register` and `crunch job dispatch`: Nomad's parameterized jobs from the
command line, against the Nomad-style door (`/v1/...`), behaving as `nomad job dispatch`.

    crunch job register video.nomad          # Nomad HCL (the common subset) or JSON
    crunch job dispatch -meta input=s3://b/a video-encode payload.json
    echo '{"a": 1}' | crunch job dispatch -detach video-encode -

`dispatch` prints the dispatched job's and evaluation's IDs, then (unless `-detach`)
monitors the evaluation as Nomad does: the allocation it created and its node, status
changes, and how it finished. Exit codes follow `nomad job dispatch`: 0 when the job is
placed (or with `-detach`), 2 when it cannot be placed (each dimension and node count
printed), 1 on any other error (usage, unreadable input, unknown job, connection).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crunch.client import ApiClient, ApiError, ClientError

EXIT_OK, EXIT_ERROR, EXIT_UNPLACED = 0, 1, 2
POLL_SECONDS = 1.0


class Failure(Exception):
    """A message for stderr and exit 1."""


# --- HCL ----------------------------------------------------------------------------------------


def _block(value: Any) -> dict[str, Any]:
    """python-hcl2 gives each block as a list of one mapping."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        merged: dict[str, Any] = {}
        for item in value:
            merged.update(item)
        return merged
    return value if isinstance(value, dict) else {}


def _labelled(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """Labelled blocks (`group "name" { ... }`) as (label, body) pairs."""
    out = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            for label, body in item.items():
                out.append((label, _block(body) if isinstance(body, list) else body))
    return out


def _constraints(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in body.get("constraint", []):
        c = _block(item) if isinstance(item, list) else item
        out.append(
            {
                "LTarget": c.get("attribute", ""),
                "RTarget": str(c.get("value", "")),
                "Operand": c.get("operator", "="),
            }
        )
    return out


def hcl_to_job(text: str) -> dict[str, Any]:
    """A Nomad HCL job file (job / group / task / parameterized / meta / config / env /
    resources / constraint / dispatch_payload / artifact) as Nomad's JSON job."""
    import hcl2

    try:
        parsed = hcl2.loads(text)
    except Exception as exc:  # the parser's own error types
        raise Failure(f"Error parsing job file: {exc}") from None
    jobs = _labelled(parsed.get("job", []))
    if len(jobs) != 1:
        raise Failure("Error parsing job file: exactly one job block is needed")
    job_id, body = jobs[0]
    job: dict[str, Any] = {"ID": job_id, "Name": body.get("name", job_id)}
    for key, name in (("type", "Type"), ("namespace", "Namespace"), ("priority", "Priority")):
        if key in body:
            job[name] = body[key]
    if "datacenters" in body:
        job["Datacenters"] = body["datacenters"]
    if "meta" in body:
        job["Meta"] = {k: str(v) for k, v in _block(body["meta"]).items()}
    if "parameterized" in body:
        p = _block(body["parameterized"])
        job["ParameterizedJob"] = {
            "Payload": p.get("payload", "optional"),
            "MetaRequired": p.get("meta_required", []),
            "MetaOptional": p.get("meta_optional", []),
        }
    if body.get("constraint"):
        job["Constraints"] = _constraints(body)
    groups = []
    for group_name, group in _labelled(body.get("group", [])):
        tasks = []
        for task_name, task in _labelled(group.get("task", [])):
            entry: dict[str, Any] = {
                "Name": task_name,
                "Driver": task.get("driver"),
                "Config": _block(task.get("config", [])),
            }
            if "env" in task:
                entry["Env"] = {k: str(v) for k, v in _block(task["env"]).items()}
            if "resources" in task:
                r = _block(task["resources"])
                entry["Resources"] = {"CPU": r.get("cpu"), "MemoryMB": r.get("memory")}
            if "dispatch_payload" in task:
                entry["DispatchPayload"] = {"File": _block(task["dispatch_payload"]).get("file")}
            if "artifact" in task:
                entry["Artifacts"] = [{"GetterSource": _block(task["artifact"]).get("source")}]
            if task.get("constraint"):
                entry["Constraints"] = _constraints(task)
            tasks.append(entry)
        entry_group: dict[str, Any] = {"Name": group_name, "Count": group.get("count", 1)}
        entry_group["Tasks"] = tasks
        if group.get("constraint"):
            entry_group["Constraints"] = _constraints(group)
        groups.append(entry_group)
    job["TaskGroups"] = groups
    return job


def read_job_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise Failure(f"Error reading job file {path}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise Failure(f"Error parsing job file: {exc}") from None
        return data["Job"] if isinstance(data, dict) and isinstance(data.get("Job"), dict) else data
    return hcl_to_job(text)


# --- requests ------------------------------------------------------------------------------------


def _call(client: ApiClient, method: str, path: str, **kw: Any) -> Any:
    return client.request(method, path, **kw).json()


def cmd_register(args: argparse.Namespace) -> int:
    try:
        job = read_job_file(args.file)
        client = ApiClient.from_env()
        query = {"namespace": args.namespace} if args.namespace else None
        answer = _call(
            client, "POST", "/v1/jobs", query=query, body=json.dumps({"Job": job}).encode()
        )
    except Failure as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except ApiError as exc:
        print(f"Error submitting job: {'; '.join(exc.errors) or exc}", file=sys.stderr)
        return EXIT_ERROR
    except ClientError as exc:
        print(f"Error submitting job: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print("Job registration successful")
    version = (answer.get("Crunch") or {}).get("version")
    if version is not None:
        print(f'Job "{job.get("ID")}" is at version {version}')
    return EXIT_OK


def _short(value: str, verbose: bool) -> str:
    return value if verbose else value[:8]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _metrics(metric: dict[str, Any]) -> list[str]:
    lines = []
    if not metric.get("NodesEvaluated"):
        lines.append("* No nodes were eligible for evaluation")
    for constraint, count in (metric.get("ConstraintFiltered") or {}).items():
        lines.append(f'* Constraint "{constraint}": {count} nodes excluded by filter')
    if metric.get("NodesExhausted"):
        lines.append(f"* Resources exhausted on {metric['NodesExhausted']} nodes")
    for dimension, count in (metric.get("DimensionExhausted") or {}).items():
        lines.append(f'* Dimension "{dimension}" exhausted on {count} nodes')
    return lines


def monitor(client: ApiClient, eval_id: str, verbose: bool) -> int:
    short = _short(eval_id, verbose)
    print(f'==> {_now()}: Monitoring evaluation "{short}"')
    seen_job = False
    status = "pending"
    allocs: dict[str, str] = {}
    while True:
        evaluation = _call(client, "GET", f"/v1/evaluation/{eval_id}")
        if evaluation.get("JobID") and not seen_job:
            seen_job = True
            print(f'    {_now()}: Evaluation triggered by job "{evaluation["JobID"]}"')
        for alloc in _call(client, "GET", f"/v1/evaluation/{eval_id}/allocations"):
            alloc_id = _short(alloc["ID"], verbose)
            if alloc["ID"] not in allocs:
                allocs[alloc["ID"]] = alloc["ClientStatus"]
                node = _short(alloc.get("NodeID") or "", verbose)
                print(
                    f'    {_now()}: Allocation "{alloc_id}" created: node "{node}", '
                    f'group "{alloc["TaskGroup"]}"'
                )
            elif allocs[alloc["ID"]] != alloc["ClientStatus"]:
                print(
                    f'    {_now()}: Allocation "{alloc_id}" status changed: '
                    f'"{allocs[alloc["ID"]]}" -> "{alloc["ClientStatus"]}" '
                    f"({alloc.get('ClientDescription', '')})"
                )
                allocs[alloc["ID"]] = alloc["ClientStatus"]
        if evaluation["Status"] != status:
            if evaluation["Status"] != "pending":
                print(
                    f'    {_now()}: Evaluation status changed: "{status}" -> '
                    f'"{evaluation["Status"]}"'
                )
            status = evaluation["Status"]
        if status in ("complete", "failed", "canceled"):
            break
        time.sleep(POLL_SECONDS)
    failed = evaluation.get("FailedTGAllocs") or {}
    if not failed:
        print(f'==> {_now()}: Evaluation "{short}" finished with status "{status}"')
        return EXIT_OK
    print(
        f'==> {_now()}: Evaluation "{short}" finished with status "{status}" but failed '
        "to place all allocations:"
    )
    for group, metric in failed.items():
        count = (metric.get("CoalescedFailures") or 0) + 1
        plural = "allocation" if count == 1 else "allocations"
        print(f'    {_now()}: Task Group "{group}" (failed to place {count} {plural}):')
        for line in _metrics(metric):
            print(f"      {line}")
    if evaluation.get("BlockedEval"):
        blocked = _short(evaluation["BlockedEval"], verbose)
        print(
            f'    {_now()}: Evaluation "{blocked}" waiting for additional capacity to place '
            "remainder"
        )
    return EXIT_UNPLACED


def cmd_dispatch(args: argparse.Namespace) -> int:
    try:
        meta: dict[str, str] = {}
        for item in args.meta or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise Failure(f"Error parsing meta value: {item}")
            meta[key] = value
        payload = b""
        if args.input is not None:
            try:
                payload = (
                    sys.stdin.buffer.read() if args.input == "-" else Path(args.input).read_bytes()
                )
            except OSError as exc:
                raise Failure(f"Error reading input data: {exc.strerror or exc}") from None
        client = ApiClient.from_env()
        query: dict[str, str] = {"prefix": args.job}
        if args.namespace:
            query["namespace"] = args.namespace
        jobs = [j for j in _call(client, "GET", "/v1/jobs", query=query) if j["ParameterizedJob"]]
        if not jobs:
            raise Failure(f'No parameterized job(s) with prefix or ID "{args.job}" found')
        if len(jobs) > 1 and jobs[0]["ID"] != args.job:
            names = "\n".join(j["ID"] for j in jobs)
            raise Failure(f'Prefix "{args.job}" matched multiple jobs\n\n{names}')
        job_id = jobs[0]["ID"]
        dispatch_query: dict[str, str] = {}
        if args.idempotency_token:
            dispatch_query["idempotency_token"] = args.idempotency_token
        if args.namespace:
            dispatch_query["namespace"] = args.namespace
        body = {
            "JobID": job_id,
            "Payload": base64.b64encode(payload).decode() if payload else None,
            "Meta": meta,
            "IdPrefixTemplate": args.id_prefix_template or "",
        }
        try:
            answer = _call(
                client,
                "PUT",
                f"/v1/job/{quote(job_id, safe='')}/dispatch",
                query=dispatch_query or None,
                body=json.dumps(body).encode(),
            )
        except ApiError as exc:
            detail = "; ".join(exc.errors)
            raise Failure(
                f"Failed to dispatch job: Unexpected response code: {exc.status} ({detail})"
            ) from None
        crunch = answer.get("Crunch") or {}
        eval_id = answer.get("EvalID") or ""
        reused = " (reused)" if crunch.get("reused") else ""
        print(f"Dispatched Job ID = {answer['DispatchedJobID']}{reused}")
        if eval_id:
            print(f"Evaluation ID     = {_short(eval_id, args.verbose)}")
        if crunch.get("reused") and args.verbose:
            print(
                f"Reused: job {crunch.get('uuid')} ran the same payload, meta, job version and "
                "image; its results are handed back instead of running again"
            )
        if not eval_id or args.detach:
            return EXIT_OK
        print()
        return monitor(client, eval_id, args.verbose)
    except Failure as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except ClientError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def add_job_parsers(job_sub: Any) -> None:
    register = job_sub.add_parser("register", help="register a Nomad job file (HCL or JSON)")
    register.add_argument("file", metavar="FILE", help="a Nomad job file, or - for stdin")
    register.add_argument("-namespace", dest="namespace", metavar="NS")
    register.set_defaults(func=cmd_register)

    dispatch = job_sub.add_parser(
        "dispatch", help="dispatch a parameterized job, as nomad job dispatch"
    )
    dispatch.add_argument("-meta", dest="meta", action="append", metavar="KEY=VALUE")
    dispatch.add_argument("-detach", dest="detach", action="store_true")
    dispatch.add_argument("-verbose", dest="verbose", action="store_true")
    dispatch.add_argument("-idempotency-token", dest="idempotency_token", metavar="TOKEN")
    dispatch.add_argument("-id-prefix-template", dest="id_prefix_template", metavar="PREFIX")
    dispatch.add_argument("-namespace", dest="namespace", metavar="NS")
    dispatch.add_argument("job", metavar="JOB")
    dispatch.add_argument("input", nargs="?", metavar="INPUT", help="a file, or - for stdin")
    dispatch.set_defaults(func=cmd_dispatch)
