"""The door-neutral job spec and its canonical identity.

Every front door (the Arvados API, the `crunch` command, and the doors that speak other
ecosystems' wire protocols) describes work as a `JobSpec`: a source tree (a git commit, a
collection, or none), what to run (`crunch_scripts/<script>` or an argv), an image, an
environment, parameters, resources, constraints, labels and meta. `JobSpec.attrs()` turns it
into the job record's attributes for the one write path (jobs/services/jobs.py), which
resolves refs to commits and image names to image collections.

What decides a job's result is its *identity*: the resolved source, what runs, the exact
image (and SDK commit), the environment and the parameters. `canonical_identity` writes it
so that map order, number spelling (`1`, `1.0`) and environment order never change it, and
`reuse_key` is its sha256: equal keys mean the same work, whichever door submitted it.
Resources, constraints, priority, labels and meta are not part of it: they say where and
how soon the work runs, or describe it, not what it computes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")
COMMAND_MAX_ARGS = 4096
COMMAND_MAX_BYTES = 256 * 1024


def canonical_value(value: Any) -> Any:
    """JSON value in canonical form: integral numbers as integers (1.0 and 1 are one value),
    other floats as the shortest text that reads back the same; maps are sorted when dumped.
    Booleans stay booleans (true is not 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(
        canonical_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def canonical_identity(
    *,
    repository: str | None,
    commit: str | None,
    script: str | None,
    command: list[str] | tuple[str, ...] | None,
    working_dir: str | None,
    image: str | None,
    sdk_version: str | None,
    environment: Mapping[str, str] | None,
    parameters: Any,
    python_requirements: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Everything that decides a job's result, resolved (a commit, an image PDH)."""
    if working_dir:
        source: dict[str, Any] | None = {"collection": working_dir}
    elif commit:
        source = {"git": {"repository": repository, "commit": commit}}
    else:
        source = None
    run: dict[str, Any] = {"argv": list(command)} if command is not None else {"script": script}
    identity: dict[str, Any] = {
        "source": source,
        "run": run,
        "image": image,
        "environment": dict(environment or {}),
        "parameters": canonical_value(parameters if parameters is not None else {}),
    }
    if sdk_version:
        identity["sdk_version"] = sdk_version
    if python_requirements:
        identity["python_requirements"] = list(python_requirements)
    return identity


def reuse_key(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def identity_of(job: Any) -> dict[str, Any]:
    """The canonical identity of a job record (resolved by the write path)."""
    return canonical_identity(
        repository=job.repository,
        commit=job.script_version,
        script=job.script,
        command=job.command,
        working_dir=job.working_dir,
        image=job.docker_image_locator,
        sdk_version=job.arvados_sdk_version,
        environment=job.environment,
        parameters=job.script_parameters,
        python_requirements=job.python_requirements,
    )


def what_runs(job: Any) -> str:
    """One line saying what a job runs, for logs and collection names."""
    if job.command is not None:
        line = shlex.join(job.command)
        source = job.working_dir or (
            f"{job.repository} {job.script_version}" if job.repository else None
        )
        return f"{line} (in {source})" if source else line
    return f"{job.repository} {job.script_version} crunch_scripts/{job.script}"


def identity_differences(mine: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """What differs between two identities, in words (for `explain`)."""
    words = []
    for part in ("source", "run", "image", "sdk_version", "environment", "parameters"):
        a, b = mine.get(part), other.get(part)
        if canonical_json(a) == canonical_json(b):
            continue
        if part == "environment" and isinstance(a, dict) and isinstance(b, dict):
            names = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            words.append(f"its environment differs in {', '.join(names)}")
        elif part == "run":
            words.append(f"it runs {canonical_json(b)}, not {canonical_json(a)}")
        else:
            words.append(
                f"its {part.replace('_', ' ')} is {canonical_json(b)}, not {canonical_json(a)}"
            )
    return words


@dataclass(frozen=True)
class JobSpec:
    """What a front door asks to run, in the core's own terms.

    `version` is a git ref or commit (resolved on submit); `image` is an image search term
    (`python:3.11`, a repository name, an image hash) or an image collection's PDH;
    `working_dir` is the PDH of an uploaded directory. `runtime_constraints` carries
    resources (`vcpus`, `ram` in bytes, `gpus`, and the Arvados `min_*` forms), placement
    `constraints`, `max_run_time` and the like, as the job record stores them."""

    command: tuple[str, ...] | None = None
    script: str | None = None
    repository: str | None = None
    version: str | None = None
    working_dir: str | None = None
    image: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    runtime_constraints: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    nondeterministic: bool = False
    priority: int | None = None
    owner_uuid: str | None = None
    description: str | None = None
    # Python packages (pip requirement lines) installed for the run, in a virtualenv the
    # worker builds once per distinct list (crunch/pyenv.py); part of the identity.
    python_requirements: tuple[str, ...] | None = None
    # A client-chosen id, unique among all jobs (refused when taken).
    submit_id: str | None = None
    # An instance of a job template (jobs/templates.py), and the client's idempotency key.
    template_uuid: str | None = None
    template_version: int | None = None
    template_slot: str | None = None
    idempotency_key: str | None = None
    # Variables naming this instance (its ids), set for the run but not part of the identity.
    run_environment: Mapping[str, str] = field(default_factory=dict)
    # The front door that submitted it (recorded on the job, not part of its identity).
    door: str = "arvados"

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> JobSpec:
        """A spec from its fields as stored in JSON (a template's `spec`); other keys (a
        door's own notes) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in fields.items() if k in known and v is not None}
        for name in ("command", "python_requirements"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    def attrs(self) -> dict[str, Any]:
        """The job record's attributes, for the write path."""
        constraints = dict(self.runtime_constraints)
        if self.image:
            constraints["docker_image"] = self.image
        attrs: dict[str, Any] = {
            "script_parameters": dict(self.parameters),
            "runtime_constraints": constraints,
        }
        optional = {
            "command": list(self.command) if self.command is not None else None,
            "script": self.script,
            "repository": self.repository,
            "script_version": self.version,
            "working_dir": self.working_dir,
            "environment": dict(self.environment) if self.environment else None,
            "labels": dict(self.labels) if self.labels else None,
            "meta": dict(self.meta) if self.meta else None,
            "nondeterministic": True if self.nondeterministic else None,
            "priority": self.priority,
            "owner_uuid": self.owner_uuid,
            "python_requirements": (
                list(self.python_requirements) if self.python_requirements else None
            ),
            "submit_id": self.submit_id,
            "description": self.description,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        return attrs

    def server_attrs(self) -> dict[str, Any]:
        """What the job records about how it was submitted, which no client sets directly:
        the door, the template it instantiates, the idempotency key."""
        return {
            "door": self.door,
            "template_uuid": self.template_uuid,
            "template_version": self.template_version,
            "template_slot": self.template_slot,
            "idempotency_key": self.idempotency_key,
            "run_environment": dict(self.run_environment) or None,
        }

    def canonical(self) -> dict[str, Any]:
        """The identity this spec has when its version is a commit and its image a
        collection PDH (what the write path resolves them to)."""
        return canonical_identity(
            repository=self.repository,
            commit=self.version,
            script=self.script,
            command=self.command,
            working_dir=self.working_dir,
            image=self.image,
            sdk_version=None,
            environment=self.environment,
            parameters=self.parameters,
            python_requirements=self.python_requirements,
        )

    def reuse_key(self) -> str:
        return reuse_key(self.canonical())


def string_map_problems(name: str, value: Any, *, env_names: bool = False) -> list[str]:
    """Why `value` is not a map of strings to strings (environment, labels, meta)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{name} must be an object of strings"]
    problems = []
    for key, item in value.items():
        if not isinstance(item, str):
            problems.append(f"{name}.{key} must be a string, not {json.dumps(item)}")
        elif "\x00" in item or "\x00" in key:
            problems.append(f"{name}.{key} must not contain NUL characters")
        if env_names and not ENV_NAME_RE.match(key):
            problems.append(
                f"{name} name {json.dumps(key)} is not a variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
    return problems


def command_problems(command: Any) -> list[str]:
    """Why `command` is not a usable argv."""
    if command is None:
        return []
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        return ["command must be an array of strings"]
    if not command or not command[0]:
        return ["command must name a program (its first element cannot be empty)"]
    if len(command) > COMMAND_MAX_ARGS:
        return [f"command has more than {COMMAND_MAX_ARGS} arguments"]
    if any("\x00" in a for a in command):
        return ["command arguments must not contain NUL characters"]
    if sum(len(a.encode()) for a in command) > COMMAND_MAX_BYTES:
        return [f"command is longer than {COMMAND_MAX_BYTES} bytes"]
    return []


REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\], <>=!~;:'\"@/+*()]*\Z")
REQUIREMENTS_MAX = 200


def python_requirements_problems(value: Any) -> list[str]:
    """Why `value` is not a list of pip requirement lines (a name with an optional version
    specifier, extras, a marker, or `name @ URL`; never a pip option)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        return ["python_requirements must be an array of strings"]
    if len(value) > REQUIREMENTS_MAX:
        return [f"python_requirements has more than {REQUIREMENTS_MAX} entries"]
    problems = []
    for line in value:
        if not REQUIREMENT_RE.match(line) or len(line) > 500:
            problems.append(
                f"python_requirements entry {json.dumps(line)} is not a requirement "
                "(a package name, optionally with a version, extras or a marker)"
            )
    return problems


def normalise_requirements(value: list[str] | tuple[str, ...]) -> list[str]:
    """One spelling per requirement list: whitespace dropped, duplicates removed, sorted
    (pip installs a set, so the order never mattered)."""
    return sorted({" ".join(line.split()) for line in value})
