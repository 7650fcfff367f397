"""`crunch submit`: submit a job, optionally reusing an earlier identical one.

    crunch submit --repository active/foo --script hash --version master \\
        input=fa7aeb5140e2848d39b416daeef4ffc5+45 count:=3 --find-or-create --explain

Parameters: `name=text` gives a string; `name:=JSON` gives any JSON value (`count:=3` is the
number 3, which is not the same job as `count=3`, the string "3": reuse compares exact
parameters). `--params FILE.json` (or `@FILE.json` among the parameters) reads an object
first; later `k=v` arguments override it.

It prints `UUID  STATE  new|reused` (coloured on a terminal), or the job as JSON with
`--json`. With `--follow` it then follows the job's log as `crunch logs --follow` does (a new
job's from its first line, a reused one's last 8 KiB) and exits 0 when the job completes, 2
when it fails, is cancelled or cannot be placed; a reused job that is already finished shows
its log and end state at once. `--json --follow` prints the job on one line, then one JSON
object per log event.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from crunch.client import ApiClient
from crunch.jobscli import LogView, follow_log, parse_filter
from crunch.output import DIM, GREEN, Output, UsageError, print_json, run_command
from jobs.exceptions import InvalidRequest
from jobs.placement import parse_selector


def _params_file(path: str, label: str) -> dict[str, Any]:
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{label}: {exc}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"{label}: must hold a JSON object")
    return loaded


def parse_parameters(items: list[str], params_file: str | None) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if params_file:
        parameters.update(_params_file(params_file, f"--params {params_file}"))
    for item in items:
        if item.startswith("@"):
            parameters.update(_params_file(item[1:], item))
            continue
        name, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"{item}: parameters are name=text or name:=JSON")
        value: Any = raw
        if name.endswith(":"):
            name = name[:-1]
            try:
                value = json.loads(raw)
            except ValueError:
                raise UsageError(f"{item}: the value after := must be JSON") from None
        if not name:
            raise UsageError(f"{item}: the parameter needs a name")
        parameters[name] = value
    return parameters


def _constraint(text: str) -> dict[str, Any]:
    try:
        return parse_selector(text, where=f"--constraint {text!r}").as_json()
    except InvalidRequest as exc:
        raise UsageError(str(exc)) from None


def build_request(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job object and the request parameters."""
    job: dict[str, Any] = {
        "repository": args.repository,
        "script": args.script,
        "script_version": args.version,
        "script_parameters": parse_parameters(args.parameters, args.params),
    }
    constraints: dict[str, Any] = {}
    if args.image:
        constraints["docker_image"] = args.image
    if args.constraints:
        constraints["constraints"] = [_constraint(text) for text in args.constraints]
    if constraints:
        job["runtime_constraints"] = constraints
    if args.priority is not None:
        job["priority"] = args.priority
    if args.nondeterministic:
        job["nondeterministic"] = True
    if args.description:
        job["description"] = args.description
    params: dict[str, Any] = {}
    if args.find_or_create:
        params["find_or_create"] = True
    if args.find_or_create or args.explain:
        # The explanation also says whether the job was reused.
        params["explain"] = True
    if args.filters:
        params["filters"] = [parse_filter(f) for f in args.filters]
    if args.minimum_version:
        params["minimum_script_version"] = args.minimum_version
    if args.exclude_versions:
        params["exclude_script_versions"] = args.exclude_versions
    return job, params


def was_reused(job: dict[str, Any]) -> bool:
    explanation = job.get("reuse_explanation") or {}
    return explanation.get("candidates") is not None and bool(explanation.get("reused"))


