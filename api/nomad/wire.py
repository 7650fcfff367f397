"""The Nomad-style door's wire format: a registered job document (Nomad's JSON job, the subset
Crunch runs), dispatch requests, and the read-back shapes python-nomad and Nomad's CLI use:
jobs, list stubs, evaluations and allocations. Error texts are Nomad's own."""

from __future__ import annotations

import base64
import binascii
import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from jobs.models import ExecutionState, Job, JobState

PAYLOAD_LIMIT = 16 * 1024
ID_RE = re.compile(r"^[A-Za-z0-9_.\-][A-Za-z0-9_.\-/ ]{0,127}\Z")
SUBMIT_ID_PREFIX = "nomad:"
TEMPLATE_DOOR = "nomad"
NAMESPACE_UUID = uuidlib.UUID("8d6f1b0e-3c2a-4f5e-9b7d-1a2b3c4d5e6f")
# Nomad constraint operands, as the core's label selector operators.
OPERANDS = {
    "=": "=",
    "==": "=",
    "is": "=",
    "!=": "!=",
    "not": "!=",
    ">": "gt",
    "<": "lt",
    "is_set": "exists",
    "is_not_set": "!exists",
}
TARGET_RE = re.compile(r"^\$\{(meta|node|attr)\.([A-Za-z0-9_.\-/]+)\}\Z")


class NomadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> NomadError:
    return NomadError(400, message)


def derived_id(*parts: str) -> str:
    """A Nomad-looking UUID, the same every time for the same parts (evaluations and
    allocations are views of the core's job and executions, not rows of their own)."""
    return str(uuidlib.uuid5(NAMESPACE_UUID, "/".join(parts)))


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad(f"{name} must be an object of strings")
    return dict(value)


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{name} must be a list of strings")
    return list(value)


