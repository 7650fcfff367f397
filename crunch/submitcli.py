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

A command job runs an argv instead of a script, over an uploaded directory, a git commit or
nothing; everything after `--` is the command:

    crunch submit --workdir . --env SEED=1 --cpus 0.5 --memory 512Mi --find-or-create \
        --follow -- python3 train.py --epochs 3

It is reused, with `--find-or-create`, when the directory's content, the argv, the
environment, the image and the parameters are all the same; labels, meta and resources do
not count.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import IO, Any

from crunch.client import ApiClient
from crunch.jobscli import LogView, follow_log, parse_filter
from crunch.output import DIM, GREEN, Output, UsageError, print_json, run_command
from crunch.workdir import upload_workdir
from jobs import units
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


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`crunch submit [options] -- COMMAND [ARGS...]`: the options, and the command (None
    when there is no `--`)."""
    if argv[:1] != ["submit"] or "--" not in argv:
        return argv, None
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{option} {item}: expected NAME=VALUE")
        pairs[name] = value
    return pairs


def _resources(args: argparse.Namespace) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    try:
        if args.cpus is not None:
            resources["vcpus"] = units.parse_cpus(args.cpus)
        if args.memory is not None:
            resources["ram"] = units.parse_bytes(args.memory)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.gpus is not None:
        if args.gpus < 0:
            raise UsageError("--gpus must be 0 or more")
        resources["gpus"] = args.gpus
    return resources


def _command_job(args: argparse.Namespace, command: list[str]) -> dict[str, Any]:
    if not command:
        raise UsageError("give the command after --, e.g. crunch submit -- python3 train.py")
    for option, value in (
        ("--script", args.script),
        ("--filter", args.filters),
        ("--minimum-version", args.minimum_version),
        ("--exclude-version", args.exclude_versions),
    ):
        if value:
            raise UsageError(f"{option} is for script jobs, not for a command after --")
    if args.workdir and args.repository:
        raise UsageError("a command runs over --workdir or --repository, not both")
    job: dict[str, Any] = {"command": command}
    if args.workdir:
        job["working_dir"] = args.workdir_pdh
    elif args.repository:
        job["repository"] = args.repository
        job["script_version"] = args.version
    return job


def build_request(
    args: argparse.Namespace, command: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job object and the request parameters."""
    parameters = parse_parameters(args.parameters, args.params)
    if command is not None:
        job = _command_job(args, command)
        if parameters:
            job["script_parameters"] = parameters
    else:
        missing = [
            o for o, v in (("--repository", args.repository), ("--script", args.script)) if not v
        ]
        if missing:
            raise UsageError(
                f"{' and '.join(missing)} required for a script job (or give a command after --)"
            )
        for option in ("workdir", "env"):
            if getattr(args, option):
                raise UsageError(f"--{option} is for command jobs: give a command after --")
        job = {
            "repository": args.repository,
            "script": args.script,
            "script_version": args.version,
            "script_parameters": parameters,
        }
    environment = _pairs(args.env, "--env")
    if environment:
        job["environment"] = environment
    labels, meta = _pairs(args.labels, "--label"), _pairs(args.meta, "--meta")
    if labels:
        job["labels"] = labels
    if meta:
        job["meta"] = meta
    constraints: dict[str, Any] = _resources(args)
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
    if job.get("command") is not None:
        print(f"  command: {shlex.join(job['command'])}", file=out)
        if job.get("working_dir"):
            print(f"  workdir: {job['working_dir']}", file=out)
    if job.get("script_version"):
        print(
            f"  commit:  {job['script_version']} ({job.get('supplied_script_version')})", file=out
        )
    if job.get("docker_image_locator"):
        print(f"  image:   {job['docker_image_locator']}", file=out)
    filters = explanation.get("filters")
    if filters is None and explanation.get("reuse_key"):
        candidates = explanation.get("candidates") or []
        print(f"  identity: {explanation['reuse_key'][:16]}…", file=out)
        print(f"  earlier jobs like it: {len(candidates)}", file=out)
        _print_candidates(candidates, look, out)
        return
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
    _print_candidates(candidates, look, out)


def _print_candidates(candidates: list[dict[str, Any]], look: Output, out: IO[str]) -> None:
    for candidate in candidates:
        print(
            f"    {candidate['uuid']}  {look.state(candidate['state'])}"
            f"{' ' * (9 - len(str(candidate['state'])))}  {candidate['decision']}: "
            f"{candidate['reason']}",
            file=out,
        )


def cmd_submit(args: argparse.Namespace) -> int:
    def body() -> int:
        client = ApiClient.from_env()
        command = getattr(args, "command_argv", None)
        if command is not None and args.workdir:
            report = upload_workdir(client, args.workdir)
            args.workdir_pdh = report.portable_data_hash
            if not args.json:
                print(
                    f"working directory {report.portable_data_hash}: {report.files} files, "
                    f"{report.files - report.files_cached} sent ({report.bytes_sent} bytes)"
                    + (f", left out {', '.join(report.skipped)}" if report.skipped else ""),
                    file=sys.stderr,
                )
        job, params = build_request(args, command)
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
    submit.add_argument("--repository", help="e.g. active/foo, or a git URL")
    submit.add_argument("--script", help="a file in crunch_scripts/ (a script job)")
    submit.add_argument(
        "--workdir",
        metavar="DIR",
        help="upload DIR (unchanged files are not sent again); the command runs in a copy",
    )
    submit.add_argument(
        "--env", action="append", metavar="NAME=VALUE", help="the command's environment"
    )
    submit.add_argument("--cpus", metavar="N", help="CPUs the job needs: 2, 0.5 or 500m")
    submit.add_argument("--memory", metavar="SIZE", help="memory the job needs: 512Mi, 2Gi")
    submit.add_argument("--gpus", type=int, metavar="N", help="GPUs the job needs")
    submit.add_argument(
        "--label", dest="labels", action="append", metavar="K=V", help="a label (not identity)"
    )
    submit.add_argument(
        "--meta", action="append", metavar="K=V", help="metadata (not part of the identity)"
    )
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
