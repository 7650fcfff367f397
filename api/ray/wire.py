"""The Ray-style door's wire format: what a submit may hold (the seed's ranges and Ray's
field types), and a job as Ray's `JobDetails`.

Errors are `RayError`s: plain text with a 4xx status, which Ray's client shows verbatim
(`RuntimeError: Request failed with status code 400: <text>.`). 401 and 403 are left to
authentication, since the client turns them into `AuthenticationError`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

from jobs.models import Job, JobState

CPUS_MIN, CPUS_MAX = 0.3, 16.0
MEMORY_MIN, MEMORY_MAX = 134_217_728, 1_125_899_906_842_624
SUBMISSION_ID_RE = re.compile(r"^[a-z0-9-]{1,64}\Z")
PACKAGE_RE = re.compile(r"^gcs://(_ray_pkg_[0-9a-f]{16,40}\.zip)\Z")
PDH_URI_RE = re.compile(r"^keep:([0-9a-f]{32}\+[0-9]+)\Z")
SUBMIT_ID_PREFIX = "ray:"  # the door's ids among all jobs' submit_ids
REUSE_KEY = "crunch.reuse"
FIELDS = frozenset(
    {
        "entrypoint",
        "submission_id",
        "job_id",
        "runtime_env",
        "metadata",
        "entrypoint_num_cpus",
        "entrypoint_num_gpus",
        "entrypoint_memory",
        "entrypoint_resources",
        "entrypoint_label_selector",
    }
)
RUNTIME_ENV_FIELDS = frozenset({"working_dir", "env_vars", "pip", "excludes", "_ray_commit"})

STATUS: dict[str, str] = {
    JobState.QUEUED: "PENDING",
    JobState.RUNNING: "RUNNING",
    JobState.COMPLETE: "SUCCEEDED",
    JobState.FAILED: "FAILED",
    JobState.CANCELLED: "STOPPED",
}
TERMINAL: frozenset[str] = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED})
LOG_TAIL_CHARS = 20_000


class RayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Submit:
    entrypoint: str
    submission_id: str | None
    metadata: dict[str, str]
    env_vars: dict[str, str]
    pip: list[str]
    working_dir: str | None  # a package name (`_ray_pkg_...zip`) or `keep:<pdh>`
    cpus: float | None
    gpus: int | None
    memory: int | None
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def reuse(self) -> bool:
        return self.metadata.get(REUSE_KEY, "").lower() == "true"


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RayError(400, f"{name} must be a number, not {value!r}")
    return float(value)


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RayError(400, f"{name} must be an object of strings")
    return dict(value)


def parse_submit(body: Any) -> Submit:
    if not isinstance(body, dict):
        raise RayError(400, "The request body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise RayError(400, f"Unknown field {unknown[0]!r}; allowed: {', '.join(sorted(FIELDS))}")
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise RayError(400, "entrypoint is required: the command line to run")
    if "\x00" in entrypoint or len(entrypoint) > 65536:
        raise RayError(400, "entrypoint must be at most 65536 characters, without NUL")
    submission_id = body.get("submission_id") or body.get("job_id")
    if submission_id is not None and (
        not isinstance(submission_id, str) or not SUBMISSION_ID_RE.match(submission_id)
    ):
        raise RayError(
            400,
            f"submission_id {submission_id!r} must match ^[a-z0-9-]{{1,64}}$ "
            "(lowercase letters, digits and '-', 1 to 64 of them)",
        )
    cpus = _number(body, "entrypoint_num_cpus")
    if cpus is not None and not CPUS_MIN <= cpus <= CPUS_MAX:
        raise RayError(
            400, f"entrypoint_num_cpus must be between {CPUS_MIN} and {CPUS_MAX:g}, not {cpus:g}"
        )
    gpus_value = _number(body, "entrypoint_num_gpus")
    if gpus_value is not None and (gpus_value < 0 or gpus_value != int(gpus_value)):
        raise RayError(
            400, f"entrypoint_num_gpus must be a whole number at least 0, not {gpus_value:g}"
        )
    memory = body.get("entrypoint_memory")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int):
            raise RayError(
                400, f"entrypoint_memory must be a whole number of bytes, not {memory!r}"
            )
        if not MEMORY_MIN <= memory <= MEMORY_MAX:
            raise RayError(
                400,
                f"entrypoint_memory must be between {MEMORY_MIN} and {MEMORY_MAX} bytes, "
                f"not {memory}",
            )
    resources_value = body.get("entrypoint_resources")
    resources: dict[str, float] = {}
    if resources_value is not None:
        if not isinstance(resources_value, dict):
            raise RayError(400, "entrypoint_resources must be an object of numbers")
        for name, amount in resources_value.items():
            if (
                not isinstance(name, str)
                or isinstance(amount, bool)
                or not isinstance(amount, int | float)
                or not math.isfinite(amount)
                or amount < 0
            ):
                raise RayError(
                    400, f"entrypoint_resources.{name} must be a number at least 0, not {amount!r}"
                )
            resources[name] = float(amount)
    _string_map(body.get("entrypoint_label_selector"), "entrypoint_label_selector")
    metadata = _string_map(body.get("metadata"), "metadata")
    runtime_env = body.get("runtime_env") or {}
    if not isinstance(runtime_env, dict):
        raise RayError(400, "runtime_env must be an object")
    unknown = sorted(set(runtime_env) - RUNTIME_ENV_FIELDS)
    if unknown:
        raise RayError(
            400, f"runtime_env.{unknown[0]} is not supported (working_dir, env_vars, pip)"
        )
    env_vars = _string_map(runtime_env.get("env_vars"), "runtime_env.env_vars")
    pip = runtime_env.get("pip")
    if isinstance(pip, dict):
        pip = pip.get("packages")
    if pip is None:
        pip = []
    if not isinstance(pip, list) or not all(isinstance(p, str) for p in pip):
        raise RayError(400, "runtime_env.pip must be a list of requirements")
    working_dir = runtime_env.get("working_dir")
    package: str | None = None
    if working_dir is not None:
        if not isinstance(working_dir, str):
            raise RayError(400, "runtime_env.working_dir must be a string")
        match = PACKAGE_RE.match(working_dir) or PDH_URI_RE.match(working_dir)
        if match is None:
            raise RayError(
                400,
                f"runtime_env.working_dir {working_dir!r} is not supported: give a local "
                "directory (the client uploads it) or keep:<portable data hash>",
            )
        package = working_dir if working_dir.startswith("keep:") else match.group(1)
    return Submit(
        entrypoint=entrypoint,
        submission_id=submission_id,
        metadata=metadata,
        env_vars=env_vars,
        pip=pip,
        working_dir=package,
        cpus=cpus,
        gpus=int(gpus_value) if gpus_value else None,
        memory=memory,
        resources=resources,
    )


# --- a job, as Ray shows it -------------------------------------------------------------------


def ray_id(job: Job) -> str:
    """The job's id at this door: its submission id, or its uuid (a job from another door)."""
    if job.submit_id and job.submit_id.startswith(SUBMIT_ID_PREFIX):
        return job.submit_id[len(SUBMIT_ID_PREFIX) :]
    return job.uuid


