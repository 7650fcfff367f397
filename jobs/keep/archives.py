"""Collections built on the server: from a zip archive, and from another collection with
files added.

A collection from a zip archive is how an uploaded working tree (a Ray `working_dir`
package, say) becomes content-addressed, so the job that runs in it records it by PDH.

The archive is untrusted. Every member name is checked (relative, no `..`, no empty or `.`
parts, no NUL, not a name the manifest format cannot hold), symbolic links and other special
files are refused rather than unpacked, and the total unpacked size and member count are
bounded (a zip bomb stops at the bound). Files are stored as blocks as they are read, at
most 64 MiB at a time; nothing is written to the worker's or server's filesystem.
"""

from __future__ import annotations

import io
import stat
import zipfile
from typing import IO, Any

from jobs import manifests
from jobs.exceptions import InvalidRequest, PermissionDenied
from jobs.keep.blocks import block_write_unnamed, manifest_sign
from jobs.keep.collections import collection_readable
from jobs.keep.store import BLOCK_MAX
from jobs.models import Collection
from jobs.services.objects import Actor
from jobs.services.resources import service_for

MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_MEMBERS = 100_000


def _member_path(info: zipfile.ZipInfo) -> str:
    name = info.filename
    mode = (info.external_attr >> 16) & 0xFFFF
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
        raise InvalidRequest(f"The archive member {name!r} is {kind}: only files and directories")
    path = name.rstrip("/")
    parts = path.split("/")
    if (
        not path
        or name.startswith("/")
        or "\\" in name
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise InvalidRequest(f"The archive member name {name!r} is not a relative path")
    return path


def _prefixes(path: str, tree: manifests.ManifestTree) -> list[str]:
    """The files of `tree` that `path` or one of its parents would be (a clash)."""
    parts = path.split("/")
    return [p for p in ("/".join(parts[: i + 1]) for i in range(len(parts))) if p in tree.files]


def collection_from_zip(
    *,
    actor: Actor,
    archive: IO[bytes],
    owner_uuid: str,
    name: str,
    properties: dict[str, Any] | None = None,
) -> Collection:
    """A new collection (owned by `owner_uuid`) holding the files and directories of the zip
    `archive` (a seekable binary file)."""
    if actor.auth is None:
        raise PermissionDenied("Storing an archive needs a token")
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidRequest(f"The upload is not a zip archive: {exc}") from None
    with bundle:
        members = bundle.infolist()
        if len(members) > MAX_MEMBERS:
            raise InvalidRequest(f"The archive has more than {MAX_MEMBERS} members")
        if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise InvalidRequest(f"The archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        tree = manifests.ManifestTree()
        for info in members:
            path = _member_path(info)
            if any(path == f or path.startswith(f + "/") for f in _prefixes(path, tree)):
                raise InvalidRequest(f"The archive holds {path!r} below a file of that name")
            if info.is_dir():
                tree.add_dir(path)
                continue
            if path in tree.files or path in tree.dirs:
                raise InvalidRequest(f"The archive holds {path!r} twice")
            pieces: list[manifests.Piece] = []
            try:
                with bundle.open(info) as body:
                    remaining = info.file_size
                    while remaining > 0:
                        length = min(BLOCK_MAX, remaining)
                        stored = block_write_unnamed(body=body, size=length)
                        pieces.append(manifests.Piece(stored.locator, length, 0, length))
                        remaining -= length
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                raise InvalidRequest(f"The archive member {path!r} cannot be read: {exc}") from None
            tree.add_file(path, pieces)
    text = manifest_sign(text=manifests.write_manifest(tree), token_id=actor.auth.token_hash)
    attrs: dict[str, Any] = {"owner_uuid": owner_uuid, "name": name, "manifest_text": text}
    if properties:
        attrs["properties"] = properties
    return service_for(Collection).create(actor=actor, attrs=attrs)


def collection_with_files(
    *,
    actor: Actor,
    base_pdh: str | None,
    files: dict[str, bytes],
    owner_uuid: str,
    name: str,
    collections: dict[str, str] | None = None,
) -> Collection:
    """A new collection: the files of collection `base_pdh` (when given; the caller must be
    able to read it), the files of each of `collections` (directory -> PDH) under its
    directory, and `files` added or replaced (path -> bytes). How a job gets a file of its
    own in its working tree (a dispatched payload) or its inputs where it expects them."""
    if actor.auth is None:
        raise PermissionDenied("Storing files needs a token")
    tree = manifests.ManifestTree()
    if base_pdh:
        tree = manifests.manifest_tree(_readable_manifest(actor, base_pdh))
    for directory, pdh in (collections or {}).items():
        if not directory or any(part in ("", ".", "..") for part in directory.split("/")):
            raise InvalidRequest(f"Invalid directory {directory!r}")
        other = manifests.manifest_tree(_readable_manifest(actor, pdh))
        for path, parts in other.files.items():
            tree.add_file(f"{directory}/{path}", parts)
        for path in other.dirs:
            tree.add_dir(f"{directory}/{path}" if path else directory)
    for path, data in files.items():
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            raise InvalidRequest(f"Invalid file path {path!r}")
        if path in tree.dirs:
            raise InvalidRequest(f"{path} is a directory")
        pieces: list[manifests.Piece] = []
        body = io.BytesIO(data)
        remaining = len(data)
        while remaining > 0:
            length = min(BLOCK_MAX, remaining)
            stored = block_write_unnamed(body=body, size=length)
            pieces.append(manifests.Piece(stored.locator, length, 0, length))
            remaining -= length
        tree.files[path] = []
        tree.add_file(path, pieces)
    text = manifest_sign(text=manifests.write_manifest(tree), token_id=actor.auth.token_hash)
    return service_for(Collection).create(
        actor=actor, attrs={"owner_uuid": owner_uuid, "name": name, "manifest_text": text}
    )


def _readable_manifest(actor: Actor, pdh: str) -> str:
    found = collection_readable(users=[actor.user], identifier=pdh)
    if found is None:
        raise InvalidRequest(f"Collection {pdh} is not readable by you")
    return found.manifest_text or ""
