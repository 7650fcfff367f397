"""The block store, on both backends: the filesystem, and S3 through boto3 against a real
S3-compatible server (`moto_server`) on a loopback port. Writes are verified and atomic,
duplicates are stored once, damage is found on read."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.exceptions import InvalidRequest
from jobs.keep import blocks
from jobs.keep.blocks import (
    BlockCorrupt,
    BlockTooLarge,
    HashMismatch,
    block_read,
    block_size,
    block_write,
)
from jobs.keep.store import (
    BLOCK_MAX,
    BlockNotFound,
    FilesystemStore,
    S3Store,
    StorageUnavailable,
    get_store,
)

DATA = b"the quick brown fox jumps over the lazy dog\n" * 1000
MD5 = hashlib.md5(DATA).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server (moto) on a free loopback port, for the whole session."""
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(server).exists():
        pytest.skip("S3 tests need moto_server (pip install 'moto[server]')")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"moto_server did not start: {log.read_text()[-500:]}")
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto accepts any credentials; boto3 only needs some, from the usual variables.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"crunch-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, settings: Any) -> Any:
    """Each backend, configured through the settings as in production."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        request.getfixturevalue("aws_credentials")
        settings.CRUNCH_KEEP_BACKEND = "s3"
        settings.CRUNCH_KEEP_S3_BUCKET = new_bucket(endpoint)
        settings.CRUNCH_KEEP_S3_ENDPOINT = endpoint
        settings.CRUNCH_KEEP_S3_REGION = "us-east-1"
    built = get_store()
    assert isinstance(built, S3Store if request.param == "s3" else FilesystemStore)
    return built


def corrupt(store: Any, md5: str, data: bytes) -> None:
    """Damage a stored block behind the store's back, as a failing disk would."""
    if isinstance(store, FilesystemStore):
        (store.root / md5[:3] / md5).write_bytes(data)
    else:
        store.client.put_object(Bucket=store.bucket, Key=md5, Body=data)


def test_round_trip(store: Any) -> None:
    stored = block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA))
    assert (stored.locator, stored.existed) == (f"{MD5}+{len(DATA)}", False)
    assert block_read(md5=MD5) == DATA
    assert block_size(md5=MD5) == len(DATA)
    assert list(store.staging_dir().iterdir()) == []  # nothing left half-written


def test_duplicates_are_stored_once(store: Any) -> None:
    block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA))
    again = block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA))
    assert again.existed
    if isinstance(store, FilesystemStore):
        assert [p.name for p in store.root.glob("???/*")] == [MD5]
    else:
        listed = store.client.list_objects_v2(Bucket=store.bucket)
        assert [o["Key"] for o in listed["Contents"]] == [MD5]


def test_a_duplicate_still_needs_the_right_bytes(store: Any) -> None:
    """Knowing a block's hash is not enough: a PUT must carry the data, so that a signature
    (a read grant) is only ever given to someone who had the bytes."""
    block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA))
    with pytest.raises(HashMismatch):
        block_write(md5=MD5, body=io.BytesIO(b"x" * len(DATA)), size=len(DATA))


def test_hash_mismatch_stores_nothing(store: Any) -> None:
    wrong = "0" * 32
    with pytest.raises(HashMismatch, match=f"the data's MD5 is {MD5}, not {wrong}"):
        block_write(md5=wrong, body=io.BytesIO(DATA), size=len(DATA))
    assert block_size(md5=wrong) is None
    assert list(store.staging_dir().iterdir()) == []


def test_short_body_stores_nothing(store: Any) -> None:
    with pytest.raises(InvalidRequest, match="ended after 10 of 20 bytes"):
        block_write(md5=MD5, body=io.BytesIO(DATA[:10]), size=20)
    assert block_size(md5=MD5) is None
    assert list(store.staging_dir().iterdir()) == []


def test_too_large_is_refused_before_reading(store: Any) -> None:
    class Unreadable(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the body must not be read")

    with pytest.raises(BlockTooLarge):
        block_write(md5=MD5, body=Unreadable(), size=BLOCK_MAX + 1)  # type: ignore[arg-type]


def test_corruption_is_detected_on_read(store: Any, caplog: Any) -> None:
    block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA))
    corrupt(store, MD5, DATA[:-1] + b"?")
    with pytest.raises(BlockCorrupt, match=f"Block {MD5} is corrupt in storage"):
        block_read(md5=MD5)
    assert "corrupt" in caplog.text


def test_missing_block(store: Any) -> None:
    with pytest.raises(BlockNotFound):
        block_read(md5="1" * 32)
    assert block_size(md5="1" * 32) is None


def test_the_empty_block_always_exists(store: Any) -> None:
    assert block_read(md5=blocks.EMPTY_MD5) == b""
    assert block_size(md5=blocks.EMPTY_MD5) == 0
    stored = block_write(md5=blocks.EMPTY_MD5, body=io.BytesIO(b""), size=0)
    assert stored.existed


@pytest.mark.parametrize("name", ["../" + "a" * 29, "A" * 32, "a" * 31, "a" * 32 + "/x"])
def test_names_are_checked_before_they_become_paths(store: Any, name: str) -> None:
    with pytest.raises(InvalidRequest, match="Not a block hash"):
        block_write(md5=name, body=io.BytesIO(DATA), size=len(DATA))
    with pytest.raises(InvalidRequest, match="Not a block hash"):
        block_read(md5=name)


def test_filesystem_layout_and_atomic_rename(settings: Any, tmp_path: Path) -> None:
    store = get_store()
    assert isinstance(store, FilesystemStore)
    assert store.root == Path(settings.CRUNCH_KEEP_DIR)
    block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA))
    path = store.root / MD5[:3] / MD5
    assert path.read_bytes() == DATA
    # The staging directory is on the same filesystem, so the final step is one rename.
    assert os.stat(store.staging_dir()).st_dev == os.stat(path).st_dev


def test_unreachable_s3_is_a_retryable_error(
    settings: Any, aws_credentials: None, tmp_path: Path
) -> None:
    store = S3Store(
        bucket="nowhere",
        endpoint=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        region="us-east-1",
        staging=tmp_path / "staging",
    )
    with pytest.raises(StorageUnavailable, match="try again"):
        block_read(md5=MD5, store=store)
    with pytest.raises(StorageUnavailable):
        block_write(md5=MD5, body=io.BytesIO(DATA), size=len(DATA), store=store)
    assert list(store.staging_dir().iterdir()) == []
