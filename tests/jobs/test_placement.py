"""Placement on plain data: constraints (objects and selector text), requirements, node
views, and the per-node reasons of a verdict."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.exceptions import InvalidRequest
from jobs.placement import (
    OPERATORS,
    Constraint,
    GiB,
    MiB,
    NodeView,
    Requirements,
    human_bytes,
    node_labels,
    node_problems,
    parse_constraints,
    parse_labels,
    parse_selector,
    verdict,
)

LABELS = {"region": "eu-west-1", "tier": "b", "spot": "true", "cpus": "4", "memory": "7.7"}


def view(name: str, **kw: Any) -> NodeView:
    values: dict[str, Any] = {
        "uuid": f"zzzzz-7ekkf-{name:0>15}"[:27],
        "hostname": name,
        "cpus": 4,
        "ram_bytes": 8 * GiB,
        "gpus": 0,
        "labels": {},
        "slots": 1,
    } | kw
    return NodeView(**values)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("region=us-west-2", Constraint("region", "=", ("us-west-2",))),
        ("region == us-west-2", Constraint("region", "=", ("us-west-2",))),
        ("region!=us-west-2", Constraint("region", "!=", ("us-west-2",))),
        ("tier in (a,b)", Constraint("tier", "in", ("a", "b"))),
        ("tier in ( a , b )", Constraint("tier", "in", ("a", "b"))),
        ("tier notin (a)", Constraint("tier", "notin", ("a",))),
        ("tier not in (a,b)", Constraint("tier", "notin", ("a", "b"))),
        ("fast", Constraint("fast", "exists", ())),
        ("!spot", Constraint("spot", "!exists", ())),
        ("cpus>8", Constraint("cpus", "gt", ("8",))),
        ("memory < 15.5", Constraint("memory", "lt", ("15.5",))),
        ("topology.example.org/zone=a", Constraint("topology.example.org/zone", "=", ("a",))),
    ],
)
def test_selector_text(text: str, expected: Constraint) -> None:
    assert parse_selector(text) == expected
    # its written form reads back as the same constraint
    assert parse_selector(str(expected).replace(" > ", ">").replace(" < ", "<")) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "cannot read"),
        ("a b", "cannot read"),
        ("tier in ()", "empty value"),
        ("tier in (a,,b)", "empty value"),
        ("cpus>many", "compares numbers"),
        ("cpus<", "compares numbers"),
        ("-x=1", "label name"),
        ("x=a\x01", "control characters"),
        ("=v", "cannot read"),
    ],
)
def test_bad_selector_text_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_selector(text, where="--constraint")
    assert says in str(caught.value) and str(caught.value).startswith("--constraint")


def test_constraint_objects_and_the_legacy_list() -> None:
    parsed = parse_constraints(
        [
            "fast",
            "region=us-west-2",
            {"key": "tier", "operator": "in", "values": ["a", "b"]},
            {"key": "spot", "operator": "!exists"},
            {"key": "cpus", "operator": "gt", "values": [8]},
            {"key": "zone", "operator": "==", "values": ["a"]},
        ]
    )
    assert parsed == [
        Constraint("fast", "exists"),
        Constraint("region", "=", ("us-west-2",)),
        Constraint("tier", "in", ("a", "b")),
        Constraint("spot", "!exists"),
        Constraint("cpus", "gt", ("8",)),
        Constraint("zone", "=", ("a",)),
    ]
    assert parse_constraints("fast") == [Constraint("fast", "exists")]
    assert parse_constraints(None) == []
    assert parsed[2].as_json() == {"key": "tier", "operator": "in", "values": ["a", "b"]}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"a": 1}, "must be a list"),
        ([3], "[0]: 3 is neither selector text nor"),
        (["ok", {"key": "k", "operator": "~", "values": []}], '[1]: unknown operator "~"'),
        ([{"key": "k", "operator": "in"}], "[0]: in needs at least one value"),
        ([{"key": "k", "operator": "in", "values": []}], "[0]: in needs at least one value"),
        ([{"key": "k", "operator": "=", "values": ["a", "b"]}], "exactly one value, not 2"),
        ([{"key": "k", "operator": "exists", "values": ["a"]}], "exists takes no values"),
        ([{"key": "k", "operator": "gt", "values": ["x"]}], "gt compares numbers"),
        ([{"key": "k", "operator": "lt", "values": ["nan"]}], "lt compares numbers"),
        ([{"key": "k", "operator": "=", "values": "a"}], "values must be a list"),
        ([{"key": "k", "operator": "=", "values": [True]}], "must be a string"),
        ([{"key": "k", "operator": "=", "values": [None]}], "must be a string"),
        ([{"operator": "exists"}], "key is missing"),
        ([{"key": "k"}], "operator is missing"),
        ([{"key": "k", "operator": "exists", "Key": "x"}], 'unknown field "Key"'),
        ([{"key": "", "operator": "exists"}], "must be a label name"),
        ([{"key": "k", "operator": 3}], "operator must be a string"),
        (["x"] * 101, "at most 100"),
    ],
)
def test_bad_constraints_name_the_item(value: Any, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_constraints(value)
    assert "runtime_constraints.constraints" in str(caught.value)
    assert says in str(caught.value), str(caught.value)


@given(st.text(max_size=40))
def test_selector_text_is_read_or_refused_clearly(text: str) -> None:
    try:
        constraint = parse_selector(text)
    except InvalidRequest as exc:
        assert str(exc).startswith("constraint: ")
        return
    assert constraint.operator in OPERATORS
    assert parse_constraints([constraint.as_json()]) == [constraint]


@given(st.lists(st.one_of(st.text(max_size=10), st.integers(), st.none()), max_size=3))
def test_any_values_are_read_or_refused_clearly(values: list[Any]) -> None:
    for operator in OPERATORS:
        try:
            parse_constraints([{"key": "k", "operator": operator, "values": values}])
        except InvalidRequest as exc:
            assert str(exc).startswith("runtime_constraints.constraints[0]: ")


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("region=eu-west-1", True),
        ("region=us-west-2", False),
        ("zone=a", False),
        ("region!=us-west-2", True),
        ("region!=eu-west-1", False),
        ("zone!=a", True),
        ("tier in (a,b)", True),
        ("tier in (a,c)", False),
        ("zone in (a)", False),
        ("tier notin (a,c)", True),
        ("tier notin (b)", False),
        ("zone notin (a)", True),
        ("spot", True),
        ("gpu", False),
        ("!gpu", True),
        ("!spot", False),
        ("cpus>2", True),
        ("cpus>4", False),
        ("memory<8", True),
        ("memory<7", False),
        ("region>1", False),
        ("zone<1", False),
    ],
)
def test_each_operator_against_labels(text: str, fits: bool) -> None:
    constraint = parse_selector(text)
    assert constraint.satisfied_by(LABELS) is fits
    assert (constraint.problem(LABELS) is None) is fits


def test_the_reasons_read_like_the_constraint() -> None:
    def why(text: str) -> str | None:
        return parse_selector(text).problem(LABELS)

    assert why("region=us-west-2") == "region=eu-west-1 does not satisfy region = us-west-2"
    assert why("gpu") == "no label gpu"
    assert why("zone=a") == "no label zone for zone = a"
    assert why("!spot") == "spot=true does not satisfy !spot"
    assert why("tier in (a,c)") == "tier=b does not satisfy tier in (a, c)"
    assert why("cpus>4") == "cpus=4 does not satisfy cpus > 4"
    assert why("region>1") == "region=eu-west-1 is not a number for region > 1"


def test_requirements_new_and_original_keys() -> None:
    assert Requirements.of(None) == Requirements()
    req = Requirements.of({"vcpus": 0.5, "ram": 3 * GiB, "gpus": 1, "constraints": ["fast"]})
    assert (req.cpus, req.ram, req.gpus) == (0.5, 3 * GiB, 1)
    assert req.constraints == (Constraint("fast", "exists"),)
    legacy = Requirements.of({"min_cores_per_node": 2, "min_ram_mb_per_node": 512})
    assert (legacy.cpus, legacy.ram) == (2, 512 * MiB)
    both = Requirements.of({"vcpus": 1, "min_cores_per_node": 3, "ram": MiB})
    assert (both.cpus, both.ram) == (3, MiB)
    # other runtime constraints are not placement's business
    assert Requirements.of({"docker_image": "x", "min_nodes": 3}) == Requirements()


@pytest.mark.parametrize(
    ("rc", "says"),
    [
        ([], "runtime_constraints must be an object"),
        ({"vcpus": 0}, "vcpus must be greater than 0"),
        ({"vcpus": -1}, "vcpus must be greater than 0"),
        ({"vcpus": "2"}, 'vcpus must be a number, not "2"'),
        ({"vcpus": True}, "vcpus must be a number"),
        ({"ram": 1.5}, "ram must be a whole number"),
        ({"ram": 0}, "ram must be greater than 0"),
        ({"gpus": -1}, "gpus must be at least 0"),
        ({"gpus": 0.5}, "gpus must be a whole number"),
        ({"min_cores_per_node": "many"}, "min_cores_per_node must be a number"),
        ({"min_ram_mb_per_node": -5}, "min_ram_mb_per_node must be at least 0"),
        ({"constraints": [{"key": "k", "operator": "~"}]}, "unknown operator"),
    ],
)
def test_bad_requirements_are_refused(rc: Any, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Requirements.of(rc)
    assert says in str(caught.value)


def test_node_problems_and_the_verdict() -> None:
    a = view("node-a", labels={"region": "eu-west-1"})
    b = view("node-b", labels={"region": "us-west-2"}, ram_bytes=8 * GiB)
    req = Requirements.of({"ram": 16 * GiB, "constraints": ["region=us-west-2"]})
    assert node_problems(req, a) == [
        "memory 8 GiB < 16 GiB",
        "region=eu-west-1 does not satisfy region = us-west-2",
    ]
    result = verdict(req, [b, a])
    assert result.suitable == []
    assert result.message == (
        "no suitable node: requested 1, available 2, suitable 0; node-a: memory 8 GiB < 16 GiB,"
        " region=eu-west-1 does not satisfy region = us-west-2; node-b: memory 8 GiB < 16 GiB"
    )
    fits = verdict(Requirements.of({"constraints": ["region=us-west-2"]}), [a, b])
    assert fits.message is None and fits.suitable == [b]
    two = verdict(Requirements.of({"constraints": ["region=us-west-2"]}), [a, b], requested=2)
    assert two.message == (
        "no suitable node: requested 2, available 2, suitable 1; node-a: region=eu-west-1 does"
        " not satisfy region = us-west-2"
    )
    assert verdict(Requirements(), []).message == (
        "no suitable node: requested 1, available 0, suitable 0"
    )
    small = view("tiny", cpus=0.5, ram_bytes=512 * MiB, gpus=0)
    assert node_problems(Requirements.of({"vcpus": 1, "ram": GiB, "gpus": 2}), small) == [
        "cpus 0.5 < 1",
        "memory 512 MiB < 1 GiB",
        "gpus 0 < 2",
    ]


def test_sizes_keep_their_digits() -> None:
    assert human_bytes(10**9 * MiB) == "976562.5 GiB"
    assert human_bytes(16 * GiB) == "16 GiB"
    assert human_bytes(1536 * MiB) == "1.5 GiB"
    assert human_bytes(300 * MiB) == "300 MiB"


def test_a_verdict_names_at_most_twenty_nodes() -> None:
    nodes = [view(f"n{i:02d}", labels={}) for i in range(25)]
    message = verdict(Requirements.of({"constraints": ["gpu"]}), nodes).message
    assert message is not None
    assert message.count(": no label gpu") == 20 and message.endswith("; and 5 more nodes")


def test_node_views_from_rows_old_new_and_odd() -> None:
    def row(info: Any) -> Any:
        return SimpleNamespace(uuid="zzzzz-7ekkf-000000000000001", hostname="h", info=info)

    new = NodeView.of(
        row({"cpus": 2, "ram_bytes": GiB, "gpus": 1, "labels": {"a": "b"}, "slots": 3})
    )
    assert (new.cpus, new.ram_bytes, new.gpus, new.labels, new.slots) == (2, GiB, 1, {"a": "b"}, 3)
    old = NodeView.of(row({"cores": 4, "ram_mb": 100, "labels": ["fast"], "concurrency": 2}))
    assert (old.cpus, old.ram_bytes, old.labels, old.slots) == (4, 100 * MiB, {"fast": "true"}, 2)
    odd = NodeView.of(row({"cpus": "x", "ram_bytes": -1, "labels": 7, "slots": True}))
    assert (odd.cpus, odd.ram_bytes, odd.labels, odd.slots) == (0, 0, {}, 1)
    assert NodeView.of(row(None)).labels == {}


def test_worker_labels_from_configuration() -> None:
    assert parse_labels("region=us-west-2, fast ,,tier = b") == {
        "region": "us-west-2",
        "fast": "true",
        "tier": "b",
    }
    assert parse_labels("") == {}
    for bad, says in (("arch=arm", "set automatically"), ("a b", "key=value"), ("=x", "key=")):
        with pytest.raises(ValueError, match=says):
            parse_labels(bad)
    labels = node_labels(
        configured={"fast": "true"},
        arch="x86_64",
        os_name="linux",
        hostname="box",
        cpus=8,
        ram_bytes=int(15.68 * GiB),
        gpus=0,
    )
    assert labels == {
        "fast": "true",
        "arch": "x86_64",
        "os": "linux",
        "hostname": "box",
        "cpus": "8",
        "memory": "15.6",
        "gpus": "0",
    }
    assert parse_selector("memory>15").satisfied_by(labels)
    assert not parse_selector("memory>16").satisfied_by(labels)


def test_a_node_pin_keeps_a_job_to_one_node() -> None:
    a, b = view("a"), view("b")
    req = Requirements.of({"node": a.uuid})
    assert node_problems(req, a) == []
    assert node_problems(req, b) == [f"not node {a.uuid}"]
    for bad in ("a", 7, "zzzzz-7ekkf-UPPERCASE000000"):
        with pytest.raises(InvalidRequest, match=r"runtime_constraints\.node must be a node uuid"):
            Requirements.of({"node": bad})


@pytest.mark.parametrize(
    ("mounts", "says"),
    [
        ("x", "must be a list"),
        ([1], "each mount must be an object"),
        ([{"source": "keep", "subpath": "a", "path": "/a"}], "source must be src or output"),
        ([{"source": "src", "subpath": "../a", "path": "/a"}], "bad subpath"),
        ([{"source": "src", "subpath": "a", "path": "relative"}], "cannot be a mount path"),
        ([{"source": "src", "subpath": "a", "path": "/crunch/src"}], "cannot be a mount path"),
        ([{"source": "output", "subpath": "a", "path": "/a/../b"}], "cannot be a mount path"),
    ],
)
def test_container_mounts_are_checked(mounts: Any, says: str) -> None:
    from crunch.runtimes import container_mounts

    with pytest.raises(InvalidRequest, match=says):
        container_mounts({"mounts": mounts})
    ok = [{"source": "src", "subpath": "inputs/in", "path": "/in/"}]
    assert container_mounts({"mounts": ok}) == [("src", "inputs/in", "/in")]
