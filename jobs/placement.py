"""Placement: which live node may run a job, and, when none can, why, node by node.

A job asks (`runtime_constraints`) for resources and for node labels:

- `vcpus` (a number > 0, fractions allowed) or the original `min_cores_per_node`;
- `ram` (bytes) or the original `min_ram_mb_per_node` (MiB); `gpus` (a count);
- `node`: one node's uuid, for work meant for that node alone (a per-node instance of a job
  template);
- `constraints`: a list whose items are label selectors, either objects
  `{"key": "region", "operator": "in", "values": ["us-west-2", "us-east-1"]}` or selector text
  (`"region=us-west-2"`, `"tier in (a,b)"`, `"!spot"`; a bare word such as `"fast"` means
  the label exists, which is what the original list of labels meant).

A node offers what its worker registered (`NodeView`): CPUs, RAM, GPUs, and labels, a dict
from CRUNCH_WORKER_LABELS (`key=value`; a bare word `w` is the label `w` with the value
`true`) plus the automatic `arch`, `os`, `hostname`, `cpus`, `memory` (GiB) and `gpus`.

The operators, one table (`OPERATORS`), with Kubernetes' label-selector meaning (Bacalhau's
constraints use the same): `=`, `!=`, `in`, `notin`, `exists`, `!exists`, `gt`, `lt`. A node
without the label satisfies `!=`, `notin` and `!exists` only; `gt`/`lt` compare numbers.

`node_problems` says why one node does not fit; `verdict` sums up a set of nodes in the text
that `scheduling_status`, the queue page, the job's log and `crunch submit --follow` show:

    no suitable node: requested 1, available 2, suitable 0; node-a: region=eu-west-1 does not
    satisfy region = us-west-2; node-b: memory 8 GiB < 16 GiB

Everything here but `live_nodes` works on plain data, so front doors can ask at submit time.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.exceptions import InvalidRequest

MiB = 1024**2
GiB = 1024**3
MAX_CONSTRAINTS = 100
NODES_NAMED = 20  # nodes a verdict names one by one; the rest are counted
AUTOMATIC_LABELS = ("arch", "os", "hostname", "cpus", "memory", "gpus")
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}\Z")
VALUE_RE = re.compile(r"^[^\x00-\x1f\x7f,()]{0,255}\Z")
TRUE = "true"  # the value of a bare-word label


# --- constraints --------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Operator:
    symbol: str  # how `Constraint.__str__` writes it
    arity: str  # "one", "some" (one or more), "none"
    test: Callable[[str | None, tuple[str, ...]], bool]  # label value (None: absent), values
    numeric: bool = False


def _compare(sign: int) -> Callable[[str | None, tuple[str, ...]], bool]:
    def test(label: str | None, values: tuple[str, ...]) -> bool:
        have = _number(label) if label is not None else None
        want = _number(values[0])
        return have is not None and want is not None and (have - want) * sign > 0

    return test


OPERATORS: dict[str, Operator] = {
    "=": Operator("=", "one", lambda v, vs: v is not None and v == vs[0]),
    "!=": Operator("!=", "one", lambda v, vs: v is None or v != vs[0]),
    "in": Operator("in", "some", lambda v, vs: v is not None and v in vs),
    "notin": Operator("notin", "some", lambda v, vs: v is None or v not in vs),
    "exists": Operator("", "none", lambda v, vs: v is not None),
    "!exists": Operator("!", "none", lambda v, vs: v is None),
    "gt": Operator(">", "one", _compare(1), numeric=True),
    "lt": Operator("<", "one", _compare(-1), numeric=True),
}
# Other spellings accepted in objects (Bacalhau's and Kubernetes' selectors use these).
ALIASES = {"==": "=", "!": "!exists", "not in": "notin", ">": "gt", "<": "lt"}


@dataclass(frozen=True)
class Constraint:
    """One label selector: `key operator values` (values are strings)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        op = OPERATORS[self.operator]
        if op.arity == "none":
            return f"{op.symbol}{self.key}"
        if op.arity == "some":
            return f"{self.key} {op.symbol} ({', '.join(self.values)})"
        return f"{self.key} {op.symbol} {self.values[0]}"

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "operator": self.operator, "values": list(self.values)}

    def satisfied_by(self, labels: Mapping[str, str]) -> bool:
        return OPERATORS[self.operator].test(labels.get(self.key), self.values)

    def problem(self, labels: Mapping[str, str]) -> str | None:
        """Why `labels` do not satisfy this constraint, or None."""
        if self.satisfied_by(labels):
            return None
        have = labels.get(self.key)
        if have is None:
            if self.operator == "exists":
                return f"no label {self.key}"
            return f"no label {self.key} for {self}"
        shown = f"{self.key}={have}"
        if OPERATORS[self.operator].numeric and _number(have) is None:
            return f"{shown} is not a number for {self}"
        return f"{shown} does not satisfy {self}"


