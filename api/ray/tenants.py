"""Tenants (`X-Tenant-Id`: a Crunch project the caller can write) and the working_dir
packages uploaded for them.

Ray names a package by a weak 8-byte hash the client computes, so the name is only an alias,
kept per tenant as a link (`link_class` `ray_package`, owned by the tenant, pointing at the
collection the zip became). A client that finds its package's name already there skips the
upload and runs what the alias points at; since aliases are looked up in the caller's
tenant only, no other tenant can plant code under a name this one's client will compute.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest

from api.ray.wire import RayError
from jobs import permissions
from jobs.models import Collection, Group, Link
from jobs.selectors import readable_object, restrict_readable
from jobs.services.objects import Actor
from jobs.services.resources import service_for

LINK_CLASS = "ray_package"


def tenant(request: HttpRequest, actor: Actor) -> str:
    """The owner uuid for the request's tenant: the project `X-Tenant-Id` names (by uuid or
    name), which the caller must be able to write; the caller's home project without one."""
    wanted = (request.headers.get("X-Tenant-Id") or "").strip()
    user = actor.user
    if not wanted or wanted == user.uuid:
        return str(user.uuid)
    group = None
    if len(wanted) <= 255:
        group = readable_object(Group.objects.all(), [user], wanted)
        if group is None:
            group = (
                restrict_readable(Group.objects.filter(name=wanted, group_class="project"), [user])
                .order_by("created_at", "id")
                .first()
            )
    if group is None:
        raise RayError(404, f"Tenant {wanted} does not exist")
    if not permissions.can_write(user, group):
        raise RayError(403, f"Permission denied: you cannot submit to tenant {wanted}")
    return str(group.uuid)


def package_collection(name: str, *, owner: str) -> Collection | None:
    link = (
        Link.objects.filter(link_class=LINK_CLASS, name=name, owner_uuid=owner)
        .order_by("-modified_at", "-id")
        .first()
    )
    if link is None:
        return None
    return Collection.objects.filter(uuid=link.head_uuid, is_trashed=False).first()


def set_package(name: str, *, owner: str, collection: Collection, actor: Actor) -> None:
    """Point the tenant's alias `name` at `collection` (replacing an earlier upload)."""
    with transaction.atomic():
        Link.objects.filter(link_class=LINK_CLASS, name=name, owner_uuid=owner).delete()
        service_for(Link).create(
            actor=actor,
            attrs={
                "link_class": LINK_CLASS,
                "name": name,
                "owner_uuid": owner,
                "tail_uuid": owner,
                "head_uuid": collection.uuid,
            },
        )


def working_dir(value: str | None, *, owner: str) -> str | None:
    """The PDH a job runs in: a package uploaded for this tenant, or `keep:<pdh>`."""
    if value is None:
        return None
    if value.startswith("keep:"):
        return value[len("keep:") :]
    collection = package_collection(value, owner=owner)
    if collection is None:
        raise RayError(
            400,
            f"runtime_env.working_dir gcs://{value}: no such package was uploaded for this "
            "tenant (the client uploads it first)",
        )
    return str(collection.portable_data_hash)
