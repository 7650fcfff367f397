"""A lineage graph (jobs/provenance.py) drawn as SVG on the server, for the admin's job and
collection pages: no script, no external service.

Layout: columns by steps from the shown object along the walk (upstream: what produced it
to the left; downstream: what used it to the right), one box per node, in the order the walk
found them; edges are arrows labelled with their kind. Each job and collection box links to
its admin page; a job the viewer cannot read is a grey dashed box with no link. Very large
graphs are cut to the nearest MAX_DRAWN nodes, and the drawing says so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

MAX_DRAWN = 120
BOX_W, BOX_H = 200, 38
COL_GAP, ROW_GAP, MARGIN = 46, 12, 10

FILL = {
    "Complete": "#dff3e0",
    "Failed": "#fbe1e1",
    "Running": "#def1f7",
    "Queued": "#fdf5d8",
    "Cancelled": "#eeeeee",
}
KIND_FILL = {
    "collection": "#eef3fb",
    "working_dir": "#eef3fb",
    "commit": "#f4effa",
    "image": "#f4effa",
    "reuse": "#fff8e6",
}


def _labels(node: dict[str, Any]) -> tuple[str, str]:
    kind = node["kind"]
    if kind == "job":
        if not node.get("readable"):
            return "job", "not readable by you"
        what = " ".join(node["command"]) if node.get("command") else str(node.get("script"))
        state = node.get("state", "")
        if node.get("invalidated"):
            state += ", INVALIDATED"
        return f"{node['id']}", f"{state} [{node.get('door')}] {what}"
    if kind in ("collection", "working_dir"):
        title = "working dir" if kind == "working_dir" else "collection"
        return node["id"], f"{title}: {node.get('name') or ''}".rstrip(": ")
    if kind == "commit":
        return f"commit {node['commit'][:12]}", node["repository"]
    if kind == "image":
        return "image", node["portable_data_hash"]
    if kind == "reuse":
        hours = (node.get("saved_core_seconds") or 0) / 3600
        return f"reused via {node['door']}", f"{node['created_at'][:19]}, saved {hours:.2f} core-h"
    return kind, node["id"]


def _clip(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def lineage_svg(
    graph: dict[str, Any], *, link_for: Callable[[dict[str, Any]], str | None]
) -> SafeString:
    nodes = {n["id"]: n for n in graph["nodes"]}
    upstream = graph["direction"] == "upstream"
    # Columns: one step per edge along the walk's direction (upstream: from a node to what
    # it came from); what hangs off a job the other way (its log, its reuses, the commit it
    # ran downstream) goes one column back.
    along: dict[str, list[str]] = {}
    against: dict[str, list[str]] = {}
    for edge in graph["edges"]:
        near, far = (edge["to"], edge["from"]) if upstream else (edge["from"], edge["to"])
        along.setdefault(near, []).append(far)
        against.setdefault(far, []).append(near)
    column = {graph["root"]: 0}
    queue = deque([graph["root"]])
    while queue and len(column) < MAX_DRAWN:
        here = queue.popleft()
        for other in along.get(here, []):
            if other not in column and other in nodes and len(column) < MAX_DRAWN:
                column[other] = column[here] + 1
                queue.append(other)
    for here in list(column):
        for other in against.get(here, []):
            if other not in column and other in nodes and len(column) < MAX_DRAWN:
                column[other] = column[here] - 1
    low = min(column.values())
    columns = max(column.values()) - low + 1
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    for node_id, col in column.items():
        col -= low
        row = rows.get(col, 0)
        rows[col] = row + 1
        x_col = (columns - 1 - col) if upstream else col
        place[node_id] = (
            MARGIN + x_col * (BOX_W + COL_GAP),
            MARGIN + row * (BOX_H + ROW_GAP),
        )
    width = MARGIN * 2 + columns * BOX_W + (columns - 1) * COL_GAP
    height = MARGIN * 2 + max(rows.values()) * (BOX_H + ROW_GAP)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="crunch-lineage" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        'font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#888"/></marker></defs>',
    ]
    for edge in graph["edges"]:
        if edge["from"] not in place or edge["to"] not in place:
            continue
        (x1, y1), (x2, y2) = place[edge["from"]], place[edge["to"]]
        if x1 < x2:
            sx, tx = x1 + BOX_W, x2
        elif x1 > x2:
            sx, tx = x1, x2 + BOX_W
        else:
            sx, tx = x1 + BOX_W, x2 + BOX_W
        sy, ty = y1 + BOX_H // 2, y2 + BOX_H // 2
        parts.append(
            f'<line class="edge edge-{escape(edge["kind"])}" x1="{sx}" y1="{sy}" x2="{tx}" '
            f'y2="{ty}" stroke="#999" marker-end="url(#arrow)"/>'
            f'<text x="{(sx + tx) // 2}" y="{(sy + ty) // 2 - 3}" fill="#777" font-size="9" '
            f'text-anchor="middle">{escape(edge["kind"])}</text>'
        )
    for node_id, (x, y) in place.items():
        node = nodes[node_id]
        first, second = _labels(node)
        hidden = node["kind"] == "job" and not node.get("readable")
        fill = (
            "#f2f2f2"
            if hidden
            else FILL.get(node.get("state", ""), KIND_FILL.get(node["kind"], "#fff"))
        )
        stroke = "#c33" if node.get("invalidated") else ("#aaa" if hidden else "#789")
        dash = ' stroke-dasharray="4 3"' if hidden else ""
        box = (
            f'<g class="node node-{escape(node["kind"])}" data-id="{escape(node_id)}">'
            f"<title>{escape(first)}\n{escape(second)}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" fill="{fill}" '
            f'stroke="{stroke}"{dash}/>'
            f'<text x="{x + 7}" y="{y + 15}" font-weight="bold">{escape(_clip(first))}</text>'
            f'<text x="{x + 7}" y="{y + 30}" fill="#444">{escape(_clip(second, 33))}</text></g>'
        )
        url = None if hidden else link_for(node)
        parts.append(f'<a href="{escape(url)}">{box}</a>' if url else box)
    parts.append("</svg>")
    omitted = len(nodes) - len(place)
    note = (
        f'<p class="help">{omitted} more nodes are not drawn: see <code>crunch provenance '
        f"{escape(graph['root'])}</code>.</p>"
        if omitted > 0
        else ""
    )
    return mark_safe("".join(parts) + note)


ADMIN_DEPTH = 3


def admin_lineage(user: Any, ident: str) -> dict[str, SafeString]:
    """The drawings for an admin page: what produced `ident` and what used it, with each
    job and collection linked to its admin page."""
    from django.urls import reverse

    from jobs.exceptions import CrunchError
    from jobs.models import Collection, Job
    from jobs.provenance import lineage

    try:
        graphs = {
            "upstream": lineage(user=user, ident=ident, depth=ADMIN_DEPTH),
            "downstream": lineage(user=user, ident=ident, depth=ADMIN_DEPTH, downstream=True),
        }
    except CrunchError:  # not readable by this staff user: no drawing
        return {}
    ids = {n["id"] for g in graphs.values() for n in g["nodes"]}
    job_pks = dict(Job.objects.filter(uuid__any=ids).values_list("uuid", "pk"))
    collection_pks: dict[str, int] = {}
    for pdh, pk in Collection.objects.filter(portable_data_hash__any=ids).values_list(
        "portable_data_hash", "pk"
    ):
        collection_pks.setdefault(pdh, pk)

    def link_for(node: dict[str, Any]) -> str | None:
        if node["id"] in job_pks:
            return reverse("admin:jobs_job_change", args=[job_pks[node["id"]]])
        if node["id"] in collection_pks:
            return reverse("admin:jobs_collection_change", args=[collection_pks[node["id"]]])
        return None

    return {name: lineage_svg(g, link_for=link_for) for name, g in graphs.items()}
