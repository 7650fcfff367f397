"""`crunch provenance` (a result's lineage as a tree, Graphviz DOT or JSON) and `crunch reuse`
(what reuse saved), over `/arvados/v1/{jobs,collections}/{id}/provenance|used_by` and
`/arvados/v1/jobs/reuse_summary`."""

from __future__ import annotations

import argparse
import io
import re
import sys
from typing import Any
from urllib.parse import quote

from crunch.client import ApiClient
from crunch.output import EXIT_OK, RED, Output, print_json, run_command

_PDH = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")


def _resource(ident: str) -> str:
    """Which resource an identifier names: a PDH or a collection uuid (`-4zz18-`) is a
    collection; anything else is asked of jobs."""
    return "collections" if _PDH.match(ident) or "-4zz18-" in ident else "jobs"


def describe(node: dict[str, Any], out: Output) -> str:
    kind = node["kind"]
    if kind == "job":
        if not node.get("readable"):
            return "job (not readable by you)"
        if node.get("command"):
            what = " ".join(node["command"])
        else:
            commit = (node.get("script_version") or "")[:12]
            what = f"{node.get('script')} {node.get('repository')}@{commit}"
        text = f"job {node['id']} {out.state(node.get('state'))} [{node.get('door')}] {what}"
        if node.get("invalidated"):
            text += " " + out.paint(f"INVALIDATED: {node.get('invalidated_reason')}", RED)
        return text
    if kind in ("collection", "working_dir"):
        label = "working dir" if kind == "working_dir" else "collection"
        name = f" {node['name']}" if node.get("name") else ""
        unread = "" if node.get("readable") else " (not readable by you)"
        return f"{label} {node['id']}{name}{unread}"
    if kind == "commit":
        return f"commit {node['repository']}@{node['commit']}"
    if kind == "image":
        return f"image {node['portable_data_hash']}"
    if kind == "reuse":
        hours = (node.get("saved_core_seconds") or 0) / 3600
        return (
            f"reused by {node['user_uuid']} via {node['door']} at {out.when(node['created_at'])}"
            f" (saved {hours:.2f} core-hours)"
        )
    return f"{kind} {node['id']}"


def print_tree(graph: dict[str, Any], out: Output) -> None:
    nodes = {n["id"]: n for n in graph["nodes"]}
    downstream = graph["direction"] == "downstream"
    children: dict[str, list[tuple[str, str]]] = {}
    for edge in graph["edges"]:
        if edge["kind"] == "reused_by":
            children.setdefault(edge["from"], []).append((edge["to"], edge["kind"]))
        elif downstream:
            if edge["kind"] in ("input", "output"):
                children.setdefault(edge["from"], []).append((edge["to"], edge["kind"]))
        else:
            children.setdefault(edge["to"], []).append((edge["from"], edge["kind"]))
    shown: set[str] = set()
    words = {
        ("output", False): "output of",
        ("log", False): "log of",
        ("input", False): "input",
        ("ran", False): "ran",
        ("image", False): "image",
        ("reused_by", False): "",
        ("input", True): "read by",
        ("output", True): "output",
        ("reused_by", True): "",
    }

    def walk(node_id: str, prefix: str, label: str) -> None:
        node = nodes.get(node_id)
        if node is None:
            return
        text = (f"{label}: " if label else "") + describe(node, out)
        if node_id in shown and children.get(node_id):
            out.line(f"{prefix}{text} (shown above)")
            return
        out.line(prefix + text)
        shown.add(node_id)
        for child, kind in children.get(node_id, []):
            if not downstream and kind == "log":
                continue  # a job's own log is not where its result came from
            walk(child, prefix + "  ", words.get((kind, downstream), kind))

    walk(graph["root"], "", "")
    if graph.get("truncated"):
        out.line("(the graph was cut off: it has more nodes than the server returns)")


def to_dot(graph: dict[str, Any]) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    plain = Output(io.StringIO(), environ={})
    shapes = {"job": "box", "reuse": "note", "commit": "component", "image": "cylinder"}
    lines = ["digraph provenance {", "  rankdir=LR;"]
    for node in graph["nodes"]:
        label = describe(node, plain)
        shape = shapes.get(node["kind"], "ellipse")
        lines.append(f"  {quoted(node['id'])} [label={quoted(label)}, shape={shape}];")
    for edge in graph["edges"]:
        lines.append(
            f"  {quoted(edge['from'])} -> {quoted(edge['to'])} [label={quoted(edge['kind'])}];"
        )
    lines.append("}")
    return "\n".join(lines)


def cmd_provenance(args: argparse.Namespace) -> int:
    def body() -> int:
        method = "used_by" if args.downstream else "provenance"
        path = f"{_resource(args.ident)}/{quote(args.ident, safe='+')}/{method}"
        query = {"depth": str(args.depth)} if args.depth is not None else {}
        graph = ApiClient.from_env().call("GET", path, query=query)
        if args.json:
            print_json(graph)
        elif args.dot:
            print(to_dot(graph))
        else:
            out = Output(sys.stdout)
            print_tree(graph, out)
            out.flush()
        return EXIT_OK

    return run_command("provenance", body)


def cmd_reuse(args: argparse.Namespace) -> int:
    def body() -> int:
        query = {"since": args.since} if args.since else {}
        if args.by:
            query["by"] = args.by
        summary = ApiClient.from_env().call("GET", "jobs/reuse_summary", query=query)
        if args.json:
            print_json(summary)
            return EXIT_OK
        out = Output(sys.stdout)

        def reason(item: dict[str, Any]) -> str:
            top = item.get("top_miss_reason")
            return f"{top['reason']} ({top['count']})" if top else "-"

        out.fields(
            [
                ("since", summary.get("since") or "the beginning"),
                ("hits", str(summary["hits"])),
                ("misses", str(summary["misses"])),
                ("core-hours saved", f"{summary['core_hours_saved']:.2f}"),
                ("most common miss", reason(summary)),
            ]
        )
        if args.by:
            out.line()
            rows = [
                [
                    str(g["key"]),
                    str(g["hits"]),
                    str(g["misses"]),
                    f"{g['core_hours_saved']:.2f}",
                    reason(g),
                ]
                for g in summary["groups"]
            ]
            out.table([args.by.upper(), "HITS", "MISSES", "CORE-H SAVED", "MOST COMMON MISS"], rows)
        out.flush()
        return EXIT_OK

    return run_command("reuse", body)


def add_parsers(sub: Any) -> None:
    prov = sub.add_parser("provenance", help="what produced a result (or, --downstream, used it)")
    prov.add_argument("ident", metavar="PDH|UUID", help="a collection (PDH or uuid) or a job uuid")
    prov.add_argument("--depth", type=_depth, help="levels of jobs to walk (default 5)")
    prov.add_argument(
        "--downstream", action="store_true", help="what was built on it, not what produced it"
    )
    form = prov.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the graph as JSON (nodes and edges)")
    form.add_argument("--dot", action="store_true", help="the graph as Graphviz DOT")
    prov.set_defaults(func=cmd_provenance)

    reuse = sub.add_parser("reuse", help="what reuse saved: hits, misses, core-hours")
    reuse.add_argument("--since", metavar="7d|24h|2w|DATE", help="count from then on")
    reuse.add_argument("--by", choices=["user", "door", "project", "day", "week", "month"])
    reuse.add_argument("--json", action="store_true", help="the summary as JSON")
    reuse.set_defaults(func=cmd_reuse)


def _depth(text: str) -> int:
    try:
        depth = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if depth < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return depth
