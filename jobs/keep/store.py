"""Block storage backends.

A block is at most 64 MiB and is stored under its MD5 (lowercase hex). A backend only stores
and returns bytes; the caller (`jobs.keep.blocks`) verifies hashes. Writes go through a file
in `staging_dir()` that `adopt` moves into place in one step, so a block is either absent or
complete: on the filesystem by `rename` (after `fsync`), on S3 by a single PUT whose
Content-MD5 the server checks.

`get_store()` returns the backend the settings name, built once per configuration.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from jobs.exceptions import CrunchError, InvalidRequest, NotFound

log = logging.getLogger("crunch.keep")

BLOCK_MAX = 64 * 1024 * 1024
MD5_RE = re.compile(r"^[0-9a-f]{32}\Z")


class BlockNotFound(NotFound):
    default_message = "Block not found"


class StorageUnavailable(CrunchError):
    """The backend could not be reached or refused the operation: worth a retry (503)."""

    code = "unavailable"
    default_message = "The block store is unavailable"


def check_md5(md5: str) -> str:
    """`md5` if it is 32 lowercase hex digits (it becomes a file name or an object key)."""
    if not isinstance(md5, str) or not MD5_RE.match(md5):
        raise InvalidRequest(f"Not a block hash: {md5!r}")
    return md5


class BlockStore(Protocol):
    def staging_dir(self) -> Path:
        """A local directory for blocks being received (on the store's filesystem, if any)."""
        ...

    def size(self, md5: str) -> int | None:
        """The stored block's size, or None when it is absent."""
        ...

    def adopt(self, md5: str, path: Path) -> None:
        """Store the file at `path` (whose MD5 the caller verified) as block `md5`, replacing
        nothing that a reader could see half-written. `path` is consumed."""
        ...

    def read(self, md5: str) -> bytes:
        """The stored bytes of block `md5`, unverified; `BlockNotFound` when absent."""
        ...

    def read_into(self, md5: str, buffer: bytearray) -> int:
        """Like `read`, into `buffer` (at least BLOCK_MAX bytes); the number of bytes."""
        ...

    def delete(self, md5: str) -> None:
        """Remove block `md5` if present."""
        ...


class FilesystemStore:
    """Blocks as files `<root>/<first 3 hex digits>/<md5>` (the keepstore directory layout),
    received in `<root>/tmp`, so that the final rename never crosses filesystems."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _path(self, md5: str) -> Path:
        check_md5(md5)
        return self.root / md5[:3] / md5

    def staging_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def size(self, md5: str) -> int | None:
        try:
            return self._path(md5).stat().st_size
        except FileNotFoundError:
            return None

    def adopt(self, md5: str, path: Path) -> None:
        target = self._path(md5)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(path, target)
            _fsync_dir(target.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def read(self, md5: str) -> bytes:
        try:
            with open(self._path(md5), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise BlockNotFound(f"Block {md5} not found") from None

    def read_into(self, md5: str, buffer: bytearray) -> int:
        try:
            with open(self._path(md5), "rb", buffering=0) as handle:
                view = memoryview(buffer)
                total = 0
                while count := handle.readinto(view[total:]):
                    total += count
                return total
        except FileNotFoundError:
            raise BlockNotFound(f"Block {md5} not found") from None

    def delete(self, md5: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(md5).unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Store:
    """Blocks as objects named by their MD5 in one bucket (the layout of Arvados' S3 volumes),
    through boto3. Credentials come from boto3's usual sources (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, instance roles...)."""

    def __init__(self, *, bucket: str, endpoint: str, region: str, staging: Path) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.bucket = bucket
        self.staging = staging
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r})"

    def staging_dir(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging

    def size(self, md5: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=check_md5(md5))
        except Exception as exc:
            if _s3_status(exc) == 404:
                return None
            raise _unavailable("look up", md5, exc) from exc
        return int(head["ContentLength"])

    def adopt(self, md5: str, path: Path) -> None:
        check_md5(md5)
        try:
            with open(path, "rb") as body:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=md5,
                    Body=body,
                    ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
                )
        except Exception as exc:
            raise _unavailable("store", md5, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def read(self, md5: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=check_md5(md5))
            return bytes(answer["Body"].read())
        except Exception as exc:
            if _s3_status(exc) == 404:
                raise BlockNotFound(f"Block {md5} not found") from None
            raise _unavailable("read", md5, exc) from exc

    def read_into(self, md5: str, buffer: bytearray) -> int:
        data = self.read(md5)
        if len(data) > len(buffer):
            raise StorageUnavailable(f"Block {md5} is larger than a block can be")
        buffer[: len(data)] = data
        return len(data)

    def delete(self, md5: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=check_md5(md5))
        except Exception as exc:
            raise _unavailable("delete", md5, exc) from exc


def _s3_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    if code in ("NoSuchKey", "NotFound", "404"):
        return 404
    return int(status) if status else None


def _unavailable(action: str, md5: str, exc: Exception) -> StorageUnavailable:
    log.warning("S3: could not %s block %s: %s", action, md5, exc)
    return StorageUnavailable(f"The block store could not {action} block {md5}; try again")


def get_store() -> BlockStore:
    """The configured backend (`CRUNCH_KEEP_BACKEND`), built once per configuration."""
    if settings.CRUNCH_KEEP_BACKEND == "s3":
        return _s3_store(
            settings.CRUNCH_KEEP_S3_BUCKET,
            settings.CRUNCH_KEEP_S3_ENDPOINT,
            settings.CRUNCH_KEEP_S3_REGION,
            Path(settings.CRUNCH_KEEP_DIR) / "tmp",
        )
    return _filesystem_store(Path(settings.CRUNCH_KEEP_DIR))


@functools.lru_cache(maxsize=16)
def _filesystem_store(root: Path) -> FilesystemStore:
    return FilesystemStore(root)


@functools.lru_cache(maxsize=16)
def _s3_store(bucket: str, endpoint: str, region: str, staging: Path) -> S3Store:
    return S3Store(bucket=bucket, endpoint=endpoint, region=region, staging=staging)