def make_constraint(key: Any, operator: Any, values: Any, *, where: str) -> Constraint:
    """A validated Constraint; InvalidRequest names `where` and what is wrong."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise InvalidRequest(
            f"{where}: the key {_shown(key)} must be a label name (letters, digits, '.', '_',"
            " '-', '/'; starting with a letter or digit)"
        )
    if not isinstance(operator, str):
        raise InvalidRequest(f"{where}: the operator must be a string, not {_shown(operator)}")
    name = ALIASES.get(operator.strip().lower(), operator.strip().lower())
    op = OPERATORS.get(name)
    if op is None:
        raise InvalidRequest(
            f"{where}: unknown operator {_shown(operator)} (one of {', '.join(OPERATORS)})"
        )
    if values is None:
        values = []
    if not isinstance(values, list | tuple):
        raise InvalidRequest(f"{where}: values must be a list, not {_shown(values)}")
    texts: list[str] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidRequest(f"{where}: the value {_shown(value)} must be a string")
        text = value if isinstance(value, str) else _format_number(value)
        if not VALUE_RE.match(text):
            raise InvalidRequest(
                f"{where}: the value {_shown(text)} must be at most 255 characters, without"
                " control characters, commas or parentheses"
            )
        texts.append(text)
    if op.arity == "none" and texts:
        raise InvalidRequest(f"{where}: {name} takes no values")
    if op.arity == "one" and len(texts) != 1:
        raise InvalidRequest(f"{where}: {name} takes exactly one value, not {len(texts)}")
    if op.arity == "some" and not texts:
        raise InvalidRequest(f"{where}: {name} needs at least one value")
    if op.numeric and _number(texts[0]) is None:
        raise InvalidRequest(f"{where}: {name} compares numbers, and {_shown(texts[0])} is not one")
    return Constraint(key, name, tuple(texts))


_SET_RE = re.compile(r"^(?P<key>[^\s!=<>()]+)\s+(?P<op>in|notin|not\s+in)\s*\((?P<values>.*)\)\Z")
_BINARY_RE = re.compile(r"^(?P<key>[^\s!=<>()]+)\s*(?P<op>==|!=|=|>|<)\s*(?P<value>.*)\Z")
_UNARY_RE = re.compile(r"^(?P<not>!)?\s*(?P<key>[^\s!=<>()]+)\Z")


def parse_selector(text: Any, *, where: str = "constraint") -> Constraint:
    """Selector text, as `crunch submit --constraint` and the items of a constraints list
    take it: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does
    not exist), `k>N`, `k<N`. InvalidRequest says what is wrong."""
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}: {_shown(text)} is not selector text")
    stripped = text.strip()
    if match := _SET_RE.match(stripped):
        values = [v.strip() for v in match["values"].split(",")]
        if any(v == "" for v in values):
            raise InvalidRequest(f"{where}: {_shown(text)} has an empty value in its list")
        op = "notin" if match["op"] != "in" else "in"
        return make_constraint(match["key"], op, values, where=where)
    if match := _BINARY_RE.match(stripped):
        return make_constraint(match["key"], match["op"], [match["value"].strip()], where=where)
    if match := _UNARY_RE.match(stripped):
        op = "!exists" if match["not"] else "exists"
        return make_constraint(match["key"], op, [], where=where)
    raise InvalidRequest(
        f"{where}: cannot read {_shown(text)}; write k=v, k!=v, 'k in (a,b)', 'k notin (a,b)',"
        " k, !k, k>N or k<N"
    )


def parse_constraints(value: Any) -> list[Constraint]:
    """`runtime_constraints.constraints` as Constraints: a list of selector objects
    (`{"key", "operator", "values"}`) and selector text (a bare word: the label exists).
    A single string is one item. InvalidRequest names the bad item."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InvalidRequest(
            f"runtime_constraints.constraints must be a list of selectors, not {_shown(value)}"
        )
    if len(items) > MAX_CONSTRAINTS:
        raise InvalidRequest(
            f"runtime_constraints.constraints has {len(items)} items (at most {MAX_CONSTRAINTS})"
        )
    parsed = []
    for index, item in enumerate(items):
        where = f"runtime_constraints.constraints[{index}]"
        if isinstance(item, str):
            parsed.append(parse_selector(item, where=where))
        elif isinstance(item, dict):
            unknown = sorted(set(item) - {"key", "operator", "values"})
            if unknown:
                raise InvalidRequest(f"{where}: unknown field {_shown(unknown[0])}")
            for name in ("key", "operator"):
                if name not in item:
                    raise InvalidRequest(f"{where}: {name} is missing")
            parsed.append(
                make_constraint(item["key"], item["operator"], item.get("values"), where=where)
            )
        else:
            raise InvalidRequest(
                f"{where}: {_shown(item)} is neither selector text nor a"
                ' {"key", "operator", "values"} object'
            )
    return parsed


