"""Python environments for jobs that list `python_requirements`: one virtualenv per distinct
(normalised) list on each worker, built the first time a job needs it and reused by every
later job with the same list.

The build runs `python -m venv` and `pip install` with the requirements as arguments after
`--` (never through a shell; the job service only accepts requirement lines, never options),
its output going into the job's log. A failed install fails the job with pip's last lines.
Concurrent jobs on one worker wait for one build under a file lock; a build that died half
way (no `.ready` marker) is thrown away and done again. What pip resolved (`{name:
version}`) is recorded on the job.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

from crunch.runlog import LogWriter
from crunch.runtimes import RunFailed

READY = ".ready"
RESOLVED = "resolved.json"
PIP_TIMEOUT = 1800


def environment_key(requirements: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(requirements)).encode()).hexdigest()[:24]


def ensure(root: Path, requirements: list[str], log: LogWriter) -> tuple[Path, dict[str, str]]:
    """The virtualenv for `requirements` under `root` (built if needed) and what it holds."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / environment_key(requirements)
    with open(root / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / READY).exists():
            log.note(
                f"reusing the Python environment {path.name} ({len(requirements)} requirements)"
            )
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.note(f"building the Python environment {path.name}: {' '.join(requirements)}")
            _run([sys.executable, "-m", "venv", str(path)], log, what="python -m venv")
            pip = [str(path / "bin" / "python"), "-m", "pip"]
            _run(
                [*pip, "install", "--no-input", "--disable-pip-version-check", "--", *requirements],
                log,
                what="pip install",
            )
            listed = subprocess.run(
                [*pip, "list", "--format=json", "--disable-pip-version-check"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            resolved = {
                str(p["name"]): str(p["version"])
                for p in (json.loads(listed.stdout) if listed.returncode == 0 else [])
                if p.get("name") not in ("pip", "setuptools", "wheel")
            }
            (path / RESOLVED).write_text(json.dumps(resolved, sort_keys=True))
            (path / READY).touch()
        resolved = json.loads((path / RESOLVED).read_text())
    return path, resolved


def _run(argv: list[str], log: LogWriter, *, what: str) -> None:
    tail: deque[str] = deque(maxlen=15)
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        tail.append(line)
        log.write(f"{line}\n")
        log.tick()
    code = process.wait(timeout=PIP_TIMEOUT)
    if code != 0:
        raise RunFailed(f"{what} failed with exit code {code}: " + " | ".join(tail))
