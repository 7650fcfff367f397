"""Uploading a working directory for a command job (`crunch submit --workdir DIR`).

The directory becomes a collection whose portable data hash names the tree: each file is
stored in blocks of its own (never packed with its neighbours), so the same tree always has
the same PDH, and a changed file changes only its own blocks. A small cache, per API server
and token, remembers the signed locators of the files it sent (keyed by path, size, mtime
and inode): an unchanged file is not read or sent again while its signature is valid. Should
the server refuse the cached signatures (its key changed, say), the directory is sent again
in full. `.git` directories are left out: they are history, not the tree a command runs in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crunch.client import ApiClient, ClientError
from crunch.keepcli import BLOCK_SIZE, CommandError, collect_sources
from jobs import manifests

SKIPPED_DIRS = frozenset({".git"})
# A cached signature must stay valid at least this long to be used again.
SIGNATURE_MARGIN_SECONDS = 3600
_EXPIRY_RE = re.compile(r"\+A[0-9a-f]+@([0-9a-f]+)")


@dataclass
class UploadReport:
    portable_data_hash: str
    files: int = 0
    bytes_sent: int = 0
    blocks_sent: int = 0
    files_cached: int = 0
    skipped: list[str] = field(default_factory=list)


def cache_path(client: ApiClient) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    who = hashlib.sha256(f"{client.config.base_url}\n{client.config.token}".encode()).hexdigest()
    return Path(base) / "crunch" / f"workdir-{who[:24]}.json"


def _expiry(locator: str) -> int:
    match = _EXPIRY_RE.search(locator)
    return int(match.group(1), 16) if match else 0


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _save(path: Path, cache: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(cache))
        temporary.chmod(0o600)  # signed locators are credentials of a kind
        temporary.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs a re-upload next time


def _stat_key(local: Path) -> list[int]:
    info = local.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def _send_file(client: ApiClient, local: Path, report: UploadReport) -> list[str]:
    locators = []
    with open(local, "rb") as handle:
        while chunk := handle.read(BLOCK_SIZE):
            locators.append(client.block_put(chunk))
            report.blocks_sent += 1
            report.bytes_sent += len(chunk)
    return locators


def _tree_sources(directory: Path) -> tuple[list[Any], set[str], list[str]]:
    """The files and directories to store, and the directories left out."""
    sources, dirs = collect_sources([str(directory) + os.sep])

    def kept(name: str) -> bool:
        return not any(part in SKIPPED_DIRS for part in name.split("/"))

    skipped = sorted(d for d in dirs if not kept(d) and kept(d.rpartition("/")[0]))
    return [s for s in sources if kept(s.name)], {d for d in dirs if kept(d)}, skipped


def upload_workdir(
    client: ApiClient, directory: str, *, name: str | None = None, use_cache: bool = True
) -> UploadReport:
    """Store `directory` as a collection; returns its PDH and what was sent."""
    root = Path(directory)
    if not root.is_dir():
        raise CommandError(f"--workdir {directory}: not a directory")
    sources, dirs, skipped = _tree_sources(root)
    path = cache_path(client)
    cache = _load(path) if use_cache else {}
    now = time.time()
    report = UploadReport(portable_data_hash="", files=len(sources), skipped=skipped)
    tree = manifests.ManifestTree()
    for directory_name in dirs:
        tree.add_dir(directory_name)
    fresh: dict[str, Any] = {}
    for source in sources:
        absolute = str(source.local.resolve())
        key = _stat_key(source.local)
        entry = cache.get(absolute)
        locators: list[str] | None = None
        if (
            isinstance(entry, dict)
            and entry.get("stat") == key
            and isinstance(entry.get("blocks"), list)
            and all(_expiry(b) > now + SIGNATURE_MARGIN_SECONDS for b in entry["blocks"])
        ):
            locators = entry["blocks"]
            report.files_cached += 1
        if locators is None:
            locators = _send_file(client, source.local, report)
        fresh[absolute] = {"stat": key, "blocks": locators}
        pieces = []
        for locator in locators:
            size = int(locator.split("+")[1])
            pieces.append(manifests.Piece(locator, size, 0, size))
        tree.add_file(source.name, pieces)
    text = manifests.write_manifest(tree)
    body = {"manifest_text": text, "name": name or f"Working directory {root.resolve().name}"}
    try:
        collection = client.call("POST", "collections", body={"collection": body})
    except ClientError:
        if not report.files_cached:
            raise
        # The server refused signatures it once gave (a new signing key): send it all.
        _save(path, {})
        return upload_workdir(client, directory, name=name, use_cache=False)
    expected = manifests.portable_data_hash(text)
    if collection.get("portable_data_hash") != expected:
        raise CommandError(
            f"the server recorded {collection.get('portable_data_hash')}, expected {expected}"
        )
    cache.update(fresh)
    _save(path, cache)
    report.portable_data_hash = expected
    return report
