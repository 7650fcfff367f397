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

`job_cancel` and `job_lock` are the two state-changing operations with their own rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import docker, git, permissions
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied, RepositoryUnusable
from jobs.models import Job, JobState, Link, User
from jobs.models.jobs import ALLOWED_TRANSITIONS, DESCRIPTION_MAX, STATES
from jobs.placement import Requirements
from jobs.selectors import object_by_uuid
from jobs.services.objects import Actor, ResourceService
from jobs.services.resources import register_service
from jobs.uuids import is_uuid, system_user_uuid
from jobs.wakeups import notify

REQUIRED_ATTRIBUTES = ("repository", "script", "script_version", "script_parameters")
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
    }
)
CANCELLATION_ATTRIBUTES = ("cancelled_at", "cancelled_by_client_uuid", "cancelled_by_user_uuid")
# The flags and timestamp each state implies (§2.10).
STATE_FLAGS: dict[str, tuple[bool, bool | None, str | None]] = {
    JobState.QUEUED: (False, None, None),
    JobState.RUNNING: (True, None, "started_at"),
    JobState.COMPLETE: (False, True, "finished_at"),
    JobState.FAILED: (False, False, "finished_at"),
    JobState.CANCELLED: (False, False, "cancelled_at"),
}


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

    def create(self, *, actor: Actor, attrs: dict[str, Any]) -> Any:
        for name in REQUIRED_ATTRIBUTES:
            if attrs.get(name) is None:
                raise InvalidRequest(f"{name} attribute must be specified")
        return super().create(actor=actor, attrs=_priority_default(attrs))

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

        digest = parameters_digest(job.script_parameters)
        if digest != job.script_parameters_digest:
            job.script_parameters_digest = digest
            changed.add("script_parameters_digest")

        self._check_references(job, actor=actor, creating=creating, changed=changed, errors=errors)
        if creating or {"script"} & changed:
            if (
                not isinstance(job.script, str)
                or not _SCRIPT_RE.match(job.script)
                or ".." in job.script
            ):
                errors.append(
                    f"Script {json.dumps(job.script)} must name a file in crunch_scripts/ "
                    "(letters, digits, '_', '-', '+', '.'; no '/' or '..')"
                )
        if job.state != JobState.RUNNING and (
            creating or {"repository", "script_version"} & changed
        ):
            self._resolve_version(job, actor=actor, changed=changed, errors=errors)
        if creating or "runtime_constraints" in changed:
            self._resolve_runtime(job, actor=actor, changed=changed, errors=errors)
            try:  # resources and label constraints a node must meet (jobs.placement)
                Requirements.of(job.runtime_constraints)
            except InvalidRequest as exc:
                errors.extend(exc.messages)

        if job.state not in STATES:
            errors.append(f"State {job.state} must be one of: {json.dumps(list(STATES))}")
        elif not creating and job.state != before.get("state"):
            old = before.get("state")
            if job.state not in ALLOWED_TRANSITIONS.get(old, frozenset()):
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
    ) -> None:
        """§2.3: script_version becomes the 40-hex commit; the text given is kept in
        supplied_script_version. An unusable repository raises (422) at once."""
        given = job.script_version
        commit = git.resolve_commit(user=actor.user, repo=job.repository, ref=given)
        if commit is None:
            errors.append(f"Script version {given} does not resolve to a commit")
            return
        if not job.supplied_script_version:
            job.supplied_script_version = given
            changed.add("supplied_script_version")
        if commit != given:
            job.script_version = commit
            changed.add("script_version")

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
        if job.state != JobState.RUNNING and (
            creating or {"repository", "script_version"} & changed
        ):
            git.tag_in_internal_repository(
                job.repository, job.script_version, job.uuid, user=actor.user
            )
        # State effects; the flags always agree with the state (Quirk 9 resolved).
        running, success, stamp = STATE_FLAGS[job.state]  # type: ignore[index]
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
        notify(obj.uuid)  # followers show state and queue position
        if creating and obj.state == JobState.QUEUED:
            from jobs.services.runs import dispatch_on_commit

            dispatch_on_commit(obj.uuid)


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
    current = Job.objects.select_for_update().get(pk=job.pk)
    if current.state in (JobState.QUEUED, JobState.RUNNING):
        current = SERVICE.update(actor=actor, obj=current, attrs={"state": JobState.CANCELLED})
    elif current.state != JobState.CANCELLED:
        permissions.require_write(actor.user, current)
        raise InvalidRequest(f"State invalid change from {current.state} to Cancelled")
    if cascade:
        for child_uuid in (current.components or {}).values():
            if not isinstance(child_uuid, str) or child_uuid in seen:
                continue
            child = Job.objects.filter(uuid=child_uuid).first()
            if child is not None and child.state in (JobState.QUEUED, JobState.RUNNING):
                _cancel(actor=actor, job=child, cascade=True, seen=seen)
    return current


def job_lock(*, actor: Actor, job: Job) -> Job:
    """§2.11: Queued and unlocked → Running, locked by the caller (compare-and-set under a
    row lock). A job that is not Queued, or is locked, is a 422."""
    with transaction.atomic():
        current = Job.objects.select_for_update().filter(pk=job.pk).first()
        if current is None:
            raise NotFound()
        if current.state != JobState.QUEUED or current.is_locked_by_uuid is not None:
            permissions.require_write(actor.user, current)
            raise InvalidRequest(
                f"Job {current.uuid} cannot be locked: it is {current.state}"
                + (
                    f" and locked by {current.is_locked_by_uuid}"
                    if current.is_locked_by_uuid
                    else ""
                )
            )
        return SERVICE.update(
            actor=actor,
            obj=current,
            attrs={"state": JobState.RUNNING, "is_locked_by_uuid": actor.user.uuid},
        )
