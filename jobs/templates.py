"""Job templates (jobs/models/templates.py): register one, stop it, and instantiate it into a
job, with an idempotency key that makes one job whatever races.

A front door validates its own document and builds each instance's JobSpec (its variables,
its files); what is stored, versioned and instantiated is the same for every door."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import permissions
from jobs.exceptions import Conflict, NotFound, PermissionDenied
from jobs.models import Job, JobTemplate
from jobs.selection import Submission
from jobs.selectors import object_by_uuid, restrict_readable
from jobs.services.objects import Actor
from jobs.spec import JobSpec
from jobs.submit import job_submit


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
) -> tuple[JobTemplate, bool]:
    """Create the template, or update it (a changed spec or document bumps its version; a
    stopped one runs again). Returns it, and whether it was created."""
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
                        created_at=now,
                        modified_at=now,
                        modified_by_user_uuid=actor.user.uuid,
                    )
                return created, True
            except IntegrityError:  # registered concurrently: update that one
                template = JobTemplate.objects.select_for_update().get(
                    door=door, owner_uuid=owner_uuid, name=name
                )
        if template.spec != spec or template.definition != definition:
            template.version += 1
            template.spec, template.definition = spec, definition
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


def template_stop(*, actor: Actor, template: JobTemplate) -> JobTemplate:
    _require_writable_owner(actor, template.owner_uuid)
    JobTemplate.objects.filter(pk=template.pk).update(stopped=True, modified_at=timezone.now())
    template.refresh_from_db()
    return template


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
