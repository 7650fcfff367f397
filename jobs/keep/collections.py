"""Reading collections: by uuid or portable data hash, and the bytes of their files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from django.db import transaction

from jobs import manifests, permissions, selectors
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied
from jobs.keep.blocks import block_read, block_write_unnamed, manifest_sign
from jobs.keep.store import BLOCK_MAX, BlockStore
from jobs.models import Collection, User
from jobs.services.objects import Actor
from jobs.services.resources import service_for


def collection_readable(*, users: list[User], identifier: str) -> Collection | None:
    """The collection `identifier` names, if one of `users` may read it.

    A uuid names one collection. A portable data hash (hints allowed, as in Arvados) names
    its content: the answer is a readable, untrashed collection with that hash, the one
    modified last."""
    if not isinstance(identifier, str):
        return None
    locator = manifests.parse_locator(identifier)
    if locator is None or locator.size is None:
        found = selectors.readable_object(Collection.objects.all(), users, identifier)
        return found if isinstance(found, Collection) else None
    candidates = Collection.objects.filter(
        portable_data_hash=locator.portable, is_trashed=False
    ).order_by("-modified_at")
    for user in users:
        found = permissions.readable(candidates, user).first()
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class FileRange:
    """Bytes `start`..`start + length` of one file of a collection."""

    pieces: tuple[manifests.Piece, ...]
    size: int  # of the whole file
    start: int
    length: int


def collection_file(*, collection: Collection, path: str) -> FileRange:
    """The file at `path` (`dir/name`, as in the manifest) of `collection`, whole."""
    tree = manifests.manifest_tree(collection.manifest_text or "")
    if path in tree.dirs:
        raise InvalidRequest(f"{path or '/'} is a directory, not a file")
    if path not in tree.files:
        raise NotFound(f"No file {path} in collection {collection.uuid}")
    pieces = tuple(tree.files[path])
    size = sum(p.length for p in pieces)
    return FileRange(pieces, size, 0, size)


def file_bytes(file: FileRange, *, store: BlockStore | None = None) -> Iterator[bytes]:
    """The bytes of `file`'s range, block by block. Each block is verified before any of its
    bytes is produced, so a damaged block stops the stream instead of sending wrong bytes."""
    position = 0
    start, end = file.start, file.start + file.length
    for piece in file.pieces:
        piece_start, piece_end = position, position + piece.length
        position = piece_end
        if piece_end <= start or piece.length == 0:
            continue
        if piece_start >= end:
            break
        data = block_read(md5=piece.locator[:32].lower(), store=store)
        first = piece.offset + max(start - piece_start, 0)
        last = piece.offset + min(end, piece_end) - piece_start
        yield memoryview(data)[first:last].tobytes()


def collection_file_write(
    *,
    actor: Actor,
    collection: Collection,
    path: str,
    body: IO[bytes],
    size: int,
    store: BlockStore | None = None,
) -> Collection:
    """Store `size` bytes from `body` as the file `path` of `collection`, replacing a file of
    that name: the bytes are cut into blocks of at most 64 MiB (each hashed as it is
    received), then the manifest is rewritten (normalised) in one update.

    The blocks are stored before the update, outside its transaction; the update itself
    locks the row, so that concurrent uploads to one collection each keep their file."""
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidRequest(f"Invalid file path {path!r}")
    if actor.auth is None:
        raise PermissionDenied("Uploading needs a token")
    if not permissions.can_write(actor.user, collection):
        raise PermissionDenied(f"Permission denied: cannot write to {collection.uuid}")
    pieces: list[manifests.Piece] = []
    remaining = size
    while remaining > 0:
        length = min(BLOCK_MAX, remaining)
        stored = block_write_unnamed(body=body, size=length, store=store)
        pieces.append(manifests.Piece(stored.locator, length, 0, length))
        remaining -= length
    with transaction.atomic():
        current = Collection.objects.select_for_update().get(pk=collection.pk)
        tree = manifests.manifest_tree(current.manifest_text or "")
        parent = path.rpartition("/")[0]
        if path in tree.dirs:
            raise InvalidRequest(f"{path} is a directory")
        for ancestor in _ancestors(parent):
            if ancestor in tree.files:
                raise InvalidRequest(f"{ancestor} is a file, not a directory")
        tree.files[path] = []
        tree.add_file(path, pieces)
        # Signed for the uploader, who may read every block of a collection they can write
        # to, so that the usual signature check accepts the new manifest.
        text = manifest_sign(text=manifests.write_manifest(tree), token_id=actor.auth.token_hash)
        updated: Collection = service_for(Collection).update(
            actor=actor, obj=current, attrs={"manifest_text": text}
        )
    return updated


def _ancestors(path: str) -> Iterator[str]:
    while path:
        yield path
        path = path.rpartition("/")[0]
