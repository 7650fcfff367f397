"""Lineage: what produced a result, and what was built on it, for jobs from every door.

A graph of nodes, each with an `id` (a job's uuid, a collection's portable data hash) and a
`kind` (collections, jobs, commits, images, uploaded working directories and reuse
events) and edges:

- `input`: a collection a job read (a parameter naming it, recorded in `JobInput` when the
  job was created) → the job;
- `ran`: the source tree a job ran (a commit, or the uploaded working directory) → the job;
- `image`: the exact image → the job;
- `output`, `log`: the job → the collections it produced;
- `reused_by`: the job → each submission that got it back instead of running again.

`lineage` walks upstream (from a result to the jobs that produced it, their inputs, the jobs
that produced those, ...) or downstream (`used_by`: from a collection to every job that read
it and their outputs, ...), one level of jobs per step, up to `depth` levels. Each level is a
few indexed queries for all of its jobs at once, whatever their number.

Only what the caller may read is shown. A job the caller cannot read appears as a placeholder
with no attributes (not even its uuid), and the walk does not pass through it; a collection
the caller cannot read shows its portable data hash (which the readable job that names it
already shows) and nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs import permissions
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied
from jobs.models import Collection, Job, JobInput, JobReuse, User
from jobs.selectors import readable_object, readable_pdhs, restrict_readable

DEFAULT_DEPTH = 5
MAX_DEPTH = 20
MAX_NODES = 5000  # a graph this large is cut off (and says so)
REUSES_PER_JOB = 20  # the most recent reuse events shown for each job

# A collection named in a parameter: a PDH, optionally with hints and a path inside it.
_PDH_IN_VALUE = re.compile(r"^([0-9a-f]{32}\+[0-9]+)(?:\+[A-Za-z][^/]*)?(?:/.*)?\Z", re.S)
_PDH = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")

# Shown as edges (and the node's id), not repeated in a job node's attributes.
_EDGE_FIELDS = frozenset({"uuid", "output", "log", "docker_image_locator", "working_dir"})
JOB_FIELDS = (
    "uuid",
    "owner_uuid",
    "state",
    "door",
    "script",
    "command",
    "repository",
    "script_version",
    "working_dir",
    "docker_image_locator",
    "output",
    "log",
    "finished_at",
    "invalidated_at",
    "invalidated_reason",
)


# --- what a job read (written when it is created) -------------------------------------


def inputs_of(job: Any) -> list[tuple[str, str, str]]:
    """(pdh, kind, name) for each collection `job` names as an input."""
    found: dict[tuple[str, str], str] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, str):
            match = _PDH_IN_VALUE.match(value)
            if match:
                found.setdefault((match.group(1), "parameter"), name)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, name or str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, name)

    walk(job.script_parameters or {}, "")
    if job.working_dir and _PDH.match(job.working_dir):
        found.setdefault((job.working_dir, "working_dir"), "")
    return [(pdh, kind, name[:255]) for (pdh, kind), name in found.items()]


def record_inputs(job: Any) -> None:
    rows = [
        JobInput(job_uuid=job.uuid, portable_data_hash=pdh, kind=kind, name=name)
        for pdh, kind, name in inputs_of(job)
    ]
    if rows:
        JobInput.objects.bulk_create(rows)


# --- the graph --------------------------------------------------------------------------


@dataclass
class Graph:
    user: User
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], None] = field(default_factory=dict)
    hidden: dict[str, str] = field(default_factory=dict)  # unreadable job uuid -> its id
    walked: list[str] = field(default_factory=list)  # readable jobs, for their reuse events
    truncated: bool = False

    def node(self, node_id: str, **attrs: Any) -> str:
        if node_id not in self.nodes:
            if len(self.nodes) >= MAX_NODES:
                self.truncated = True
            self.nodes[node_id] = {"id": node_id, **attrs}
        return node_id

    def edge(self, source: str, target: str, kind: str) -> None:
        self.edges[(source, target, kind)] = None

    def job(self, row: dict[str, Any], readable: bool) -> str:
        if not readable:
            uuid = row["uuid"]
            if uuid not in self.hidden:
                self.hidden[uuid] = f"hidden:{len(self.hidden) + 1}"
            return self.node(self.hidden[uuid], kind="job", readable=False)
        # Attributes without a value are left out (a command job has no script, ...).
        attrs = {k: v for k, v in row.items() if v is not None and k not in _EDGE_FIELDS}
        if "finished_at" in attrs:
            attrs["finished_at"] = _plain(attrs["finished_at"])
        if "invalidated_at" in attrs:
            attrs["invalidated_at"] = _plain(attrs["invalidated_at"])
        attrs["readable"] = True
        attrs["invalidated"] = row["invalidated_at"] is not None
        return self.node(row["uuid"], kind="job", **attrs)

    def collection(self, pdh: str) -> str:
        return self.node(pdh, kind="collection")

    def sources(self, row: dict[str, Any]) -> None:
        """The tree and image a readable job ran."""
        if row["repository"] and row["script_version"]:
            commit = f"commit:{row['repository']}@{row['script_version']}"
            self.node(
                commit, kind="commit", repository=row["repository"], commit=row["script_version"]
            )
            self.edge(commit, row["uuid"], "ran")
        if row["working_dir"]:
            self.node(row["working_dir"], kind="working_dir")
            self.edge(row["working_dir"], row["uuid"], "ran")
        if row["docker_image_locator"]:
            image = f"image:{row['docker_image_locator']}"
            self.node(image, kind="image", portable_data_hash=row["docker_image_locator"])
            self.edge(image, row["uuid"], "image")

    def products(self, row: dict[str, Any]) -> None:
        if row["output"]:
            self.edge(row["uuid"], self.collection(row["output"]), "output")
        if row["log"]:
            self.edge(row["uuid"], self.collection(row["log"]), "log")

    def reuses(self, uuids: list[str]) -> None:
        if not uuids:
            return
        shown: dict[str, int] = {}
        for reuse in JobReuse.objects.filter(job_uuid__any=set(uuids)).order_by(
            "-created_at", "-id"
        ):
            if shown.get(reuse.job_uuid, 0) >= REUSES_PER_JOB:
                continue
            shown[reuse.job_uuid] = shown.get(reuse.job_uuid, 0) + 1
            node = self.node(
                f"reuse:{reuse.pk}",
                kind="reuse",
                user_uuid=reuse.reused_by_user_uuid,
                door=reuse.door,
                created_at=_plain(reuse.created_at),
                saved_core_seconds=reuse.saved_core_seconds,
            )
            self.edge(reuse.job_uuid, node, "reused_by")

    def finish(self, *, root: str, depth: int, direction: str) -> dict[str, Any]:
        self.reuses(self.walked)
        pdhs = {n["id"] for n in self.nodes.values() if n["kind"] in ("collection", "working_dir")}
        # Readable (§6.1: at least one readable, untrashed collection with the hash) and
        # the name of one of them, in one query.
        readable: set[str] = set()
        names: dict[str, str] = {}
        if pdhs:
            rows = list(
                Collection.objects.filter(portable_data_hash__any=pdhs, is_trashed=False)
                .order_by()
                .values_list("portable_data_hash", "name", "owner_uuid", "uuid")
            )
            allowed = permissions.readable_among(self.user, ((r[2], r[3]) for r in rows))
            for pdh, name, _, uuid in rows:
                if uuid in allowed:
                    readable.add(pdh)
                    if name and pdh not in names:
                        names[pdh] = name
        for n in self.nodes.values():
            if n["kind"] in ("collection", "working_dir"):
                n["readable"] = n["id"] in readable
                if n["id"] in names:
                    n["name"] = names[n["id"]]
        return {
            "kind": "arvados#provenance",
            "root": root,
            "direction": direction,
            "depth": depth,
            "nodes": list(self.nodes.values()),
            "edges": [{"from": s, "to": t, "kind": k} for s, t, k in self.edges],
            "truncated": self.truncated,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def _jobs(queryset: Any, user: User | None = None) -> list[dict[str, Any]]:
    """The jobs' attributes; with `user`, each row's `readable` says whether `user` may read
    it (`permissions.readable_among`: the rule applied to the rows, not in their query)."""
    rows = list(queryset.values(*JOB_FIELDS))
    if user is not None:
        readable = permissions.readable_among(user, ((r["owner_uuid"], r["uuid"]) for r in rows))
        for row in rows:
            row["readable"] = row["uuid"] in readable
    return rows


def _readable_uuids(user: User, uuids: Iterable[str]) -> set[str]:
    wanted = list(set(uuids))
    if not wanted:
        return set()
    if user.is_admin:
        return set(wanted)
    return set(
        restrict_readable(Job.objects.filter(uuid__any=wanted), [user]).values_list(
            "uuid", flat=True
        )
    )


def resolve_root(user: User, ident: str) -> tuple[str, str]:
    """("job", uuid) or ("collection", pdh) for a job uuid, a collection uuid or a PDH that
    `user` may read; NotFound otherwise."""
    if _PDH.match(ident):
        if not readable_pdhs(user, {ident}) and not _readable_uuids(
            user, Job.objects.filter(output=ident).values_list("uuid", flat=True)[:100]
        ):
            raise NotFound(f"Collection {ident} not found")
        return "collection", ident
    job = readable_object(Job.objects.only("uuid", "owner_uuid"), [user], ident)
    if job is not None:
        return "job", job.uuid
    collection = readable_object(
        Collection.objects.only("uuid", "owner_uuid", "portable_data_hash"), [user], ident
    )
    if collection is not None:
        return "collection", collection.portable_data_hash
    raise NotFound(f"{ident} not found")


def parse_depth(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_DEPTH
    try:
        depth = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"depth must be a whole number, not {value!r}") from None
    if depth < 0:
        raise InvalidRequest("depth must be at least 0")
    return min(depth, MAX_DEPTH)


def lineage(
    *, user: User, ident: str, depth: int = DEFAULT_DEPTH, downstream: bool = False
) -> dict[str, Any]:
    """The graph around `ident` (a job uuid, a collection uuid or a PDH), as `user` may see it."""
    kind, root = resolve_root(user, ident)
    graph = Graph(user)
    if kind == "job":
        row = _jobs(Job.objects.filter(uuid=root))[0]
        graph.job(row, True)
        graph.sources(row)
        graph.products(row)
        graph.walked.append(root)
        jobs = [row]
    else:
        graph.collection(root)
        jobs = []
    if downstream:
        frontier = {j["output"] for j in jobs if j["output"]} if kind == "job" else {root}
        _walk_down(graph, frontier, depth)
    else:
        if kind == "job":
            frontier = _inputs_into(graph, [root])
            depth_left = depth - 1
        else:
            frontier, depth_left = {root}, depth
        _walk_up(graph, frontier, depth_left)
    return graph.finish(
        root=root, depth=depth, direction="downstream" if downstream else "upstream"
    )


def _inputs_into(graph: Graph, uuids: list[str]) -> set[str]:
    """Edges from the collections these (readable) jobs read; returns their PDHs."""
    found = set()
    for pdh, job_uuid, kind in JobInput.objects.filter(job_uuid__any=set(uuids)).values_list(
        "portable_data_hash", "job_uuid", "kind"
    ):
        if kind == "working_dir":
            continue  # shown as what the job ran (`sources`)
        graph.edge(graph.collection(pdh), job_uuid, "input")
        found.add(pdh)
    return found


def _walk_up(graph: Graph, frontier: set[str], depth: int) -> None:
    seen: set[str] = set()
    for _ in range(max(depth, 0)):
        frontier -= seen
        seen |= frontier
        if not frontier or graph.truncated:
            return
        producers = _jobs(
            Job.objects.filter(output__any=frontier).order_by("created_at", "id"), graph.user
        )
        readable = {r["uuid"] for r in producers if r.pop("readable")}
        walk_on = []
        for row in producers:
            node = graph.job(row, row["uuid"] in readable)
            graph.edge(node, row["output"], "output")
            if row["uuid"] in readable:
                graph.sources(row)
                graph.products(row)
                walk_on.append(row["uuid"])
        graph.walked.extend(walk_on)
        frontier = _inputs_into(graph, walk_on)


def _walk_down(graph: Graph, frontier: set[str], depth: int) -> None:
    seen: set[str] = set()
    for _ in range(max(depth, 0)):
        frontier -= seen
        seen |= frontier
        if not frontier or graph.truncated:
            return
        reads = list(
            JobInput.objects.filter(portable_data_hash__any=frontier).values_list(
                "portable_data_hash", "job_uuid"
            )
        )
        consumers = _jobs(Job.objects.filter(uuid__any={u for _, u in reads}), graph.user)
        readable = {r["uuid"] for r in consumers if r.pop("readable")}
        by_uuid = {row["uuid"]: row for row in consumers}
        for pdh, job_uuid in reads:
            row = by_uuid.get(job_uuid)
            if row is not None:
                graph.edge(graph.collection(pdh), graph.job(row, job_uuid in readable), "input")
        frontier = set()
        walk_on = []
        for row in consumers:
            if row["uuid"] in readable:
                graph.sources(row)
                graph.products(row)
                walk_on.append(row["uuid"])
                if row["output"]:
                    frontier.add(row["output"])
        graph.walked.extend(walk_on)


# --- invalidation -----------------------------------------------------------------------


def invalidate(*, user: User, uuid: str, reason: Any) -> Job:
    """Mark `uuid`'s output as bad: it is never reused again, and `explain` says why. Admins
    only (the original's answer was to flip the job to Cancelled by hand)."""
    if not user.is_admin:
        raise PermissionDenied("Only an admin can invalidate a job's output")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("reason must be a non-empty string: why the output is bad")
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(uuid=uuid).first()
        if job is None:
            raise NotFound(f"Job {uuid} not found")
        job.invalidated_at = timezone.now()
        job.invalidated_by_user_uuid = user.uuid
        job.invalidated_reason = reason.strip()[:2000]
        job.save(update_fields=["invalidated_at", "invalidated_by_user_uuid", "invalidated_reason"])
    return job
