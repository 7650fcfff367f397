"""`jobs.locks`: one key per name, and the blocking and the try-lock keep out every other
holder, across connections (PostgreSQL) or in this process and machine (SQLite)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.db import connection, connections

from jobs.locks import advisory_lock, lock_key, try_advisory_lock

pytestmark = pytest.mark.django_db(transaction=True)


def test_keys_are_stable_signed_64_bit_numbers() -> None:
    assert lock_key("crunch-sweep") == lock_key("crunch-sweep")
    assert lock_key("a\x00b") != lock_key("a\x00c")
    for name in ("", "crunch-sweep", "é" * 1000):
        assert -(2**63) <= lock_key(name) < 2**63


class Holder:
    """A thread (its own database connection) inside `lock` until `release` is set."""

    def __init__(self, lock: Callable[[], AbstractContextManager[Any]]) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.got: Any = None
        self.thread = threading.Thread(target=self._run, args=(lock,))

    def _run(self, lock: Callable[[], AbstractContextManager[Any]]) -> None:
        try:
            with lock() as got:
                self.got = got
                self.inside.set()
                self.release.wait(timeout=30)
        finally:
            connections.close_all()

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.inside.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(timeout=30)


@pytest.fixture
def holders() -> Iterator[None]:
    yield
    connections.close_all()


def test_try_lock_is_refused_while_another_holds_it(holders: None) -> None:
    with Holder(lambda: try_advisory_lock("crunch-sweep")) as first:
        assert first.got is True
        with try_advisory_lock("crunch-sweep") as second:
            assert second is False
        with try_advisory_lock("crunch-other") as other:
            assert other is True  # another name is another lock
    with try_advisory_lock("crunch-sweep") as again:
        assert again is True


def test_try_lock_file_names_are_fixed_words() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("file locks are the SQLite variant")
    for name in ("../x", "a/b", "", "-x", "A"):
        with pytest.raises(ValueError), try_advisory_lock(name):
            pass


def test_the_blocking_lock_waits_for_the_holder(holders: None) -> None:
    events: list[str] = []

    def second() -> None:
        try:
            with advisory_lock("reuse\x00key"):
                events.append("second enters")
        finally:
            connections.close_all()

    with Holder(lambda: advisory_lock("reuse\x00key")):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)  # time for the second to enter, were the lock not held
        events.append("first leaves")
    waiter.join(timeout=30)
    assert events == ["first leaves", "second enters"]


def test_the_blocking_lock_holds_a_transaction() -> None:
    with advisory_lock("x"):
        assert connection.in_atomic_block
