"""The canonical identity of a job spec: order and number spelling never change its reuse key,
and any real change to what decides the result does."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.spec import JobSpec, canonical_json

names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=8)
texts = st.text(max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), texts, st.floats(-1e6, 1e6)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
pdhs = st.from_regex(r"[0-9a-f]{32}\+[0-9]{1,4}", fullmatch=True)


@st.composite
def specs(draw: Any) -> JobSpec:
    return JobSpec(
        command=tuple(draw(st.lists(texts, min_size=1, max_size=4))),
        working_dir=draw(st.one_of(st.none(), pdhs)),
        image=draw(st.one_of(st.none(), pdhs)),
        environment=draw(st.dictionaries(names, texts, max_size=5)),
        parameters=draw(st.dictionaries(st.text(max_size=6), values, max_size=5)),
        labels=draw(st.dictionaries(names, texts, max_size=3)),
    )


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same value with every map's keys in another order, and integral numbers spelled
    as floats now and then."""
    if isinstance(value, dict):
        items = [(k, shuffled(v, rng)) for k, v in value.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return float(value)
    return value


@settings(max_examples=200, deadline=None)
@given(specs(), st.randoms(use_true_random=False))
def test_order_and_number_spelling_never_change_the_key(spec, rng):
    respelled = JobSpec(
        command=spec.command,
        working_dir=spec.working_dir,
        image=spec.image,
        environment=shuffled(dict(spec.environment), rng),
        parameters=shuffled(dict(spec.parameters), rng),
        labels={"other": "labels"},
        meta={"and": "meta"},
        priority=7,
        runtime_constraints={"vcpus": 4},
    )
    assert respelled.reuse_key() == spec.reuse_key()


@settings(max_examples=200, deadline=None)
@given(specs(), st.data())
def test_any_real_change_changes_the_key(spec, data):
    part = data.draw(
        st.sampled_from(["command", "working_dir", "image", "environment", "parameters"])
    )
    if part == "command":
        other = JobSpec(**{**vars(spec), "command": (*spec.command, "x")})
    elif part == "working_dir":
        new = data.draw(pdhs.filter(lambda p: p != spec.working_dir))
        other = JobSpec(**{**vars(spec), "working_dir": new})
    elif part == "image":
        new = data.draw(st.one_of(st.none(), pdhs).filter(lambda p: p != spec.image))
        other = JobSpec(**{**vars(spec), "image": new})
    elif part == "environment":
        key = data.draw(names)
        value = data.draw(texts.filter(lambda v: spec.environment.get(key) != v))
        other = JobSpec(**{**vars(spec), "environment": {**spec.environment, key: value}})
    else:
        key = data.draw(st.text(max_size=6))
        value = data.draw(
            values.filter(
                lambda v: (
                    key not in spec.parameters
                    or canonical_json(v) != canonical_json(spec.parameters[key])
                )
            )
        )
        other = JobSpec(**{**vars(spec), "parameters": {**spec.parameters, key: value}})
    assert other.reuse_key() != spec.reuse_key()


def test_a_string_is_not_a_number_and_true_is_not_one():
    base = JobSpec(command=("x",), parameters={"n": 1})
    assert JobSpec(command=("x",), parameters={"n": "1"}).reuse_key() != base.reuse_key()
    assert JobSpec(command=("x",), parameters={"n": True}).reuse_key() != base.reuse_key()
    assert JobSpec(command=("x",), parameters={"n": 1.0}).reuse_key() == base.reuse_key()


def test_a_script_and_a_command_of_the_same_name_differ():
    assert JobSpec(script="hash").reuse_key() != JobSpec(command=("hash",)).reuse_key()
