"""Saving jobs: the order of processing of spec §2.2 on top of the shared write path.

`ResourceService` already does steps 1 (unknown attributes), the uuid rules, the default
owner, the 422-with-every-message rule, the owner permission checks and the bookkeeping.
`JobService` adds, in this order:

- `clean`: locator normalisation, priority, legacy-state derivation, the parameters
  digest, then every validation (referenced uuids, script_version, Docker image, SDK
  version, state value, state transition, collection uuids in parameters, script name);
- `check_permission`: the lock protection rules (§2.11);
- `before_write`: internal tagging (§2.12), state effects and flags (§2.10), cancellation
  bookkeeping.

The state table (edges, flags, timestamps) is `jobs.transitions`: `clean` validates a
client's state change against its edges and `before_write` applies its effects.
`job_cancel` and `job_lock` are the two state-changing operations with their own rules; each
is one compare-and-set through `jobs.transitions.job_transition`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import docker, git, permissions, spec
from jobs.exceptions import (
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    RepositoryUnusable,
)
from jobs.models import ExecutionState, Job, JobState, Link, User
from jobs.models.jobs import ACTIVE_STATES, DESCRIPTION_MAX, STATES
from jobs.placement import Requirements
from jobs.provenance import record_inputs
from jobs.selectors import object_by_uuid, readable_pdhs
from jobs.services.executions import executions_end_running
from jobs.services.objects import Actor, ResourceService
from jobs.services.resources import register_service
from jobs.transitions import STATE_EFFECTS, is_allowed, job_transition
from jobs.uuids import is_uuid, system_user_uuid
from jobs.wakeups import notify

REQUIRED_ATTRIBUTES = ("repository", "script", "script_version", "script_parameters")
# Attributes a command job is described by; a script job has none of them but labels/meta.
COMMAND_ATTRIBUTES = ("command", "working_dir", "environment", "python_requirements")
# §2.13: values of these that look like Keep locators keep only hash and size.
NORMALISED_ATTRIBUTES = (
    "output",
    "log",
    "owner_uuid",
    "is_locked_by_uuid",
    "cancelled_by_user_uuid",
    "cancelled_by_client_uuid",
)
_LOOSE_LOCATOR_RE = re.compile(r"^[0-9a-f]{32,}(\+[@\w]+)*\Z")
_COLLECTION_UUID_RE = re.compile(r"[a-z0-9]{5}-4zz18-[a-z0-9]{15}")
SCRIPTS_DIR = "crunch_scripts"  # a job runs <SCRIPTS_DIR>/<script> from its commit
_SCRIPT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}\Z")
# §2.11: attributes a lock protects from everyone but its holder (and the system user).
LOCK_PROTECTED = frozenset(
    {
        "script",
        "script_parameters",
        "script_version",
        "started_at",
        "finished_at",
        "running",
        "success",
        "output",
        "log",
        "tasks_summary",
        "components",
        "command",
        "working_dir",
        "environment",
    }
)
CANCELLATION_ATTRIBUTES = ("cancelled_at", "cancelled_by_client_uuid", "cancelled_by_user_uuid")


def parameters_digest(parameters: Any) -> str:
    """§2.7: MD5 of the canonical JSON (keys sorted at every depth, compact separators)."""
    canonical = json.dumps(
        parameters if parameters is not None else {},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.md5(canonical.encode()).hexdigest()


def normalise_locator(value: Any) -> Any:
    """`d41d8cd98f00b204e9800998ecf8427e+0+K@xyzzy` → `d41d8cd98f00b204e9800998ecf8427e+0`."""
    if not isinstance(value, str) or not _LOOSE_LOCATOR_RE.match(value):
        return value
    parts = value.split("+")
    digest = parts[0]
    sizes = [p for p in parts[1:] if p.isdigit()]
    return f"{digest}+{sizes[0]}" if sizes else digest


def has_collection_uuid(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_COLLECTION_UUID_RE.search(value))
    if isinstance(value, dict):
        return any(has_collection_uuid(v) for v in value.values())
    if isinstance(value, list):
        return any(has_collection_uuid(v) for v in value)
    return False


def derive_state(job: Job) -> str:
    """§2.10 legacy-to-state derivation."""
    if job.cancelled_at is not None:
        return JobState.CANCELLED
    if job.success is False:
        return JobState.FAILED
    if job.success is True:
        return JobState.COMPLETE
    if job.running:
        return JobState.RUNNING
    return JobState.QUEUED


def resolve_image(*, runtime_constraints: dict[str, Any] | None, user: User) -> str | None:
    """The PDH of the latest image the constraints name, None without a constraint.

    Raises InvalidRequest("Docker image locator not found for ...") when none matches."""
    constraints = runtime_constraints or {}
    search = constraints.get("docker_image")
    if not search:
        return None
    if not isinstance(search, str):
        raise InvalidRequest("runtime_constraints.docker_image must be a string")
    tag = constraints.get("docker_image_tag") or None
    if tag is not None and not isinstance(tag, str):
        raise InvalidRequest("runtime_constraints.docker_image_tag must be a string")
    image = docker.find_latest_docker_image(search=search, tag=tag, readers=[user])
    if image is None:
        raise InvalidRequest(f"Docker image locator not found for {search}")
    return image.portable_data_hash


def resolve_sdk_version(*, runtime_constraints: dict[str, Any] | None, user: User) -> str | None:
    """The commit of `runtime_constraints.arvados_sdk_version` in the hosted `arvados`
    repository; None without the constraint. Raises InvalidRequest when it resolves to no
    commit or comes without a Docker image constraint."""
    constraints = runtime_constraints or {}
    wanted = constraints.get("arvados_sdk_version")
    if not wanted:
        return None
    if not isinstance(wanted, str):
        raise InvalidRequest("runtime_constraints.arvados_sdk_version must be a string")
    commit = git.resolve_commit(user=user, repo="arvados", ref=wanted)
    if commit is None:
        raise InvalidRequest(f"Arvados sdk version {wanted} does not resolve to a commit")
    if not constraints.get("docker_image"):
        raise InvalidRequest(
            "Arvados sdk version cannot be specified without a Docker image constraint"
        )
    return commit


class JobService(ResourceService):
    model = Job

    # --- entry points ------------------------------------------------------------------

    def prepare_new(self, *, actor: Actor, attrs: dict[str, Any]) -> Any:
        require_attributes(attrs)
        return super().prepare_new(actor=actor, attrs=_priority_default(attrs))

    def update(self, *, actor: Actor, obj: Any, attrs: dict[str, Any]) -> Any:
        return super().update(actor=actor, obj=obj, attrs=_priority_default(attrs))

    def delete(self, *, actor: Actor, obj: Any) -> Any:
        permissions.require_write(actor.user, obj)
        with transaction.atomic():
            Link.objects.filter(head_uuid=obj.uuid).delete()
            Link.objects.filter(tail_uuid=obj.uuid).delete()
            obj.delete()
        return obj

    # --- §2.2 steps 2–7 ----------------------------------------------------------------

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        job: Job = obj
        job._client_changed = set(changed)  # type: ignore[attr-defined]
        before: dict[str, Any] = getattr(job, "_before", {})

        for name in NORMALISED_ATTRIBUTES:
            value = normalise_locator(getattr(job, name))
            if value != getattr(job, name):
                setattr(job, name, value)
        if job.priority is None:
            job.priority = 0

        if {"cancelled_at", "success", "running"} & changed or job.state is None:
            derived = derive_state(job)
            if derived != job.state:
                job.state = derived
                changed.add("state")

        if job.script_parameters is None and job.command is not None:
            job.script_parameters = {}
        digest = parameters_digest(job.script_parameters)
        if digest != job.script_parameters_digest:
            job.script_parameters_digest = digest
            changed.add("script_parameters_digest")

        self._check_references(job, actor=actor, creating=creating, changed=changed, errors=errors)
        # A command job (even one whose command is not valid: its errors say so).
        command_job = job.command is not None or "command" in getattr(job, "_given", ())
        if creating or changed & {*COMMAND_ATTRIBUTES, "labels", "meta", "script", "repository"}:
            self._check_command(job, actor=actor, errors=errors)
        script_ok = True
        if not command_job and (creating or {"script"} & changed):
            script_ok = isinstance(job.script, str) and bool(_SCRIPT_RE.match(job.script))
            if not script_ok or ".." in str(job.script):
                script_ok = False
                errors.append(
                    f"Script {json.dumps(job.script)} must name a file in crunch_scripts/ "
                    "(letters, digits, '_', '-', '+', '.'; no '/' or '..')"
                )
        if not command_job:
            for name in ("repository", "script_version"):
                if getattr(job, name) is None:
                    errors.append(f"{name} attribute must be specified")
        version_ok = True
        if (
            job.state != JobState.RUNNING
            and (creating or {"repository", "script_version"} & changed)
            and job.repository is not None
            and job.script_version is not None
        ):
            version_ok = self._resolve_version(job, actor=actor, changed=changed, errors=errors)
        if (
            not command_job
            and job.script
            and script_ok
            and version_ok
            and job.state != JobState.RUNNING
            and (creating or {"script", "script_version", "repository"} & changed)
        ):
            self._check_script(job, actor=actor, errors=errors)
        if creating or "runtime_constraints" in changed:
            self._resolve_runtime(job, actor=actor, changed=changed, errors=errors)
            try:  # resources and label constraints a node must meet (jobs.placement)
                Requirements.of(job.runtime_constraints)
            except InvalidRequest as exc:
                errors.extend(exc.messages)
        if not errors:
            key = spec.reuse_key(spec.identity_of(job))
            if key != job.reuse_key:
                job.reuse_key = key
                changed.add("reuse_key")

        if job.state not in STATES:
            errors.append(f"State {job.state} must be one of: {json.dumps(list(STATES))}")
        elif not creating and job.state != before.get("state"):
            old = before.get("state")
            if not is_allowed(old, job.state):
                errors.append(f"State invalid change from {old} to {job.state}")
        if (creating or "script_parameters" in changed) and has_collection_uuid(
            job.script_parameters
        ):
            errors.append(
                "Script parameters must use portable_data_hash instead of collection uuid"
            )
        if job.description is not None and len(job.description) > DESCRIPTION_MAX:
            errors.append(f"Description is too long (maximum is {DESCRIPTION_MAX} characters)")
        if creating and job.submit_id is not None:
            if Job.objects.filter(submit_id=job.submit_id).exists():
                errors.append(f"submit_id {job.submit_id} already used")

    def _check_command(self, job: Job, *, actor: Actor, errors: list[str]) -> None:
        """A command job: an argv over an uploaded directory (a readable collection), a git
        commit, or nothing; string maps for environment, labels and meta."""
        errors.extend(spec.string_map_problems("environment", job.environment, env_names=True))
        errors.extend(spec.string_map_problems("labels", job.labels))
        errors.extend(spec.string_map_problems("meta", job.meta))
        problems = spec.python_requirements_problems(job.python_requirements)
        errors.extend(problems)
        if job.python_requirements is not None and not problems:
            job.python_requirements = spec.normalise_requirements(job.python_requirements) or None
        if job.command is None:
            for name in ("working_dir", "environment", "python_requirements"):
                if getattr(job, name) not in (None, {}):
                    errors.append(f"{name} applies to command jobs: give a command")
            return
        errors.extend(spec.command_problems(job.command))
        if job.script is not None:
            errors.append("a job runs a script or a command, not both")
        if job.working_dir is not None:
            if job.repository is not None or job.script_version is not None:
                errors.append(
                    "a command job runs over a working_dir or a repository at a "
                    "script_version, not both"
                )
            pdh = normalise_locator(job.working_dir)
            if not isinstance(pdh, str) or not spec.PDH_RE.match(pdh):
                errors.append(
                    f"working_dir must be a portable data hash, not {json.dumps(job.working_dir)}"
                )
            elif pdh not in readable_pdhs(actor.user, {pdh}):
                errors.append(f"working_dir {pdh} is not a collection you can read")
            else:
                job.working_dir = pdh
        elif (job.repository is None) != (job.script_version is None):
            errors.append(
                "a command job over a repository needs both repository and script_version"
            )

    def _check_references(
        self, job: Job, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        for name in ("is_locked_by_uuid", "cancelled_by_user_uuid"):
            value = getattr(job, name)
            if value is None or not (creating or name in changed) or not is_uuid(value):
                continue
            if value == system_user_uuid():
                continue
            found = object_by_uuid(value)
            if found is None or not permissions.can_read(actor.user, found):
                label = name.replace("_", " ").capitalize()
                errors.append(f"{label} '{value}' not found")

    def _resolve_version(
        self, job: Job, *, actor: Actor, changed: set[str], errors: list[str]
    ) -> bool:
        """§2.3: script_version becomes the 40-hex commit; the text given is kept in
        supplied_script_version. An unusable repository raises (422) at once. False when
        the version resolves to no commit (the message is in `errors`)."""
        given = job.script_version or ""
        commit = git.resolve_commit(user=actor.user, repo=job.repository or "", ref=given)
        if commit is None:
            errors.append(f"Script version {given} does not resolve to a commit")
            return False
        if not job.supplied_script_version:
            job.supplied_script_version = given
            changed.add("supplied_script_version")
        if commit != given:
            job.script_version = commit
            changed.add("script_version")
        return True

    def _check_script(self, job: Job, *, actor: Actor, errors: list[str]) -> None:
        """The script a job runs must be in its commit: a job that could only fail is
        refused at submission, naming the path and the commit."""
        path = f"{SCRIPTS_DIR}/{job.script}"
        if not git.path_exists(
            user=actor.user, repo=job.repository or "", commit=job.script_version or "", path=path
        ):
            errors.append(f"{path} is not in commit {job.script_version} of {job.repository}")

    def _resolve_runtime(
        self, job: Job, *, actor: Actor, changed: set[str], errors: list[str]
    ) -> None:
        """§2.4 and §2.5: the image locator and the SDK commit, from runtime_constraints.

        Resolved when the job is created or its constraints change, not on every save: a
        finished job's record must keep the image it ran, even after a newer image is
        tagged the same way."""
        default = settings.CRUNCH_DEFAULT_DOCKER_IMAGE_FOR_JOBS
        if default and job.runtime_constraints is None:
            job.runtime_constraints = {}  # a missing hash is {} (§2.1)
        constraints = job.runtime_constraints
        if default and isinstance(constraints, dict) and not constraints.get("docker_image"):
            constraints["docker_image"] = default
            changed.add("runtime_constraints")
        for name, resolve in (
            ("docker_image_locator", resolve_image),
            ("arvados_sdk_version", resolve_sdk_version),
        ):
            try:
                value = resolve(runtime_constraints=constraints, user=actor.user)
            except (docker.IncompatibleImage, RepositoryUnusable):
                raise  # not a validation message: the request fails at once (§2.3, §2.4)
            except InvalidRequest as exc:
                errors.extend(exc.messages)
                continue
            if getattr(job, name) != value:
                setattr(job, name, value)
                changed.add(name)

    # --- §2.11 ----------------------------------------------------------------------------

    def check_permission(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        if creating:
            if obj.is_locked_by_uuid not in (None, actor.user.uuid) and not actor.user.is_admin:
                raise PermissionDenied("is_locked_by_uuid may only be set to your own uuid")
            return
        job: Job = obj
        before: dict[str, Any] = getattr(job, "_before", {})
        requested: set[str] = getattr(job, "_client_changed", set())
        holder = before.get("is_locked_by_uuid")
        me = actor.user.uuid
        if holder and me not in (holder, system_user_uuid()):
            was_cancelled = before.get("cancelled_at") is not None
            touched = requested & LOCK_PROTECTED
            if was_cancelled:
                touched |= requested & set(CANCELLATION_ATTRIBUTES)
            if "state" in requested and job.state != JobState.CANCELLED:
                touched.add("state")
            if touched:
                raise PermissionDenied(
                    f"Job is locked by {holder}: only it may change {', '.join(sorted(touched))}"
                )
        if "is_locked_by_uuid" in requested:
            if holder and holder != me:
                raise PermissionDenied(f"Job is locked by {holder}")
            if job.is_locked_by_uuid not in (None, me):
                raise PermissionDenied("is_locked_by_uuid may only be set to your own uuid")

    # --- §2.2 steps 9–11 -------------------------------------------------------------------

    def before_write(self, obj: Any, *, actor: Actor, creating: bool, changed: set[str]) -> None:
        job: Job = obj
        before: dict[str, Any] = getattr(job, "_before", {})
        now = timezone.now()
        if (
            job.state != JobState.RUNNING
            and (creating or {"repository", "script_version"} & changed)
            and job.repository
            and job.script_version
        ):
            git.tag_in_internal_repository(
                job.repository, job.script_version, job.uuid, user=actor.user
            )
        # State effects; the flags always agree with the state (Quirk 9 resolved).
        running, success, stamp = STATE_EFFECTS[job.state]  # type: ignore[index]
        if creating or job.state != before.get("state"):
            if stamp and getattr(job, stamp) is None:
                setattr(job, stamp, now)
                changed.add(stamp)
        if (job.running, job.success) != (running, success):
            job.running, job.success = running, success
            changed |= {"running", "success"}
        # Cancellation bookkeeping: the server's clock and the acting user, once.
        if before.get("cancelled_at") is None and job.cancelled_at is not None:
            job.cancelled_at = now
            job.cancelled_by_user_uuid = actor.user.uuid
            job.cancelled_by_client_uuid = actor.client_uuid
            changed.update(CANCELLATION_ATTRIBUTES)
        elif before.get("cancelled_at") is not None:
            for name in CANCELLATION_ATTRIBUTES:
                setattr(job, name, before[name])

    def after_save(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        before: dict[str, Any] = getattr(obj, "_before", {})
        if (
            not creating
            and obj.state == JobState.CANCELLED
            and before.get("state") in ACTIVE_STATES
        ):
            _end_executions_cancelled(job_uuid=obj.uuid, actor=actor)
        if creating:
            record_inputs(obj)  # lineage: which collections it reads (jobs/provenance.py)
        if creating and obj.state == JobState.QUEUED:
            from jobs.services.runs import dispatch_on_commit

            # Registered first, so sent first at commit: a worker can start on the job
            # while the followers are told.
            dispatch_on_commit(obj.uuid)
        notify(obj.uuid)  # followers show state and queue position


def require_attributes(attrs: dict[str, Any]) -> None:
    """§3.1 step 1 (before anything else about the request is looked at): a script job needs
    repository, script, script_version and script_parameters (the first one missing or null
    is named); a command job needs its command."""
    if attrs.get("command") is not None:
        return
    for name in REQUIRED_ATTRIBUTES:
        if attrs.get(name) is None:
            raise InvalidRequest(f"{name} attribute must be specified")


def _priority_default(attrs: dict[str, Any]) -> dict[str, Any]:
    if "priority" in attrs and attrs["priority"] is None:
        return {**attrs, "priority": 0}
    return attrs


SERVICE = JobService()
register_service(SERVICE)


def job_cancel(*, actor: Actor, job: Job, cascade: bool = False) -> Job:
    """Cancel a Queued or Running job (§5.5); with `cascade`, its child jobs too, all in
    one transaction. Cancelling a Cancelled job does nothing; a finished one is a 422."""
    with transaction.atomic():
        result = _cancel(actor=actor, job=job, cascade=cascade, seen=set())
    return result


def _cancel(*, actor: Actor, job: Job, cascade: bool, seen: set[str]) -> Job:
    seen.add(job.uuid)
    current = Job.objects.get(pk=job.pk)
    if current.state != JobState.CANCELLED:
        permissions.require_write(actor.user, current)
        # A final job is a loud InvalidTransition; a job that ended between the read and
        # the compare-and-set is read again (and is then Cancelled, or a refusal).
        cancelled = job_transition(
            job_uuid=current.uuid,
            frm=ACTIVE_STATES if current.state in ACTIVE_STATES else {str(current.state)},
            to=JobState.CANCELLED,
            by=actor.user.uuid,
            fields={
                "cancelled_by_user_uuid": actor.user.uuid,
                "cancelled_by_client_uuid": actor.client_uuid,
                "modified_by_client_uuid": actor.client_uuid,
            },
        )
        if cancelled is None:
            current = Job.objects.get(pk=job.pk)
            if current.state != JobState.CANCELLED:
                raise InvalidTransition(current.uuid, frm=current.state, to=JobState.CANCELLED)
        else:
            current = cancelled
            _end_executions_cancelled(job_uuid=current.uuid, actor=actor)
            notify(current.uuid)
    if cascade:
        for child_uuid in (current.components or {}).values():
            if not isinstance(child_uuid, str) or child_uuid in seen:
                continue
            child = Job.objects.filter(uuid=child_uuid).first()
            if child is not None and child.state in (JobState.QUEUED, JobState.RUNNING):
                _cancel(actor=actor, job=child, cascade=True, seen=seen)
    return current


def _end_executions_cancelled(*, job_uuid: str, actor: Actor) -> None:
    """A cancelled job's Running executions end Cancelled at once (its runner, if alive,
    stops the script within seconds; if its worker is gone, nobody else would end them)."""
    executions_end_running(
        job_uuid=job_uuid,
        state=ExecutionState.CANCELLED,
        reason=f"the job was cancelled by {actor.user.uuid}",
    )


def job_lock(*, actor: Actor, job: Job) -> Job:
    """§2.11: Queued and unlocked → Running, locked by the caller (one compare-and-set). A
    job that is not Queued, or is locked, is a 422."""
    current = Job.objects.filter(pk=job.pk).first()
    if current is None:
        raise NotFound()
    permissions.require_write(actor.user, current)
    locked = job_transition(
        job_uuid=current.uuid,
        frm=JobState.QUEUED,
        to=JobState.RUNNING,
        by=actor.user.uuid,
        guard={"is_locked_by_uuid__isnull": True},
        fields={"is_locked_by_uuid": actor.user.uuid, "modified_by_client_uuid": actor.client_uuid},
    )
    if locked is None:
        current = Job.objects.filter(pk=job.pk).first() or current
        raise InvalidRequest(
            f"Job {current.uuid} cannot be locked: it is {current.state}"
            + (f" and locked by {current.is_locked_by_uuid}" if current.is_locked_by_uuid else "")
        )
    notify(locked.uuid)
    return locked