# --- what a job asks for ---------------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    cpus: float = 0.0
    ram: int = 0  # bytes
    gpus: int = 0
    constraints: tuple[Constraint, ...] = ()
    # Custom resources by name (`{"NPU": 1}`), matched against what nodes offer.
    resources: tuple[tuple[str, float], ...] = ()
    node: str | None = None  # one node (its uuid) and no other: a per-node instance

    @classmethod
    def of(cls, runtime_constraints: Any) -> Requirements:
        """From a job's runtime_constraints; InvalidRequest names a bad value. When both a
        new key and its original one are given, the larger need counts."""
        if runtime_constraints is None:
            return cls()
        if not isinstance(runtime_constraints, dict):
            raise InvalidRequest("runtime_constraints must be an object")
        rc = runtime_constraints
        cpus = max(
            _amount(rc, "vcpus", positive=True),
            _amount(rc, "min_cores_per_node"),
        )
        ram = max(
            int(_amount(rc, "ram", integer=True, positive=True)),
            int(_amount(rc, "min_ram_mb_per_node") * MiB),
        )
        gpus = int(_amount(rc, "gpus", integer=True))
        return cls(
            cpus,
            ram,
            gpus,
            tuple(parse_constraints(rc.get("constraints"))),
            parse_resources(rc.get("resources")),
            _node(rc.get("node")),
        )


RESOURCE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,62}\Z")


def parse_resources(value: Any) -> tuple[tuple[str, float], ...]:
    """`runtime_constraints.resources`: custom resources by name, each a number at least 0
    (zero amounts ask for nothing and are dropped)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"runtime_constraints.resources must be an object of numbers, not {_shown(value)}"
        )
    wanted = []
    for name, amount in sorted(value.items()):
        if not isinstance(name, str) or not RESOURCE_NAME_RE.match(name):
            raise InvalidRequest(f"runtime_constraints.resources: {_shown(name)} is not a name")
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise InvalidRequest(
                f"runtime_constraints.resources.{name} must be a number at least 0, "
                f"not {_shown(amount)}"
            )
        if amount > 0:
            wanted.append((name, float(amount)))
    return tuple(wanted)


def _node(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(
        r"^[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{15}\Z", value
    ):
        raise InvalidRequest(f"runtime_constraints.node must be a node uuid, not {_shown(value)}")
    return value


def _amount(
    rc: dict[str, Any], key: str, *, integer: bool = False, positive: bool = False
) -> float:
    value = rc.get(key)
    if value is None:
        return 0
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"runtime_constraints.{key} must be {kind}, not {_shown(value)}")
    if integer and value != int(value):
        raise InvalidRequest(f"runtime_constraints.{key} must be {kind}, not {_shown(value)}")
    if value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "at least 0"
        raise InvalidRequest(f"runtime_constraints.{key} must be {bound}, not {_shown(value)}")
    return float(value)


# --- what a node offers ------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeView:
    uuid: str
    hostname: str
    cpus: float
    ram_bytes: int
    gpus: int
    labels: dict[str, str] = field(hash=False)
    slots: int = 1
    resources: dict[str, float] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, node: Any) -> NodeView:
        """From a Node row (`uuid`, `hostname`, `info`). `info` is client-writable JSON, so
        anything of the wrong type counts as absent. Rows written before labels had values
        (`cores`, `ram_mb`, `concurrency`, a list of labels) read as well."""
        info = node.info if isinstance(node.info, dict) else {}
        raw_labels = info.get("labels")
        labels: dict[str, str] = {}
        if isinstance(raw_labels, dict):
            labels = {str(k): str(v) for k, v in raw_labels.items()}
        elif isinstance(raw_labels, list):
            labels = {str(k): TRUE for k in raw_labels}
        ram = _count(info.get("ram_bytes"))
        if ram is None:
            ram = (_count(info.get("ram_mb")) or 0) * MiB
        return cls(
            uuid=node.uuid,
            hostname=node.hostname or node.uuid,
            cpus=float(_count(info.get("cpus"), real=True) or _count(info.get("cores")) or 0),
            ram_bytes=int(ram),
            gpus=int(_count(info.get("gpus")) or 0),
            labels=labels,
            slots=int(_count(info.get("slots")) or _count(info.get("concurrency")) or 1),
            resources={
                str(k): float(v)
                for k, v in (info.get("resources") or {}).items()
                if _count(v, real=True) is not None
            }
            if isinstance(info.get("resources"), dict)
            else {},
        )


def _count(value: Any, *, real: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    if not real and value != int(value):
        return None
    return value


def node_labels(
    *,
    configured: Mapping[str, str],
    arch: str,
    os_name: str,
    hostname: str,
    cpus: float,
    ram_bytes: int,
    gpus: int,
) -> dict[str, str]:
    """A node's labels: the configured ones plus the automatic ones."""
    return dict(configured) | {
        "arch": arch,
        "os": os_name,
        "hostname": hostname,
        "cpus": _format_number(cpus),
        "memory": _format_number(math.floor(ram_bytes / GiB * 10) / 10),
        "gpus": str(gpus),
    }


