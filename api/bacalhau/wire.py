"""The Bacalhau-style door's wire format: reading a job spec (Bacalhau's `models.Job`, v1.4)
into what the core runs, and the JSON shapes the orchestrator API answers with.

A spec is checked as upstream's `ValidateSubmission` checks it, in upstream's words, and
further where Crunch needs more (an image, a command, resources it can read). Fields only
the server sets (`ID`, `State`, `Version`, `Revision`, `CreateTime`, `ModifyTime`) are
ignored with a warning, as upstream does; so are `bacalhau.org/` Meta keys and tasks past
the first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from jobs import placement, units
from jobs.exceptions import InvalidRequest
from jobs.models import Schedule

DOOR = "bacalhau"
TYPES = {
    "batch": Schedule.ONCE,
    "ops": Schedule.EACH_NODE,
    "daemon": Schedule.EVERY_NODE,
    "service": Schedule.KEEP_RUNNING,
}
TYPE_OF_SCHEDULE: dict[str, str] = {v.value: k for k, v in TYPES.items()}
MAX_COUNT = 100
MAX_MAP_ITEMS = 256
MAX_TEXT = 4096
RESERVED_META = "bacalhau.org/"
REUSE_META = "crunch.reuse"
SERVER_FIELDS = {
    "ID": "job ID",
    "State": "job state",
    "Version": "job version",
    "Revision": "job revision",
    "CreateTime": "job create time",
    "ModifyTime": "job modify time",
}
DEFAULT_TOTAL_TIMEOUT = 1800
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")
TARGET_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,200}\Z")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
NOTE_RE = re.compile(r"^\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d crunch: ")


class BacalhauError(Exception):
    """A refusal in upstream's (echo's) shape: `{"message": ..., "error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, str]:
        return {"message": self.message, "error": f"code={self.status}, message={self.message}"}


def bad(message: str) -> BacalhauError:
    return BacalhauError(400, message)


def new_job_id() -> str:
    return f"j-{uuidlib.uuid4()}"


def derived_id(prefix: str, crunch_uuid: str) -> str:
    """A stable Bacalhau-style id (`e-…`, `n-…`) for a Crunch object."""
    return f"{prefix}-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'crunch:' + crunch_uuid)}"


def nanos(moment: dt.datetime | None) -> int:
    if moment is None:
        return 0
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the spec ----------------------------------------------------------------------------------


@dataclass
class Input:
    kind: str  # "crunch" (a collection by PDH) or "urlDownload"
    source: str  # the PDH or the URL
    target: str  # where the task sees it
    alias: str


@dataclass
class Parsed:
    """A checked spec: the Bacalhau document to read back, and the core's terms."""

    name: str | None
    namespace: str | None
    type: str
    count: int
    priority: int
    meta: dict[str, str]
    labels: dict[str, str]
    command: list[str]
    image: str
    environment: dict[str, str]
    runtime_constraints: dict[str, Any]
    inputs: list[Input]
    result_paths: list[tuple[str, str]]
    document: dict[str, Any]  # the job as read back, without the server's fields
    warnings: list[str] = field(default_factory=list)

    @property
    def schedule(self) -> str:
        return TYPES[self.type]

    @property
    def reuse_requested(self) -> bool:
        return self.meta.get(REUSE_META, "").lower() == "true"


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{name} must be an object")
    return value


def _string_map(value: Any, name: str) -> dict[str, str]:
    value = _object(value, name)
    if len(value) > MAX_MAP_ITEMS:
        raise bad(f"{name} has more than {MAX_MAP_ITEMS} entries")
    for key, item in value.items():
        if not isinstance(item, str):
            raise bad(f"{name}.{key} must be a string, not {json.dumps(item)[:60]}")
        if not key or len(key) > 255 or "\x00" in key or "\x00" in item or len(item) > MAX_TEXT:
            raise bad(f"{name} entry {key[:60]!r} is not a valid key and value")
    return dict(value)


def _strings(value: Any, name: str, *, limit: int = 1000) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{name} must be a list of strings")
    if len(value) > limit or any("\x00" in v or len(v) > 64 * 1024 for v in value):
        raise bad(f"{name} is too long or holds NUL characters")
    return list(value)


def _int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name} must be a whole number")
    if not -(2**62) < value < 2**62:
        raise bad(f"{name} is out of range")
    return value


def parse_job(body: Any) -> Parsed:
    """`{"Job": {...}}` (a PUT/POST body) → Parsed; BacalhauError(400) says what is wrong."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object holding Job")
    job = body.get("Job")
    if not isinstance(job, dict):
        raise bad('missing Job: the request body must be {"Job": {...}}')
    warnings: list[str] = []
    job_type = job.get("Type")
    if job_type in (None, ""):
        raise bad("missing job type")
    if job_type not in TYPES:
        raise bad(f"invalid job type: {json.dumps(job_type)[:80]}")
    for key, what in SERVER_FIELDS.items():
        if job.get(key) not in (None, "", 0, {}):
            warnings.append(f"{what} is ignored when submitting a {job_type} job")
    name = job.get("Name")
    if name in (None, ""):
        name = None
    elif not isinstance(name, str) or not NAME_RE.match(name):
        raise bad(
            "job name must be letters, digits, '.', '_' and '-', starting with a letter or "
            "digit, at most 200 characters"
        )
    namespace = job.get("Namespace")
    if namespace in (None, ""):
        namespace = None
    elif not isinstance(namespace, str) or len(namespace) > 255 or "\x00" in namespace:
        raise bad("Namespace must be a project's name or uuid")
    count = _int(job.get("Count"), "Count", 0)
    if count < 0:
        raise bad("job count must be >= 0")
    if job_type in ("batch", "service") and count == 0:
        raise bad(f"job count must be > 0 for {job_type} jobs: Count is the number of replicas")
    if job_type in ("ops", "daemon"):
        count = count or 1
    if count > MAX_COUNT:
        raise bad(f"job count must be at most {MAX_COUNT}")
    priority = _int(job.get("Priority"), "Priority", 0)
    if not 0 <= priority <= 1000:
        raise bad("Priority must be between 0 and 1000")
    meta = _string_map(job.get("Meta"), "Meta")
    for key in [k for k in meta if k.startswith(RESERVED_META)]:
        warnings.append(f"meta key {key} is reserved for the system and was dropped")
        del meta[key]
    labels = _string_map(job.get("Labels"), "Labels")
    for key, value in labels.items():
        try:
            placement.make_constraint(key, "=", [value], where="Labels")
        except InvalidRequest as exc:
            raise bad(f"invalid label {key}: {'; '.join(exc.messages)}") from None
    constraints = _constraints(job.get("Constraints"))
    tasks = job.get("Tasks")
    if not tasks:
        raise bad("missing job tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise bad("Tasks must be a list of task objects")
    if len(tasks) > 1:
        warnings.append("only one task is supported per job")
    task = tasks[0]
    parsed_task = _task(task, warnings, lasting=job_type in ("daemon", "service"))
    runtime = dict(parsed_task.pop("runtime_constraints"))
    if constraints:
        runtime["constraints"] = [c.as_json() for c in constraints]
    try:
        placement.Requirements.of(runtime)
    except InvalidRequest as exc:
        raise bad("; ".join(exc.messages)) from None
    document: dict[str, Any] = {
        "Name": name or "",
        "Type": job_type,
        "Priority": priority,
        "Count": count,
        "Constraints": [
            {"Key": c.key, "Operator": _op_name(c.operator), "Values": list(c.values)}
            for c in constraints
        ],
        "Meta": meta,
        "Labels": labels,
        "Tasks": [parsed_task.pop("document")],
    }
    return Parsed(
        name=name,
        namespace=namespace,
        type=job_type,
        count=count,
        priority=priority,
        meta=meta,
        labels=labels,
        document=document,
        runtime_constraints=runtime,
        warnings=warnings,
        **parsed_task,
    )


_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "in": "in", "notin": "notin"}
_OPERATORS |= {"exists": "exists", "!": "!exists", "gt": "gt", "lt": "lt"}


def _op_name(core: str) -> str:
    return "!" if core == "!exists" else core


def _constraints(value: Any) -> list[placement.Constraint]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > placement.MAX_CONSTRAINTS:
        raise bad(f"Constraints must be a list of at most {placement.MAX_CONSTRAINTS} selectors")
    found = []
    for index, item in enumerate(value):
        where = f"constraint {index} validation failed"
        if not isinstance(item, dict):
            raise bad(f"{where}: a constraint is an object with Key, Operator and Values")
        key, operator = item.get("Key"), item.get("Operator")
        if not key:
            raise bad(f"{where}: selector key cannot be blank")
        if operator not in _OPERATORS:
            raise bad(f"{where}: operator {json.dumps(operator)[:40]} is not supported")
        values = item.get("Values") or []
        if not isinstance(values, list):
            raise bad(f"{where}: Values must be a list of strings")
        try:
            found.append(placement.make_constraint(key, _OPERATORS[operator], values, where=where))
        except InvalidRequest as exc:
            raise bad("; ".join(exc.messages)) from None
    return found


def _task(task: dict[str, Any], warnings: list[str], *, lasting: bool) -> dict[str, Any]:
    """One task; `lasting` (daemon, service) tasks run until stopped, so only an explicit
    ExecutionTimeout limits them."""
    name = task.get("Name")
    if not name:
        raise bad("missing task name")
    if not isinstance(name, str) or len(name) > 255:
        raise bad("task name must be a string")
    engine = _object(task.get("Engine"), "Engine")
    engine_type = engine.get("Type")
    if not engine_type:
        raise bad("engine validation failed: missing spec type")
    if engine_type != "docker":
        raise bad(
            f"engine validation failed: engine type {json.dumps(engine_type)[:40]} is not "
            "supported here: docker"
        )
    params = _object(engine.get("Params"), "Engine.Params")
    image = params.get("Image")
    if not isinstance(image, str) or not image.strip() or len(image) > 255:
        raise bad("engine validation failed: invalid docker engine params: image is required")
    if "\x00" in image or image.startswith("-") or any(c.isspace() for c in image):
        raise bad(f"engine validation failed: {image!r} is not an image name")
    tail = image.rsplit("/", 1)[-1]
    if "@" not in image and ":" not in tail and not re.match(r"^[0-9a-f]{32}\+\d+\Z", image):
        warnings.append(
            f"image {image} has no tag or digest: {image}:latest is used; pin a tag or digest "
            "so reruns use the same image"
        )
        image = f"{image}:latest"
    entrypoint = _strings(params.get("Entrypoint"), "Engine.Params.Entrypoint")
    parameters = _strings(params.get("Parameters"), "Engine.Params.Parameters")
    command = entrypoint + parameters
    if not command:
        raise bad("engine validation failed: Entrypoint or Parameters must name the program to run")
    environment: dict[str, str] = {}
    for item in _strings(params.get("EnvironmentVariables"), "EnvironmentVariables"):
        key, sep, value = item.partition("=")
        if not sep or not ENV_RE.match(key):
            raise bad(f"EnvironmentVariables entry {item[:60]!r} must be NAME=value")
        environment[key] = value
    env = _string_map(task.get("Env"), "Env")
    for key in env:
        if not ENV_RE.match(key):
            raise bad(f"Env name {key[:60]!r} is not a variable name")
    environment |= env
    workdir = params.get("WorkingDirectory")
    if workdir not in (None, ""):
        if not isinstance(workdir, str) or not TARGET_RE.match(workdir) or ".." in workdir:
            raise bad("WorkingDirectory must be an absolute path")
        command = ["sh", "-c", 'cd "$0" && exec "$@"', workdir, *command]
    else:
        workdir = None
    inputs = _inputs(task.get("InputSources"))
    publisher = _object(task.get("Publisher"), "Publisher")
    result_paths = _result_paths(task.get("ResultPaths"))
    if result_paths and not publisher.get("Type"):
        raise bad("publisher must be set if result paths are set")
    if publisher.get("Type") not in (None, "", "local"):
        raise bad(
            f"publisher type {json.dumps(publisher.get('Type'))[:40]} is not supported here: "
            "local (results become the job's output collection)"
        )
    runtime, resources_doc = _resources(task.get("Resources"))
    timeouts = _object(task.get("Timeouts"), "Timeouts")
    timeouts_doc: dict[str, int] = {}
    for key in ("ExecutionTimeout", "QueueTimeout", "TotalTimeout"):
        seconds = _int(timeouts.get(key), f"Timeouts.{key}", 0)
        if seconds < 0:
            raise bad(f"Timeouts.{key} must be at least 0 seconds")
        timeouts_doc[key] = seconds
    if not lasting:
        timeouts_doc["TotalTimeout"] = timeouts_doc["TotalTimeout"] or DEFAULT_TOTAL_TIMEOUT
    limit = timeouts_doc["ExecutionTimeout"] or timeouts_doc["TotalTimeout"]
    if limit:
        runtime["max_run_time"] = limit
    mounts = [
        {"source": "src", "subpath": _subpath(i.target), "path": i.target} for i in inputs
    ] + [{"source": "output", "subpath": name, "path": path} for name, path in result_paths]
    if mounts:
        runtime["mounts"] = mounts
    network = _object(task.get("Network"), "Network")
    document = {
        "Name": name,
        "Engine": {
            "Type": "docker",
            "Params": {
                "Image": image,
                "Entrypoint": entrypoint,
                "Parameters": parameters,
                "EnvironmentVariables": [
                    f"{k}={v}" for k, v in environment.items() if k not in env
                ],
                "WorkingDirectory": workdir or "",
            },
        },
        "Publisher": {"Type": publisher.get("Type") or "", "Params": {}},
        "Env": env,
        "Meta": _string_map(task.get("Meta"), "Task.Meta"),
        "InputSources": [
            {
                "Source": {
                    "Type": i.kind,
                    "Params": {"URL": i.source} if i.kind == "urlDownload" else {"PDH": i.source},
                },
                "Alias": i.alias,
                "Target": i.target,
            }
            for i in inputs
        ],
        "ResultPaths": [{"Name": n, "Path": p} for n, p in result_paths],
        "Resources": resources_doc,
        "Network": {"Type": network.get("Type") or "None"},
        "Timeouts": timeouts_doc,
    }
    return {
        "command": command,
        "image": image,
        "environment": environment,
        "runtime_constraints": runtime,
        "inputs": inputs,
        "result_paths": result_paths,
        "document": document,
    }


def _subpath(target: str) -> str:
    return "inputs/" + target.strip("/")


def _inputs(value: Any) -> list[Input]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 32:
        raise bad("InputSources must be a list of at most 32 input sources")
    found: list[Input] = []
    aliases: set[str] = set()
    targets: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad(f"input source {index} must be an object with Source and Target")
        source = _object(item.get("Source"), f"InputSources[{index}].Source")
        params = _object(source.get("Params"), f"InputSources[{index}].Source.Params")
        kind = source.get("Type")
        alias = item.get("Alias") or ""
        target = item.get("Target")
        if not isinstance(alias, str):
            raise bad(f"input source {index}: Alias must be a string")
        if alias and alias in aliases:
            raise bad(f"input source with alias {alias} already exist")
        aliases.add(alias)
        if not isinstance(target, str) or not TARGET_RE.match(target) or ".." in target.split("/"):
            raise bad(f"input source {index}: Target must be an absolute path such as /inputs")
        reserved = ("/crunch", "/keep", "/tmp/crunch-job-work", "/tmp/crunch-job-task-work")
        if any(target == r or target.startswith(r + "/") for r in reserved) or target == "/":
            raise bad(f"input source {index}: Target {target} is reserved")
        for other in targets:
            if target == other or target.startswith(other + "/") or other.startswith(target + "/"):
                raise bad(f"input source {index}: Target {target} overlaps {other}")
        targets.append(target.rstrip("/"))
        if kind == "urlDownload":
            url = params.get("URL") or params.get("url")
            if (
                not isinstance(url, str)
                or not re.match(r"^https?://[^\s]+\Z", url)
                or len(url) > 2048
            ):
                raise bad(f"input source {index}: urlDownload needs Params.URL, an http(s) URL")
            found.append(Input("urlDownload", url, target.rstrip("/"), alias))
        elif kind in ("crunch", "keep"):
            pdh = params.get("PDH") or params.get("Collection")
            if not isinstance(pdh, str) or not PDH_RE.match(pdh.removeprefix("keep:")):
                raise bad(
                    f"input source {index}: Params.PDH must be a collection's portable data hash"
                )
            found.append(Input("crunch", pdh.removeprefix("keep:"), target.rstrip("/"), alias))
        else:
            raise bad(
                f"input source {index}: source type {json.dumps(kind)[:40]} is not supported "
                "here: urlDownload, or crunch (a collection by PDH)"
            )
    return found


def _result_paths(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 32:
        raise bad("ResultPaths must be a list of at most 32 result paths")
    found: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad(f"result path {index} must be an object with Name and Path")
        name, path = item.get("Name"), item.get("Path")
        if (
            not isinstance(name, str)
            or not re.match(r"^[A-Za-z0-9._-]{1,100}\Z", name)
            or name in (".", "..")
        ):
            raise bad(f"result path {index}: Name must be a plain name")
        if any(name == n for n, _ in found):
            raise bad(f"result path {index}: Name {name} is used twice")
        if not isinstance(path, str) or not TARGET_RE.match(path) or ".." in path.split("/"):
            raise bad(f"result path {index}: Path must be an absolute path such as /outputs")
        reserved = ("/crunch", "/keep", "/tmp/crunch-job-work", "/tmp/crunch-job-task-work")
        if any(path == r or path.startswith(r + "/") for r in reserved) or path == "/":
            raise bad(f"result path {index}: Path {path} is reserved")
        found.append((name, path.rstrip("/")))
    return found


def _resources(value: Any) -> tuple[dict[str, Any], dict[str, str]]:
    resources = _object(value, "Resources")
    runtime: dict[str, Any] = {}
    doc: dict[str, str] = {}
    for key in ("CPU", "Memory", "Disk", "GPU"):
        raw = resources.get(key)
        if raw in (None, ""):
            continue
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise bad(f"Resources.{key} must be a string such as 500m or 1Gb")
        text = str(raw)
        try:
            if key == "CPU":
                runtime["vcpus"] = units.parse_cpus(text)
            elif key == "Memory":
                runtime["ram"] = units.parse_bytes(text) or None
            elif key == "Disk":
                units.parse_bytes(text)  # checked; the worker's scratch space is not metered
            else:
                gpus = float(text)
                if gpus != int(gpus) or gpus < 0:
                    raise ValueError(f"{text!r} is not a whole number of GPUs")
                runtime["gpus"] = int(gpus)
        except ValueError as exc:
            raise bad(f"Resources.{key}: {exc}") from None
        doc[key] = text
    return {k: v for k, v in runtime.items() if v}, doc


# --- label selectors (list ?labels=) ------------------------------------------------------------


def parse_label_selector(text: str) -> list[placement.Constraint]:
    """`env=prod,tier in (a,b),!deprecated`: Kubernetes' selector syntax (the commas inside
    a set belong to it). BacalhauError(400) when it does not read."""
    parts: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    found = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        try:
            found.append(placement.parse_selector(part.replace("==", "="), where="labels"))
        except InvalidRequest as exc:
            raise bad(
                f"unable to parse labels selector {text!r}: {'; '.join(exc.messages)}"
            ) from None
    return found


# --- answers ---------------------------------------------------------------------------------


def run_output(text: str, *, exit_code: int | None, reason: str | None) -> dict[str, Any]:
    """An execution's `RunOutput`: what its program printed (stdout and stderr arrive merged
    in the log, in order, so both are in `Stdout`), without Crunch's own notes."""
    printed = "".join(line for line in text.splitlines(keepends=True) if not NOTE_RE.match(line))
    limit = 1024 * 1024
    return {
        "Stdout": printed[-limit:],
        "StdoutTruncated": len(printed) > limit,
        "stderr": "",
        "StderrTruncated": False,
        "ExitCode": exit_code if exit_code is not None else -1,  # stopped before it exited
        "ErrorMsg": reason or "",
    }
