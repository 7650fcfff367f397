"""Fixtures shared by the live-stack tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.crunch.podman import Podman, build_podman


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """Rootful Podman with the busybox test image (tests/crunch/podman.py); skipped, with
    the reason, when containers cannot run here, and a failure in CI."""
    built = build_podman(tmp_path_factory.mktemp("podman"))
    if isinstance(built, str):
        if os.environ.get("CRUNCH_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CI needs a container engine: {built}")
        pytest.skip(built)
    yield built
    built("rm", "--all", "--force")