def parse_labels(text: str, *, name: str = "CRUNCH_WORKER_LABELS") -> dict[str, str]:
    """`key=value,word,...` (a bare word is the label `word` with the value `true`); a
    ValueError names `name` and the bad part. Automatic labels cannot be set."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip() if sep else TRUE
        if not KEY_RE.match(key):
            raise ValueError(f"{name}: {part!r} must be key=value or a word (a label name)")
        if not VALUE_RE.match(value):
            raise ValueError(f"{name}: the value in {part!r} has control characters")
        if key in AUTOMATIC_LABELS:
            raise ValueError(f"{name}: {key} is set automatically and cannot be configured")
        labels[key] = value
    return labels


# --- the verdict -----------------------------------------------------------------------------


def human_bytes(size: float) -> str:
    """`16 GiB`, `1.5 GiB`, `512 MiB`."""
    if size >= GiB:
        return f"{_format_number(round(size / GiB, 1))} GiB"
    return f"{_format_number(round(size / MiB, 1))} MiB"


def node_problems(req: Requirements, node: NodeView) -> list[str]:
    """Why `node` cannot run a job with `req`; empty when it can (busy or not)."""
    problems = []
    if req.node is not None and req.node != node.uuid:
        problems.append(f"not node {req.node}")
    if req.cpus > node.cpus:
        problems.append(f"cpus {_format_number(node.cpus)} < {_format_number(req.cpus)}")
    if req.ram > node.ram_bytes:
        problems.append(f"memory {human_bytes(node.ram_bytes)} < {human_bytes(req.ram)}")
    if req.gpus > node.gpus:
        problems.append(f"gpus {node.gpus} < {req.gpus}")
    for name, amount in req.resources:
        have = node.resources.get(name, 0.0)
        if amount > have:
            problems.append(f"{name} {_format_number(have)} < {_format_number(amount)}")
    for constraint in req.constraints:
        problem = constraint.problem(node.labels)
        if problem is not None:
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class Verdict:
    suitable: list[NodeView]
    message: str | None  # None when enough nodes fit (even if they are busy)


def verdict(req: Requirements, nodes: Sequence[NodeView], requested: int = 1) -> Verdict:
    """Which of `nodes` can run a job with `req`, and when fewer than `requested` can, why
    not, node by node (by host name)."""
    suitable = []
    reasons = []
    for node in sorted(nodes, key=lambda n: (n.hostname, n.uuid)):
        problems = node_problems(req, node)
        if problems:
            reasons.append(f"{node.hostname}: {', '.join(problems)}")
        else:
            suitable.append(node)
    if len(suitable) >= requested:
        return Verdict(suitable, None)
    parts = [
        f"no suitable node: requested {requested}, available {len(nodes)},"
        f" suitable {len(suitable)}",
        *reasons[:NODES_NAMED],
    ]
    if len(reasons) > NODES_NAMED:
        parts.append(f"and {len(reasons) - NODES_NAMED} more nodes")
    return Verdict(suitable, "; ".join(parts))


def unplaceable_verdict(problem: InvalidRequest) -> Verdict:
    """The verdict for a job whose runtime_constraints cannot be read (a row written before
    they were checked)."""
    return Verdict([], f"no suitable node: {problem}")


# --- live nodes ----------------------------------------------------------------------------


def live_nodes(now: dt.datetime | None = None) -> Any:
    """Nodes whose worker heartbeat within CRUNCH_WORKER_TTL (a Node queryset)."""
    from django.conf import settings
    from django.utils import timezone

    from jobs.models import Node

    cutoff = (now or timezone.now()) - dt.timedelta(seconds=settings.CRUNCH_WORKER_TTL)
    return Node.objects.filter(last_ping_at__gte=cutoff)


def live_node_views(now: dt.datetime | None = None) -> list[NodeView]:
    return [NodeView.of(n) for n in live_nodes(now)]


# --- helpers -------------------------------------------------------------------------------


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.15g}"


def _shown(value: Any) -> str:
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
