"""Who may read and write what (spec §1.3).

A user's *permission map* gives, for the user and every user or group reachable from it, the
best level the user holds on it: 3 (manage) for the user itself; following a `permission` link
from a reachable node lowers the level to the link's (`can_read` 1, `can_write` 2,
`can_manage` 3); a group owned by a reachable node inherits that node's level (owners manage
what they own). An object is readable when its owner or its own uuid is in the map, or a
permission link from a node in the map points at it; writable when the best of those levels is
at least `can_write`. Admins read and write everything.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from jobs.exceptions import NotFound, PermissionDenied
from jobs.models import PERMISSION_LEVELS, ArvadosModel, Group, Link, User
from jobs.uuids import infix_for

READ, WRITE, MANAGE = 1, 2, 3
_PERMISSION_NAMES = tuple(PERMISSION_LEVELS)
_GROUP_INFIX = infix_for("Group")
_USER_INFIX = infix_for("User")


def permission_map(user: User) -> dict[str, int]:
    """Best permission level `user` holds on each user or group it can reach.

    Cached on the user object: a request computes it once.
    """
    cached: dict[str, int] | None = getattr(user, "_permission_map", None)
    if cached is not None:
        return cached
    levels: dict[str, int] = {user.uuid: MANAGE}
    frontier = {user.uuid}
    while frontier:
        changed: set[str] = set()
        links = Link.objects.filter(
            link_class="permission", name__in=_PERMISSION_NAMES, tail_uuid__in=frontier
        ).values_list("tail_uuid", "head_uuid", "name")
        for tail, head, name in links:
            if not head or head[6:11] not in (_GROUP_INFIX, _USER_INFIX):
                continue
            level = min(levels[tail], PERMISSION_LEVELS[name])
            if levels.get(head, 0) < level:
                levels[head] = level
                changed.add(head)
        for owner, group in Group.objects.filter(owner_uuid__in=frontier).values_list(
            "owner_uuid", "uuid"
        ):
            level = levels[owner]
            if levels.get(group, 0) < level:
                levels[group] = level
                changed.add(group)
        frontier = changed
    user._permission_map = levels  # type: ignore[attr-defined]
    return levels


def forget(user: User) -> None:
    """Drop the cached permission map (after a change to links or groups)."""
    if hasattr(user, "_permission_map"):
        del user._permission_map


def readable_q(user: User) -> Q | None:
    """The condition for objects `user` may read; None means everything (admins)."""
    if user.is_admin:
        return None
    nodes = list(permission_map(user))
    granted = Link.objects.filter(
        link_class="permission", name__in=_PERMISSION_NAMES, tail_uuid__in=nodes
    ).values("head_uuid")
    return Q(owner_uuid__in=nodes) | Q(uuid__in=nodes) | Q(uuid__in=granted)


def readable(queryset: QuerySet, user: User) -> QuerySet:
    """Restrict `queryset` to objects `user` may read."""
    condition = readable_q(user)
    return queryset if condition is None else queryset.filter(condition)


def level_on(user: User, obj: ArvadosModel) -> int:
    """Best permission level `user` holds on `obj` (0 for none)."""
    if user.is_admin:
        return MANAGE
    levels = permission_map(user)
    best = max(levels.get(obj.owner_uuid, 0), levels.get(obj.uuid, 0))
    if best >= MANAGE:
        return best
    for tail, name in Link.objects.filter(
        link_class="permission", name__in=_PERMISSION_NAMES, head_uuid=obj.uuid,
        tail_uuid__in=list(levels),
    ).values_list("tail_uuid", "name"):
        best = max(best, min(levels[tail], PERMISSION_LEVELS[name]))
    return best


def level_on_uuid(user: User, uuid: str) -> int:
    """Level on an owner (user or group) given by uuid, used for owner_uuid checks."""
    if user.is_admin:
        return MANAGE
    levels = permission_map(user)
    if uuid in levels:
        return levels[uuid]
    return 0


def can_read(user: User, obj: ArvadosModel) -> bool:
    return level_on(user, obj) >= READ


def can_write(user: User, obj: ArvadosModel) -> bool:
    return level_on(user, obj) >= WRITE


def require_write(user: User, obj: ArvadosModel) -> None:
    """Raise unless `user` may change `obj`. Unreadable looks like missing (404)."""
    level = level_on(user, obj)
    if level < READ:
        raise NotFound()
    if level < WRITE:
        raise PermissionDenied(f"{user.uuid} does not have permission to modify {obj.uuid}")
    if not user.is_active:
        raise PermissionDenied("Inactive users cannot modify objects")
