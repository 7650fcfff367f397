"""Writing, reading and signing blocks (services over `jobs.keep.store`).

- `BlockReceiver` (and `block_write` on top of it) takes a body of a declared size, hashes
  it while it is written to the store's staging directory, and only then moves it into
  place: a block whose bytes do not match its name never becomes visible. A block that is
  already stored is hashed but not written again.
- `block_read`/`block_read_into` return a block's bytes after checking them against its
  name: a damaged block is an error (`BlockCorrupt`), never wrong bytes.
- Signatures (spec §6.1): a locator handed to a client carries `+A<hmac>@<expiry>` bound to
  the client's token (`ApiClientAuthorization.token_hash`), valid for
  `CRUNCH_BLOB_SIGNATURE_TTL` seconds; reading a block needs one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

from jobs import manifests
from jobs.exceptions import CrunchError, InvalidRequest
from jobs.keep.store import BLOCK_MAX, BlockStore, check_md5, get_store

log = logging.getLogger("crunch.keep")

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
CHUNK = 1024 * 1024


class BlockTooLarge(CrunchError):
    code = "too_large"
    default_message = f"A block holds at most {BLOCK_MAX} bytes"


class LengthRequired(CrunchError):
    code = "length_required"
    default_message = "A block upload needs a Content-Length header"


class HashMismatch(InvalidRequest):
    """The uploaded bytes are not the block their name says (422)."""


class BlockCorrupt(InvalidRequest):
    """The stored bytes no longer match their hash.

    Answered with 422, not a 5xx: the Arvados SDK retries 500/502/503/504 with backoff for
    minutes, and a damaged block stays damaged; a 422 fails the read at once, with this
    message."""


@dataclass(frozen=True)
class StoredBlock:
    md5: str
    size: int
    existed: bool  # already stored: deduplicated, nothing written

    @property
    def locator(self) -> str:
        return f"{self.md5}+{self.size}"


class BlockReceiver:
    """A block arriving in pieces (`write`), hashed and staged as it comes; `finish` checks
    its length and MD5 and only then stores it. `md5=None` names the block by the hash of
    what arrived (whole-file uploads the server cuts into blocks).

    A block already stored is hashed but not staged or written again. Any failure, and
    `abort`, leave nothing behind in the staging directory."""

    def __init__(self, *, md5: str | None, size: int, store: BlockStore | None = None) -> None:
        if md5 is not None:
            check_md5(md5)
        if size > BLOCK_MAX:
            raise BlockTooLarge(f"A block holds at most {BLOCK_MAX} bytes, not {size}")
        self.md5 = md5
        self.size = size
        self.store = store or get_store()
        self.received = 0
        self._digest = hashlib.md5()
        self._existed = md5 is not None and (md5 == EMPTY_MD5 or self.store.size(md5) is not None)
        self._staged: Path | None = None
        self._out: IO[bytes] | None = None
        if not self._existed:
            fd, name = tempfile.mkstemp(prefix="block.", dir=self.store.staging_dir())
            self._staged = Path(name)
            self._out = os.fdopen(fd, "wb")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.received + len(data) > self.size:
            self.abort()
            raise InvalidRequest(f"The request body is longer than its {self.size} bytes")
        self._digest.update(data)
        if self._out is not None:
            self._out.write(data)
        self.received += len(data)

    def finish(self) -> StoredBlock:
        try:
            if self.received < self.size:
                raise InvalidRequest(
                    f"The request body ended after {self.received} of {self.size} bytes"
                )
            actual = self._digest.hexdigest()
            if self.md5 is not None and actual != self.md5:
                raise HashMismatch(f"Hash mismatch: the data's MD5 is {actual}, not {self.md5}")
            if self._out is not None:
                self._out.close()
            existed = self._existed or (
                self.md5 is None and (actual == EMPTY_MD5 or self.store.size(actual) is not None)
            )
            if not existed and self._staged is not None:
                self.store.adopt(actual, self._staged)
            return StoredBlock(actual, self.size, existed=existed)
        finally:
            self.abort()

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
        if self._staged is not None and self._staged.exists():
            self._staged.unlink()


def block_write(
    *, md5: str, body: IO[bytes], size: int, store: BlockStore | None = None
) -> StoredBlock:
    """Store the `size` bytes read from `body` as block `md5`, after verifying their MD5."""
    return _receive(BlockReceiver(md5=md5, size=size, store=store), body)


def block_write_unnamed(
    *, body: IO[bytes], size: int, store: BlockStore | None = None
) -> StoredBlock:
    """Store the `size` bytes read from `body` as a block named by the MD5 computed while
    they are received (for uploads of whole files, which the server cuts into blocks)."""
    return _receive(BlockReceiver(md5=None, size=size, store=store), body)


def _receive(receiver: BlockReceiver, body: IO[bytes]) -> StoredBlock:
    try:
        while receiver.received < receiver.size:
            chunk = body.read(min(CHUNK, receiver.size - receiver.received))
            if not chunk:
                break  # `finish` says how much was missing
            receiver.write(chunk)
        return receiver.finish()
    finally:
        receiver.abort()


def block_read(*, md5: str, store: BlockStore | None = None) -> bytes:
    """The bytes of block `md5`, verified against their hash."""
    check_md5(md5)
    if md5 == EMPTY_MD5:
        return b""
    store = store or get_store()
    data = store.read(md5)
    _verify(md5, data, store)
    return data


def block_read_into(*, md5: str, buffer: bytearray, store: BlockStore | None = None) -> memoryview:
    """Block `md5` read into `buffer` (at least BLOCK_MAX bytes), verified; the view of the
    bytes read. Reusing one buffer spares a fresh 64 MiB allocation, and its page faults,
    per block."""
    check_md5(md5)
    if md5 == EMPTY_MD5:
        return memoryview(buffer)[:0]
    store = store or get_store()
    view = memoryview(buffer)[: store.read_into(md5, buffer)]
    _verify(md5, view, store)
    return view


def _verify(md5: str, data: bytes | memoryview, store: BlockStore) -> None:
    if hashlib.md5(data).hexdigest() != md5:
        log.error("Block %s is corrupt in %r: its bytes no longer match its hash", md5, store)
        raise BlockCorrupt(f"Block {md5} is corrupt in storage: its data does not match its hash")


def block_size(*, md5: str, store: BlockStore | None = None) -> int | None:
    """The stored size of block `md5` (not verified), or None when absent."""
    check_md5(md5)
    if md5 == EMPTY_MD5:
        return 0
    return (store or get_store()).size(md5)


# --- signatures ---------------------------------------------------------------------------


def signing_key() -> bytes:
    return settings.SECRET_KEY.encode()


def signature_expiry(*, now: int | None = None, not_after: int | None = None) -> int:
    """When a signature made now expires: after CRUNCH_BLOB_SIGNATURE_TTL, and not after
    `not_after` (a collection's trash time), as in Arvados."""
    expiry = int(now if now is not None else time.time()) + settings.CRUNCH_BLOB_SIGNATURE_TTL
    return min(expiry, not_after) if not_after is not None else expiry


def locator_sign(*, locator: str, token_id: str, expiry: int | None = None) -> str:
    parsed = manifests.parse_locator(locator)
    if parsed is None:
        raise InvalidRequest(f"Not a block locator: {locator!r}")
    return manifests.sign_locator(
        parsed, token_id=token_id, expiry=expiry or signature_expiry(), key=signing_key()
    )


def locator_permitted(*, locator: manifests.Locator, token_id: str) -> bool:
    """Whether `locator` carries a live signature for the token `token_id`."""
    return manifests.signature_valid(
        locator, token_id=token_id, now=int(time.time()), key=signing_key()
    )


def manifest_sign(*, text: str, token_id: str, not_after: int | None = None) -> str:
    return manifests.sign_manifest(
        text,
        token_id=token_id,
        expiry=signature_expiry(not_after=not_after),
        key=signing_key(),
    )
