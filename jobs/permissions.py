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

from collections.abc import Iterable

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from jobs.exceptions import NotFound, PermissionDenied
from jobs.models import PERMISSION_LEVELS, ArvadosModel, Group, Link, User
from jobs.uuids import infix_for

READ, WRITE, MANAGE = 1, 2, 3
_PERMISSION_NAMES = tuple(PERMISSION_LEVELS)
_GROUP_INFIX = infix_for("Group")
_USER_INFIX = infix_for("User")


# One recursive query instead of a query per level: the edges are permission links to users
# and groups (at the link's level) and group ownership (owners manage what they own); a
# path's level is its weakest edge, and a node's level is its best path. UNION (not UNION
# ALL) makes it terminate on cycles: there are finitely many (uuid, level) pairs.
_MAP_SQL = """
WITH RECURSIVE reach(uuid, level) AS (
  SELECT CAST(%s AS VARCHAR), 3
  UNION
  SELECT e.dst, CASE WHEN e.level < r.level THEN e.level ELSE r.level END
    FROM reach r JOIN (
      SELECT l.tail_uuid AS src, l.head_uuid AS dst,
             CASE l.name WHEN 'can_read' THEN 1 WHEN 'can_write' THEN 2 ELSE 3 END AS level
        FROM {links} l
       WHERE l.link_class = 'permission'
         AND l.name IN ('can_read', 'can_write', 'can_manage')
         AND substr(l.head_uuid, 7, 5) IN (%s, %s)
      UNION ALL
      SELECT g.owner_uuid, g.uuid, 3 FROM {groups} g
    ) e ON e.src = r.uuid
)
SELECT uuid, MAX(level) FROM reach GROUP BY uuid
"""


def permission_map(user: User) -> dict[str, int]:
    """Best permission level `user` holds on each user or group it can reach.

    Cached on the user object: a request computes it once.
    """
    cached: dict[str, int] | None = getattr(user, "_permission_map", None)
    if cached is not None:
        return cached
    sql = _MAP_SQL.format(links=Link._meta.db_table, groups=Group._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [user.uuid, _GROUP_INFIX, _USER_INFIX])
        levels = {uuid: int(level) for uuid, level in cursor.fetchall()}
    levels[user.uuid] = MANAGE
    user._permission_map = levels  # type: ignore[attr-defined]
    return levels


def forget(user: User) -> None:
    """Drop the cached permission map (after a change to links or groups)."""
    if hasattr(user, "_permission_map"):
        del user._permission_map


def readable_q(model: type, user: User) -> Q | None:
    """The condition for objects of `model` that `user` may read; None means everything.

    An object is readable when its owner is in the permission map, when a permission link
    from the map points at it, or (users and groups only) when it is itself in the map.
    """
    if user.is_admin:
        return None
    nodes = list(permission_map(user))
    condition = Q(owner_uuid__in=nodes) | Q(uuid__in=_granted(nodes))
    if model in (User, Group):
        condition |= Q(uuid__in=nodes)
    return condition


def readable_sql(user: User) -> tuple[str, list[str]] | None:
    """`readable_q` for objects other than users and groups, as SQL over the unqualified
    columns `owner_uuid` and `uuid` of the one table a written-out condition is for, with
    its parameters; None means everything."""
    if user.is_admin:
        return None
    nodes = list(permission_map(user))
    granted = _granted(nodes)
    marks = ", ".join(["%s"] * len(nodes))
    return f"(owner_uuid IN ({marks}) OR uuid IN ({granted.sql}))", [*nodes, *granted.params]


def _granted(nodes: list[str]) -> RawSQL:
    """The uuids that permission links from `nodes` point at, as a subquery. Written out:
    the ORM's version of this one subquery cost as much to build and compile as the rest of
    a typical read's query (0.3 ms of a reuse hit's candidate query)."""
    if not nodes:
        return RawSQL(f"SELECT head_uuid FROM {Link._meta.db_table} WHERE 1 = 0", [])
    sql = (
        f"SELECT head_uuid FROM {Link._meta.db_table} WHERE link_class = 'permission' "
        f"AND name IN ({', '.join(['%s'] * len(_PERMISSION_NAMES))}) "
        f"AND tail_uuid IN ({', '.join(['%s'] * len(nodes))})"
    )
    return RawSQL(sql, [*_PERMISSION_NAMES, *nodes])


def readable_among(user: User, rows: Iterable[tuple[str, str]]) -> set[str]:
    """Of `rows` (owner uuid, uuid) already fetched, the uuids `user` may read: the rule of
    `readable_q` applied in Python, with at most one query (for the permission links that
    point at objects whose owner is not in the map). For large reads that would otherwise
    carry the condition in their SQL (lineage walks)."""
    rows = list(rows)
    if user.is_admin:
        return {uuid for _, uuid in rows}
    nodes = permission_map(user)
    found = {uuid for owner, uuid in rows if owner in nodes or uuid in nodes}
    rest = list({uuid for _, uuid in rows if uuid not in found})
    if rest:
        granted = Link.objects.filter(
            link_class="permission",
            name__in=_PERMISSION_NAMES,
            tail_uuid__any=set(nodes),
            head_uuid__any=set(rest),
        ).values_list("head_uuid", flat=True)
        found.update(uuid for uuid in granted if uuid)
    return found


def readable(queryset: QuerySet, user: User) -> QuerySet:
    """Restrict `queryset` to objects `user` may read."""
    condition = readable_q(queryset.model, user)
    return queryset if condition is None else queryset.filter(condition)


def level_on(user: User, obj: ArvadosModel, *, enough: int = MANAGE) -> int:
    """Best permission level `user` holds on `obj` (0 for none).

    Stops looking once `enough` is reached (a read check needs no link query when the
    owner is already in the map).
    """
    if user.is_admin or user.uuid in (obj.owner_uuid, obj.uuid):
        return MANAGE  # as the map would say: a user manages itself and what it owns
    levels = permission_map(user)
    best = max(levels.get(obj.owner_uuid, 0), levels.get(obj.uuid, 0))
    if best >= enough:
        return best
    for tail, name in Link.objects.filter(
        link_class="permission",
        name__in=_PERMISSION_NAMES,
        head_uuid=obj.uuid,
        tail_uuid__in=list(levels),
    ).values_list("tail_uuid", "name"):
        if tail is not None and name is not None:  # always: the query asked for both
            best = max(best, min(levels[tail], PERMISSION_LEVELS[name]))
    return best


def level_on_uuid(user: User, uuid: str) -> int:
    """Level on an owner (user or group) given by uuid, used for owner_uuid checks."""
    if user.is_admin or uuid == user.uuid:
        return MANAGE
    levels = permission_map(user)
    if uuid in levels:
        return levels[uuid]
    return 0


def can_read(user: User, obj: ArvadosModel) -> bool:
    return level_on(user, obj, enough=READ) >= READ


def can_write(user: User, obj: ArvadosModel) -> bool:
    return level_on(user, obj, enough=WRITE) >= WRITE


def require_write(user: User, obj: ArvadosModel) -> None:
    """Raise unless `user` may change `obj`. Unreadable looks like missing (404)."""
    level = level_on(user, obj)
    if level < READ:
        raise NotFound()
    if level < WRITE:
        raise PermissionDenied(f"{user.uuid} does not have permission to modify {obj.uuid}")
    if not user.is_active:
        raise PermissionDenied("Inactive users cannot modify objects")