def print_result(job: dict[str, Any], *, explain: bool, out: IO[str]) -> None:
    look = Output(out)
    outcome = look.paint("reused", GREEN) if was_reused(job) else look.paint("new", DIM)
    print(f"{job['uuid']}  {look.state(job['state'])}  {outcome}", file=out)
    if not explain:
        return
    explanation = job.get("reuse_explanation") or {}
    print(f"  commit:  {job['script_version']} ({job.get('supplied_script_version')})", file=out)
    if job.get("docker_image_locator"):
        print(f"  image:   {job['docker_image_locator']}", file=out)
    filters = explanation.get("filters")
    if filters is None:
        print(
            f"  reuse:   {explanation.get('reason', 'not requested (use --find-or-create)')}",
            file=out,
        )
        return
    print("  filters:", file=out)
    for condition in filters:
        text = json.dumps(condition)
        print(f"    {text if len(text) <= 100 else text[:97] + '...'}", file=out)
    candidates = explanation.get("candidates") or []
    print(f"  candidates with the same parameters: {len(candidates)}", file=out)
    for candidate in candidates:
        print(
            f"    {candidate['uuid']}  {look.state(candidate['state'])}"
            f"{' ' * (9 - len(str(candidate['state'])))}  {candidate['decision']}: "
            f"{candidate['reason']}",
            file=out,
        )


def cmd_submit(args: argparse.Namespace) -> int:
    def body() -> int:
        job, params = build_request(args)
        client = ApiClient.from_env()
        result = client.call("POST", "jobs", query=params, body={"job": job})
        if args.json:
            print_json(result, compact=args.follow)
        else:
            print_result(result, explain=args.explain, out=sys.stdout)
            sys.stdout.flush()
        if not args.follow:
            return 0
        # A new job's log from its first line; a reused one's recent lines, like tail -f.
        since = None if was_reused(result) else 0
        view = LogView(json_mode=args.json)
        outcome = follow_log(client, result["uuid"], view, since=since, follow=True)
        if outcome.cannot_run:
            print(
                f"crunch submit: {result['uuid']} cannot be placed: {outcome.cannot_run}",
                file=sys.stderr,
            )
        return outcome.exit_code

    return run_command("submit", body)


def add_parsers(sub: Any) -> None:
    submit = sub.add_parser("submit", help="submit a job (reusing an identical one if asked)")
    submit.add_argument("--repository", required=True, help="e.g. active/foo, or a git URL")
    submit.add_argument("--script", required=True, help="a file in crunch_scripts/")
    submit.add_argument("--version", default="HEAD", help="branch, tag or commit (default HEAD)")
    submit.add_argument("parameters", nargs="*", metavar="NAME=TEXT|NAME:=JSON|@FILE.json")
    submit.add_argument("--params", metavar="FILE.json", help="parameters from a JSON object")
    submit.add_argument("--image", metavar="IMAGE", help="Docker image: repo[:tag], hash or PDH")
    submit.add_argument(
        "--constraint",
        dest="constraints",
        action="append",
        metavar="EXPR",
        help="run only on nodes whose labels match: region=us-west-2, 'tier in (a,b)', !spot,"
        " cpus>8 (repeatable)",
    )
    submit.add_argument("--priority", type=int)
    submit.add_argument(
        "--nondeterministic", action="store_true", help="never offer this job for reuse"
    )
    submit.add_argument("--description")
    submit.add_argument(
        "--find-or-create",
        action="store_true",
        help="reuse an earlier job with the same inputs instead of running again",
    )
    submit.add_argument(
        "--filter",
        dest="filters",
        action="append",
        metavar="JSON",
        help='a reuse filter, e.g. \'["script_version","in git","v1.2"]\'',
    )
    submit.add_argument(
        "--minimum-version", metavar="REF", help="reuse only jobs at this commit or later"
    )
    submit.add_argument(
        "--exclude-version",
        dest="exclude_versions",
        action="append",
        metavar="REF",
        help="never reuse jobs at this commit",
    )
    submit.add_argument(
        "--explain", action="store_true", help="say why each candidate was or was not reused"
    )
    submit.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="then follow the job's log until it ends (exit 2 if it fails)",
    )
    submit.add_argument("--json", action="store_true", help="print the job as JSON")
    submit.set_defaults(func=cmd_submit)
