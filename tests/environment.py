"""Loaded with `-p tests.environment` (pyproject), before pytest-django reads settings:
each test run gets its own data directory (git repositories, content store, broker)."""

import os
import tempfile

os.environ["CRUNCH_DATA_DIR"] = tempfile.mkdtemp(prefix="crunch-test-")
os.environ.setdefault("CRUNCH_UUID_PREFIX", "zzzzz")
# Tests that want dispatching (real workers) turn it on themselves.
os.environ.setdefault("CRUNCH_DISPATCHER", "")