def _one(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise bad(f"{name}: exactly one is supported")
    return value[0]


def constraints_of(*blocks: Any) -> list[dict[str, Any]]:
    """Nomad constraints as the core's label selectors: `${meta.region} = us` is the node
    label `region` (as are `${node.x}` and `${attr.x}`)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        if block is None:
            continue
        if not isinstance(block, list):
            raise bad("Constraints must be a list")
        for item in block:
            if not isinstance(item, dict):
                raise bad("Each constraint must be an object")
            target = item.get("LTarget") or item.get("Attribute") or ""
            operand = str(item.get("Operand") or "=")
            match = TARGET_RE.match(str(target))
            if match is None:
                raise bad(
                    f"Constraint target {target!r} is not supported: use ${{meta.<label>}}, "
                    "${node.<label>} or ${attr.<label>}"
                )
            if operand not in OPERANDS:
                raise bad(
                    f"Constraint operand {operand!r} is not supported "
                    f"(one of {', '.join(OPERANDS)})"
                )
            op = OPERANDS[operand]
            values = [] if op in ("exists", "!exists") else [str(item.get("RTarget") or "")]
            out.append({"key": match.group(2), "operator": op, "values": values})
    return out


@dataclass
class Registration:
    id: str
    namespace: str | None
    document: dict[str, Any]  # the job as registered, with Nomad's defaults applied
    spec: dict[str, Any]  # what its instances run, as JobSpec fields
    payload_file: str | None


def parse_register(body: Any, *, url_id: str | None = None) -> Registration:
    if not isinstance(body, dict) or not isinstance(body.get("Job"), dict):
        raise bad("Job must be specified")
    job = dict(body["Job"])
    job_id = job.get("ID")
    if not job_id:
        raise bad("Job ID hasn't been provided")
    if not isinstance(job_id, str) or not ID_RE.match(job_id) or "/dispatch-" in job_id:
        raise bad(f"Job ID {job_id!r} is not valid")
    if url_id is not None and url_id != job_id:
        raise bad("Job ID does not match name")
    job.setdefault("Name", job_id)
    job.setdefault("Type", "service")
    job.setdefault("Priority", 50)
    job.setdefault("Region", "global")
    job.setdefault("Datacenters", ["dc1"])
    namespace = job.get("Namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise bad("Namespace must be a string")
    meta = _string_map(job.get("Meta"), "Meta")
    parameterized = job.get("ParameterizedJob")
    if not isinstance(parameterized, dict):
        raise bad(
            "Only parameterized jobs can be registered here: add a ParameterizedJob block "
            "and start them with dispatch"
        )
    if job["Type"] not in ("batch", "sysbatch"):
        raise bad('Parameterized job can only be used with "batch" or "sysbatch" scheduler')
    payload = parameterized.get("Payload") or "optional"
    if payload not in ("optional", "required", "forbidden"):
        raise bad(f'Unknown payload requirement: "{payload}"')
    required = _strings(parameterized.get("MetaRequired"), "MetaRequired")
    optional = _strings(parameterized.get("MetaOptional"), "MetaOptional")
    both = sorted(set(required) & set(optional))
    if both:
        raise bad(
            "Required and optional meta keys should be disjoint. Following keys exist in "
            f"both: [{' '.join(both)}]"
        )
    job["ParameterizedJob"] = {
        "Payload": payload,
        "MetaRequired": required,
        "MetaOptional": optional,
    }
    group = _one(job.get("TaskGroups"), "TaskGroups")
    task = _one(group.get("Tasks"), "TaskGroups[0].Tasks")
    group.setdefault("Name", job_id)
    task.setdefault("Name", group["Name"])
    driver = task.get("Driver")
    config = task.get("Config") or {}
    if not isinstance(config, dict):
        raise bad("Config must be an object")
    if driver not in ("raw_exec", "exec", "docker"):
        raise bad(f"Driver {driver!r} is not supported: raw_exec, exec or docker")
    command = config.get("command")
    args = _strings(config.get("args"), "Config.args")
    image = config.get("image")
    if driver == "docker":
        if not isinstance(image, str) or not image:
            raise bad("Config.image is required for the docker driver")
    elif image is not None:
        raise bad(f"Config.image applies to the docker driver, not {driver}")
    if not isinstance(command, str) or not command:
        raise bad("Config.command is required: the program the task runs")
    environment = _string_map(task.get("Env"), "Env")
    resources = task.get("Resources") or {}
    if not isinstance(resources, dict):
        raise bad("Resources must be an object")
    runtime: dict[str, Any] = {}
    cpu, memory = resources.get("CPU"), resources.get("MemoryMB")
    for name, value in (("CPU", cpu), ("MemoryMB", memory)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise bad(f"Resources.{name} must be a whole number at least 0")
    if cpu:
        runtime["vcpus"] = cpu / 1000  # MHz, as Nomad counts them, to cores at 1 GHz
    if memory:
        runtime["ram"] = memory * 1024 * 1024
    constraints = constraints_of(
        job.get("Constraints"), group.get("Constraints"), task.get("Constraints")
    )
    if constraints:
        runtime["constraints"] = constraints
    working_dir = None
    artifacts = task.get("Artifacts") or []
    if artifacts:
        source = _one(artifacts, "Artifacts").get("GetterSource")
        match = re.match(r"^keep:([0-9a-f]{32}\+[0-9]+)\Z", str(source))
        if match is None:
            raise bad(
                f"Artifact {source!r} is not supported: keep:<portable data hash> of an "
                "uploaded directory"
            )
        working_dir = match.group(1)
    payload_file = None
    dispatch = task.get("DispatchPayload")
    if dispatch is not None:
        if not isinstance(dispatch, dict) or not isinstance(dispatch.get("File"), str):
            raise bad("DispatchPayload.File must be a file name")
        payload_file = dispatch["File"]
        parts = payload_file.split("/")
        if not payload_file or payload_file.startswith("/") or ".." in parts or "" in parts:
            raise bad("DispatchPayload.File must stay inside the task's local/ directory")
    spec = {
        "command": [command, *args],
        "image": image,
        "working_dir": working_dir,
        "environment": environment,
        "runtime_constraints": runtime,
        "meta": meta,
        "group": group["Name"],
        "task": task["Name"],
        "payload_file": payload_file,
    }
    return Registration(
        id=job_id, namespace=namespace, document=job, spec=spec, payload_file=payload_file
    )


@dataclass
class Dispatch:
    payload: bytes
    meta: dict[str, str]
    token: str | None
    prefix: str | None


def parse_dispatch(body: Any, *, query_token: str | None) -> Dispatch:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad("The dispatch request must be a JSON object")
    raw = body.get("Payload")
    payload = b""
    if raw not in (None, ""):
        if not isinstance(raw, str):
            raise bad("Payload must be base64 text")
        try:
            payload = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise bad("Payload must be base64 text: it cannot be decoded") from None
    meta = _string_map(body.get("Meta"), "Meta")
    token = query_token or body.get("IdempotencyToken") or body.get("idempotency_token")
    if token is not None and (not isinstance(token, str) or len(token) > 200):
        raise bad("idempotency_token must be text of at most 200 characters")
    prefix = body.get("IdPrefixTemplate") or None
    if prefix is not None and (
        not isinstance(prefix, str) or not re.match(r"^[A-Za-z0-9_.\-]{1,64}\Z", prefix)
    ):
        raise bad("IdPrefixTemplate must be letters, digits, '_', '.' or '-'")
    return Dispatch(payload=payload, meta=meta, token=token or None, prefix=prefix)


def dispatch_refusals(document: dict[str, Any], dispatch: Dispatch) -> str | None:
    """Nomad's checks on a dispatch, in its order (spec §1.4 items 5 to 8), as its texts."""
    rules = document["ParameterizedJob"]
    if rules["Payload"] == "required" and not dispatch.payload:
        return "Payload is not provided but required by parameterized job"
    if rules["Payload"] == "forbidden" and dispatch.payload:
        return "Payload provided but forbidden by parameterized job"
    if len(dispatch.payload) > PAYLOAD_LIMIT:
        return f"Payload exceeds maximum size; {len(dispatch.payload)} > {PAYLOAD_LIMIT}"
    allowed = set(rules["MetaRequired"]) | set(rules["MetaOptional"])
    unpermitted = sorted(k for k in dispatch.meta if k not in allowed)
    if unpermitted:
        return f"Dispatch request included unpermitted metadata keys: [{' '.join(unpermitted)}]"
    missing = sorted(k for k in rules["MetaRequired"] if k not in dispatch.meta)
    if missing:
        return f"Dispatch did not provide required meta keys: [{' '.join(missing)}]"
    return None


def env_name(key: str) -> str:
    """A meta key as part of a variable name: Nomad replaces what is not [A-Za-z0-9_.] with
    `_`; so does Crunch, and `.` as well (a process environment cannot pass it to every
    shell)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def meta_environment(merged: dict[str, str], optional: list[str]) -> dict[str, str]:
    """NOMAD_META_<key> and NOMAD_META_<KEY> for every meta key; optional keys not given are
    defined, empty."""
    values = {k: "" for k in optional} | merged
    env: dict[str, str] = {}
    for key, value in values.items():
        name = env_name(key)
        env[f"NOMAD_META_{name}"] = value
        env[f"NOMAD_META_{name.upper()}"] = value
    return env


# --- read-back --------------------------------------------------------------------------------


def child_id(job: Job) -> str:
    if job.submit_id and job.submit_id.startswith(SUBMIT_ID_PREFIX):
        return job.submit_id[len(SUBMIT_ID_PREFIX) :]
    return job.uuid


def nanos(moment: Any) -> int:
    return int(moment.timestamp() * 1_000_000_000) if moment is not None else 0


def job_status(job: Job) -> str:
    if job.state in (JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED):
        return "dead"
    return "running" if job.state == JobState.RUNNING else "pending"


CLIENT_STATUS: dict[str, str] = {
    ExecutionState.RUNNING: "running",
    ExecutionState.COMPLETE: "complete",
    ExecutionState.FAILED: "failed",
    ExecutionState.CANCELLED: "complete",
    ExecutionState.LOST: "lost",
}
