"""Job templates (jobs/models/templates.py): register one, stop it, and instantiate it into a
job, with an idempotency key that makes one job whatever races.

A front door validates its own document and builds each instance's JobSpec (its variables,
its files); what is stored, versioned and instantiated is the same for every door.

Templates with a schedule other than `on_demand` make their own instances:
`template_reconcile` creates what the schedule asks for and is missing (each slot's
instance has the idempotency key `<template uuid>:v<version>:<slot>:<generation>`, so
concurrent reconcilers make one job), and cancels live instances of older versions. It runs
when a door registers a template, on every sweep (a node that joined, a service instance
that ended), and when a template is stopped its live instances are cancelled."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import permissions, placement
from jobs.exceptions import Conflict, CrunchError, NotFound, PermissionDenied
from jobs.models import Job, JobState, JobTemplate, Schedule, User
from jobs.models.jobs import ACTIVE_STATES
from jobs.selection import Submission, chosen_job
from jobs.selectors import object_by_uuid, restrict_readable
from jobs.services.jobs import SERVICE, job_cancel
from jobs.services.objects import Actor
from jobs.services.tokens import system_user
from jobs.spec import JobSpec
from jobs.submit import job_submit, record_hit, reuse_candidates

log = logging.getLogger("crunch.templates")


def _require_writable_owner(actor: Actor, owner_uuid: str) -> None:
    if owner_uuid == actor.user.uuid or actor.user.is_admin:
        return
    owner = object_by_uuid(owner_uuid)
    if owner is None or not permissions.can_write(actor.user, owner):
        raise PermissionDenied("Permission denied")


def template_register(
    *,
    actor: Actor,
    owner_uuid: str,
    door: str,
    name: str,
    spec: dict[str, Any],
    definition: dict[str, Any],
    schedule: str = Schedule.ON_DEMAND,
    count: int = 0,
    reuse: bool = False,
    external_id: str | None = None,
) -> tuple[JobTemplate, bool]:
    """Create the template, or update it (a changed spec, document, schedule or count bumps
    its version; a stopped one runs again). Returns it, and whether it was created."""
    _require_writable_owner(actor, owner_uuid)
    now = timezone.now()
    with transaction.atomic():
        template = (
            JobTemplate.objects.select_for_update()
            .filter(door=door, owner_uuid=owner_uuid, name=name)
            .first()
        )
        if template is None:
            try:
                with transaction.atomic():
                    created = JobTemplate.objects.create(
                        uuid=JobTemplate.new_uuid(),
                        owner_uuid=owner_uuid,
                        door=door,
                        name=name,
                        spec=spec,
                        definition=definition,
                        schedule=schedule,
                        count=count,
                        reuse=reuse,
                        external_id=external_id,
                        created_at=now,
                        modified_at=now,
                        modified_by_user_uuid=actor.user.uuid,
                    )
                return created, True
            except IntegrityError:  # registered concurrently: update that one
                template = JobTemplate.objects.select_for_update().get(
                    door=door, owner_uuid=owner_uuid, name=name
                )
        if (template.spec, template.definition, template.schedule, template.count) != (
            spec,
            definition,
            schedule,
            count,
        ):
            template.version += 1
            template.spec, template.definition = spec, definition
            template.schedule, template.count = schedule, count
        template.reuse = reuse
        template.stopped = False
        template.modified_at = now
        template.modified_by_user_uuid = actor.user.uuid
        template.save()
    return template, False


def templates_readable(actor: Actor, door: str) -> Any:
    """The door's templates whose owner the caller may read."""
    from jobs.models import Group

    owners = {actor.user.uuid}
    if not actor.user.is_admin:
        owners |= set(
            restrict_readable(Group.objects.all(), [actor.user]).values_list("uuid", flat=True)
        )
        queryset = JobTemplate.objects.filter(door=door, owner_uuid__in=owners)
    else:
        queryset = JobTemplate.objects.filter(door=door)
    return queryset


def template_stop(
    *, actor: Actor, template: JobTemplate, cancel_instances: bool = False
) -> JobTemplate:
    """Stop the template: no more instances; with `cancel_instances`, its Queued and
    Running ones are cancelled."""
    _require_writable_owner(actor, template.owner_uuid)
    JobTemplate.objects.filter(pk=template.pk).update(stopped=True, modified_at=timezone.now())
    template.refresh_from_db()
    if cancel_instances:
        _cancel_all(actor, template_instances(template).filter(state__in=ACTIVE_STATES))
    return template


def _cancel_all(actor: Actor, jobs: Any) -> None:
    for job in jobs:
        try:
            job_cancel(actor=actor, job=job)
        except CrunchError:
            pass  # it ended meanwhile


def template_instantiate(
    *, actor: Actor, template: JobTemplate, spec: JobSpec, reuse: bool = False
) -> tuple[Job, Submission | None]:
    """A job from `template` as `spec` says (the door fills in its instance's variables and
    files). With an idempotency key that a job already has, that job, and no submission."""
    _require_writable_owner(actor, template.owner_uuid)
    if template.stopped:
        raise NotFound(f"Template {template.name} is stopped")
    key = spec.idempotency_key
    if key is not None:
        existing = Job.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing, None
    try:
        submission = job_submit(actor=actor, spec=spec, reuse=reuse)
    except (IntegrityError, Conflict):
        existing = Job.objects.filter(idempotency_key=key).first() if key else None
        if existing is None:
            raise
        return existing, None  # an identical key won the race
    return submission.job, submission