def entrypoint_of(job: Job) -> str:
    command = job.command or []
    if len(command) == 3 and command[:2] == ["sh", "-c"]:
        return str(command[2])
    return " ".join(command) if command else f"crunch_scripts/{job.script}"


def _ms(moment: dt.datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def message_of(job: Job, exit_code: int | None, reason: str | None, log_tail: str) -> str:
    status = STATUS.get(job.state or "", "PENDING")
    if status == "PENDING":
        text = "Job has not started yet."
        rc = job.runtime_constraints or {}
        if any(rc.get(k) for k in ("vcpus", "ram", "gpus", "resources")):
            text += (
                " It may be waiting for resources (CPUs, GPUs, memory, custom resources) "
                "to become available."
            )
        if job.working_dir or job.environment or job.python_requirements:
            text += " It may be waiting for the runtime environment to be set up."
        return text
    if status == "RUNNING":
        return "Job is currently running."
    if status == "STOPPED":
        return "Job was intentionally stopped."
    if status == "SUCCEEDED":
        return "Job finished successfully."
    if exit_code is not None:
        if log_tail:
            return (
                f"Job entrypoint command failed with exit code {exit_code}, last available "
                f"logs (truncated to 20,000 chars):\n{log_tail[-LOG_TAIL_CHARS:]}"
            )
        return f"Job entrypoint command failed with exit code {exit_code}. No logs available."
    return f"Job failed: {reason}" if reason else "Job failed."


def job_details(
    job: Job, *, exit_code: int | None, reason: str | None, log_tail: str = ""
) -> dict[str, Any]:
    status = STATUS.get(job.state or "", "PENDING")
    runtime_env: dict[str, Any] = {}
    if job.working_dir:
        runtime_env["working_dir"] = f"keep:{job.working_dir}"
    if job.environment:
        runtime_env["env_vars"] = dict(job.environment)
    if job.python_requirements:
        runtime_env["pip"] = list(job.python_requirements)
    failed = status == "FAILED"
    return {
        "type": "SUBMISSION",
        "job_id": ray_id(job),
        "submission_id": ray_id(job),
        "driver_info": None,
        "status": status,
        "entrypoint": entrypoint_of(job),
        "message": message_of(job, exit_code, reason, log_tail),
        "error_type": (
            "JOB_ENTRYPOINT_COMMAND_ERROR" if failed and exit_code is not None else None
        ),
        "start_time": _ms(job.started_at),
        "end_time": _ms(job.finished_at) if job.state in TERMINAL else None,
        "metadata": dict(job.meta or {}),
        "runtime_env": runtime_env,
        "driver_agent_http_address": None,
        "driver_node_id": job.worker_node_uuid,
        "driver_exit_code": exit_code,
        # Beyond Ray: where the job is in Crunch, and what it ran.
        "crunch": {
            "uuid": job.uuid,
            "state": job.state,
            "output": job.output,
            "log": job.log,
            "resolved_packages": job.resolved_packages,
        },
    }