def template_instances(template: JobTemplate) -> Any:
    return Job.objects.filter(template_uuid=template.uuid)


# --- schedules -------------------------------------------------------------------------------

PER_NODE = (Schedule.EACH_NODE, Schedule.EVERY_NODE)
RECONCILED = (Schedule.EVERY_NODE, Schedule.KEEP_RUNNING)  # on every sweep as well


def template_slots(template: JobTemplate, nodes: Sequence[placement.NodeView]) -> list[str]:
    """The slots the schedule wants filled now: replicas `r0`.., or the suitable nodes."""
    if template.schedule in (Schedule.ONCE, Schedule.KEEP_RUNNING):
        return [f"r{i}" for i in range(template.count)]
    if template.schedule in PER_NODE:
        req = placement.Requirements.of(template.spec.get("runtime_constraints") or {})
        return [f"n:{n.uuid}" for n in nodes if not placement.node_problems(req, n)]
    return []


def template_reconcile(
    template: JobTemplate,
    *,
    actor: Actor | None = None,
    nodes: Sequence[placement.NodeView] | None = None,
) -> list[Job]:
    """Make the instances the template's schedule asks for and lacks; cancel the live
    instances of its older versions. Returns the jobs created."""
    if template.schedule == Schedule.ON_DEMAND:
        return []
    if actor is None:
        user = User.objects.filter(uuid=template.modified_by_user_uuid).first()
        if user is None:
            return []
        actor = Actor(user=user)
    stale = template_instances(template).filter(state__in=ACTIVE_STATES)
    stale = stale.exclude(template_version=template.version)
    if stale.exists():
        _cancel_all(Actor(user=system_user()), stale)
    if template.stopped:
        return []
    current = list(
        template_instances(template)
        .filter(template_version=template.version)
        .order_by("id")
        .values_list("template_slot", "state")
    )
    if template.schedule == Schedule.EACH_NODE and current:
        return []  # ops: the nodes suitable when the version was registered, once
    latest: dict[str, tuple[int, str]] = {}
    for slot, state in current:
        generation = latest.get(slot or "", (-1, ""))[0] + 1
        latest[slot or ""] = (generation, state)
    if nodes is None and template.schedule in PER_NODE:
        nodes = placement.live_node_views()
    created = []
    for slot in template_slots(template, nodes or []):
        generation, state = latest.get(slot, (-1, ""))
        if generation >= 0 and (
            template.schedule != Schedule.KEEP_RUNNING or state in ACTIVE_STATES
        ):
            continue
        job = _instantiate_slot(template, actor, slot, generation + 1)
        if job is not None:
            created.append(job)
    return created


def _instantiate_slot(
    template: JobTemplate, actor: Actor, slot: str, generation: int
) -> Job | None:
    spec = JobSpec.of(template.spec)
    constraints = dict(spec.runtime_constraints)
    if slot.startswith("n:"):
        constraints["node"] = slot[2:]
    spec = dataclasses.replace(
        spec,
        runtime_constraints=constraints,
        owner_uuid=template.owner_uuid,
        door=template.door,
        template_uuid=template.uuid,
        template_version=template.version,
        template_slot=slot,
        idempotency_key=f"{template.uuid}:v{template.version}:{slot}:{generation}",
        run_environment=dict(spec.run_environment)
        | {"CRUNCH_TEMPLATE_SLOT": slot, "CRUNCH_TEMPLATE_GENERATION": str(generation)},
    )
    job, submission = template_instantiate(actor=actor, template=template, spec=spec)
    return job if submission is not None else None


def templates_reconcile() -> int:
    """What the sweeper runs: every live template whose schedule reacts to nodes joining or
    instances ending. Returns the number of jobs created."""
    templates = JobTemplate.objects.filter(stopped=False, schedule__in=RECONCILED)
    nodes = None
    made = 0
    for template in templates.order_by("id"):
        if nodes is None:
            nodes = placement.live_node_views()
        try:
            made += len(template_reconcile(template, nodes=nodes))
        except CrunchError as exc:  # its owner lost write permission, its image went away
            log.warning("template %s: %s", template.uuid, "; ".join(exc.messages))
    return made


def template_check(*, actor: Actor, spec: JobSpec) -> Job:
    """The job `spec` would make, through the write path's checks (image, permissions,
    references) but not saved: a door checks a template's spec before registering it."""
    job = SERVICE.prepare_new(actor=actor, attrs=spec.attrs())
    for name, value in spec.server_attrs().items():
        setattr(job, name, value)
    return job


def template_reusable(*, actor: Actor, door: str, spec: JobSpec, count: int) -> JobTemplate | None:
    """An earlier `once` template of `door` that ran exactly `spec` `count` times, all
    Complete, and that the caller may read; the reuse is recorded like every reuse."""
    job = template_check(actor=actor, spec=dataclasses.replace(spec, door=door))
    for found in reuse_candidates(user=actor.user, key=job.reuse_key or ""):
        if found.state != JobState.COMPLETE:
            continue
        candidate = chosen_job(found)
        if candidate is None or not candidate.template_uuid:
            continue
        template = JobTemplate.objects.filter(
            uuid=candidate.template_uuid, door=door, schedule=Schedule.ONCE, count=count
        ).first()
        if template is None or candidate.template_version != template.version:
            continue
        states = list(
            template_instances(template)
            .filter(template_version=template.version)
            .values_list("state", flat=True)
        )
        if len(states) == count and all(s == JobState.COMPLETE for s in states):
            record_hit(candidate, actor=actor, submitted=job)
            return template
    return None
