"""`crunch put`, `crunch get` and `crunch ls`: files in and out of collections.

`put` reads files and directories into 64 MiB blocks (small files share blocks, as with
arv-put), hashes and uploads blocks on several threads while it reads the next one, writes
the manifest (normalised, names escaped, directories as streams, empty files and empty
directories as Arvados writes them), creates the collection and prints its portable data
hash last. Memory stays at about (threads + 1) blocks, whatever the file sizes.

`get` fetches a collection (or a file or directory in it) by portable data hash or uuid; each
block is checked against its MD5 before its bytes are written, and blocks are fetched in
parallel and written at their offsets. Names come from the server, so they are checked
again here before they become local paths.

Paths follow arv-put: `DIR` is stored as `DIR/...`, `DIR/` stores what is inside, a file is
stored under its name. Exit status: 0 on success, 1 on any error (with a message on stderr).

`crunch get` also shows a job: `crunch get UUID` with a job uuid (`-8i9sb-`) and no DEST
(`crunch.jobscli`). With `--json`: `put` prints the collection record, `get` what it wrote
(`{"source", "destination", "files": [{"path", "size"}]}`), `ls` the entries
(`[{"path", "size"}]`, directories with a null size).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import hashlib
import os
import queue
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from crunch.client import ApiClient
from crunch.jobscli import cmd_get_job, is_job_uuid
from crunch.output import CommandError, UsageError, print_json, run_command
from jobs import manifests
from jobs.exceptions import InvalidRequest

BLOCK_SIZE = 64 * 1024 * 1024
GROWTH_BUFFER = 64 * 1024  # for bytes beyond what a file's size said
DEFAULT_THREADS = 4

__all__ = ["CommandError", "get_target", "list_target", "put_paths"]


# --- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal (stderr); nothing when stderr is not one."""

    def __init__(self, total: int, *, label: str, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total
        self.label = label
        self.done = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if self.enabled and (now - self._shown > 0.1 or self.done >= self.total):
                self._shown = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        mib = 1024 * 1024
        fraction = self.done / self.total if self.total else 1.0
        width = 30
        bar = "#" * int(fraction * width)
        rate = self.done / mib / max(now - self.started, 1e-6)
        self.stream.write(
            f"\r{self.label} [{bar:<{width}}] {self.done // mib}/{self.total // mib} MiB "
            f"{fraction:6.1%} {rate:7.1f} MiB/s"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            with self._lock:
                self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def warn(message: str) -> None:
    print(f"crunch: {message}", file=sys.stderr)


# --- put -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    local: Path
    name: str  # its path in the collection: `dir/file`
    size: int


def collect_sources(paths: list[str]) -> tuple[list[Source], set[str]]:
    """The files to store, in order, and the directories (empty ones included)."""
    sources: list[Source] = []
    dirs: set[str] = set()
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise CommandError(f"{arg}: no such file or directory")
        # The name given, not where a symbolic link leads.
        given_name = os.path.basename(os.path.abspath(arg))
        if path.is_dir():
            prefix = "" if arg.endswith(os.sep) else given_name
            if prefix:
                dirs.add(prefix)
            for root, subdirs, files in os.walk(path):
                subdirs.sort()
                rel = os.path.relpath(root, path)
                base = "/".join(p for p in (prefix, "" if rel == "." else rel) if p)
                for name in list(subdirs):
                    if os.path.islink(os.path.join(root, name)):
                        warn(f"skipping the symbolic link {os.path.join(root, name)}")
                        subdirs.remove(name)
                    else:
                        dirs.add(f"{base}/{name}" if base else name)
                for name in sorted(files):
                    local = Path(root, name)
                    info = local.lstat()
                    if not stat.S_ISREG(info.st_mode):
                        warn(f"skipping {local}: not a regular file")
                        continue
                    sources.append(Source(local, f"{base}/{name}" if base else name, info.st_size))
        elif path.is_file():
            sources.append(Source(path, given_name, path.stat().st_size))
        else:
            raise CommandError(f"{arg}: not a regular file or directory")
    seen: set[str] = set()
    for source in sources:
        check_collection_path(source.name)
        if source.name in seen or source.name in dirs:
            raise CommandError(f"two things would be stored as {source.name!r}")
        seen.add(source.name)
    for directory in dirs:
        check_collection_path(directory)
    return sources, dirs


def check_collection_path(path: str) -> None:
    """A path that a manifest can hold and that means the same thing when read back."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{path!r}: the name is not valid UTF-8") from None
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise CommandError(f"{path!r}: not a usable name in a collection")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in part):
            raise CommandError(f"{path!r}: names with control characters cannot be stored")


class _Uploader:
    """Fills buffers of up to 64 MiB from files and uploads full ones on worker threads.

    Buffers are sized to what is left to read (a small file or log costs a small buffer, not
    a zeroed 64 MiB one) and taken only when there are bytes to put in them."""

    def __init__(self, client: ApiClient, threads: int, progress: Progress, total: int) -> None:
        self.client = client
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="put")
        self.free: queue.Queue[bytearray] = queue.Queue()
        self.buffers = 0
        self.max_buffers = threads + 1
        self.uploads: list[Future[str]] = []
        self.sizes: list[int] = []
        self.remaining = total  # bytes not read yet (as the files' sizes said)
        self.buffer: bytearray | None = None
        self.fill = 0

    def _take(self) -> bytearray:
        if self.remaining < BLOCK_SIZE:
            # The tail: small, and not pooled. With nothing left to read (a file that filled
            # the last buffer exactly, read once more to see its end, or one that grew since
            # it was measured, such as a log), a small one: bytearray() zeroes what it
            # allocates, and 64 MiB cost 40 ms per 300-byte log.
            return bytearray(self.remaining if self.remaining > 0 else GROWTH_BUFFER)
        if self.free.empty() and self.buffers < self.max_buffers:
            self.buffers += 1
            return bytearray(BLOCK_SIZE)
        return self.free.get()

    def _upload(self, buffer: bytearray, size: int) -> str:
        try:
            view = memoryview(buffer)[:size]
            locator = self.client.block_put(view, md5=hashlib.md5(view).hexdigest())
            self.progress.add(size)
            return locator
        finally:
            if len(buffer) == BLOCK_SIZE:
                self.free.put(buffer)

    def read_file(self, source: Source) -> list[tuple[int, int, int]]:
        """Read one file; its pieces as (block number, offset in block, length)."""
        pieces: list[tuple[int, int, int]] = []
        if source.size == 0:
            return pieces
        with open(source.local, "rb") as handle:
            while True:
                if self.buffer is None:
                    self.buffer = self._take()
                count = handle.readinto(memoryview(self.buffer)[self.fill :])
                if not count:
                    break
                self.remaining -= count
                pieces.append((len(self.uploads), self.fill, count))
                self.fill += count
                if self.fill == len(self.buffer):
                    self.flush()
        return pieces

    def flush(self) -> None:
        if self.fill == 0:
            return
        for done in self.uploads:
            if done.done() and done.exception() is not None:
                raise done.exception()  # type: ignore[misc]
        assert self.buffer is not None
        self.sizes.append(self.fill)
        self.uploads.append(self.pool.submit(self._upload, self.buffer, self.fill))
        self.buffer = None
        self.fill = 0

    def locators(self) -> list[str]:
        self.flush()
        return [f.result() for f in self.uploads]

    def close(self) -> None:
        for pending in self.uploads:
            pending.cancel()
        self.pool.shutdown(wait=True)


def put_paths(
    client: ApiClient,
    paths: list[str],
    *,
    name: str | None = None,
    owner_uuid: str | None = None,
    threads: int = DEFAULT_THREADS,
) -> dict[str, Any]:
    """Store files and directories as a new collection; returns the collection record."""
    text = upload_manifest(client, paths, threads=threads)
    body: dict[str, Any] = {"manifest_text": text, "name": name or default_name()}
    if owner_uuid:
        body["owner_uuid"] = owner_uuid
    collection: dict[str, Any] = client.call("POST", "collections", body={"collection": body})
    expected = manifests.portable_data_hash(text)
    if collection.get("portable_data_hash") != expected:
        raise CommandError(
            f"the server recorded {collection.get('portable_data_hash')}, expected {expected}"
        )
    return collection


def upload_bytes(client: ApiClient, name: str, data: bytes) -> str:
    """Store `data` as the one file `name`; the manifest of a collection holding it (not
    recorded yet). For what is already in memory and small (a job's log): no file, no upload
    threads."""
    if len(data) > BLOCK_SIZE:
        raise ValueError("upload_bytes takes at most one block")
    tree = manifests.ManifestTree()
    pieces = []
    if data:
        locator = client.block_put(data)
        pieces.append(manifests.Piece(locator, len(data), 0, len(data)))
    tree.add_file(name, pieces)
    return manifests.write_manifest(tree)


def upload_manifest(client: ApiClient, paths: list[str], *, threads: int = DEFAULT_THREADS) -> str:
    """Store the blocks of files and directories; the manifest of a collection holding them
    (its locators signed for the client's token), not recorded yet."""
    sources, dirs = collect_sources(paths)
    progress = Progress(sum(s.size for s in sources), label="put")
    uploader = _Uploader(client, threads, progress, sum(s.size for s in sources))
    try:
        read = [(source, uploader.read_file(source)) for source in sources]
        locators = uploader.locators()
    finally:
        uploader.close()
    progress.finish()
    tree = manifests.ManifestTree()
    for directory in dirs:
        tree.add_dir(directory)
    for source, pieces in read:
        tree.add_file(
            source.name,
            [
                manifests.Piece(locators[block], uploader.sizes[block], offset, length)
                for block, offset, length in pieces
            ],
        )
    return manifests.write_manifest(tree)


def default_name() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"Saved at {now} by {user}@{socket.gethostname()}"


# --- get and ls ----------------------------------------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    """`PDH[/path]` (or a collection uuid) → (identifier, path inside, no outer slashes)."""
    identifier, _, path = target.partition("/")
    if not identifier:
        raise CommandError(f"{target!r}: expected a portable data hash or a collection uuid")
    path = path.strip("/")
    if path:
        check_collection_path(path)
    return identifier, path


def fetch_tree(client: ApiClient, identifier: str) -> manifests.ManifestTree:
    collection = client.call("GET", f"collections/{quote(identifier, safe='+')}")
    try:
        return manifests.manifest_tree(collection.get("manifest_text") or "")
    except InvalidRequest as exc:
        raise CommandError(f"the collection's manifest is unusable: {exc}") from None


def get_target(
    client: ApiClient,
    target: str,
    destination: str,
    *,
    force: bool = False,
    threads: int = DEFAULT_THREADS,
    stdout: IO[bytes] | None = None,
) -> dict[Path, int]:
    """Copy `target` to `destination`; returns the files written and their sizes (none when
    the destination is `-`, standard output)."""
    identifier, path = split_target(target)
    tree = fetch_tree(client, identifier)
    if path in tree.files:
        if destination == "-":
            _write_stream(client, tree.files[path], stdout or sys.stdout.buffer, threads)
            return {}
        dest = Path(destination)
        if dest.is_dir():
            dest = dest / path.rpartition("/")[2]
        _download(client, {dest: tree.files[path]}, set(), force=force, threads=threads)
        return {dest: tree.size(path)}
    if path not in tree.dirs:
        raise CommandError(f"{target}: no such file or directory in the collection")
    if destination == "-":
        raise CommandError("only a single file can be written to standard output")
    sub = tree.under(path)
    root = Path(destination)
    files = {root.joinpath(*name.split("/")): pieces for name, pieces in sub.files.items()}
    dirs = {root.joinpath(*name.split("/")) for name in sub.dirs}
    _download(client, files, dirs, force=force, threads=threads)
    return {root.joinpath(*name.split("/")): sub.size(name) for name in sub.files}


def _download(
    client: ApiClient,
    files: dict[Path, list[manifests.Piece]],
    dirs: set[Path],
    *,
    force: bool,
    threads: int,
) -> None:
    if not force:
        for path in files:
            if path.exists() or path.is_symlink():
                raise CommandError(f"{path} exists (use --force to overwrite)")
    for directory in sorted(dirs | {p.parent for p in files}):
        directory.mkdir(parents=True, exist_ok=True)
    # Every block once, with the places its bytes go: (file, offset in file, in block, length).
    work: dict[str, list[tuple[Path, int, int, int]]] = {}
    for path, pieces in files.items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        try:
            position = 0
            for piece in pieces:
                work.setdefault(piece.locator, []).append(
                    (path, position, piece.offset, piece.length)
                )
                position += piece.length
            os.ftruncate(fd, position)
        finally:
            os.close(fd)
    progress = Progress(sum(t[3] for ts in work.values() for t in ts), label="get")
    buffers = threading.local()  # one reused 64 MiB buffer per download thread

    def fetch(locator: str) -> None:
        if not hasattr(buffers, "buffer"):
            buffers.buffer = bytearray(BLOCK_SIZE)
        data = memoryview(client.block_get(locator, buffer=buffers.buffer))
        for path, position, offset, length in work[locator]:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.pwrite(fd, data[offset : offset + length], position)
            finally:
                os.close(fd)
            progress.add(length)

    _run_all(fetch, list(work), threads)
    progress.finish()


def _write_stream(
    client: ApiClient, pieces: list[manifests.Piece], out: IO[bytes], threads: int
) -> None:
    """A file's bytes in order to `out`, with up to `threads` blocks fetched ahead."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="get") as pool:
        ahead: list[Future[bytes | memoryview]] = []
        upcoming: Iterator[manifests.Piece] = iter(pieces)
        queued: list[manifests.Piece] = []

        def top_up() -> None:
            while len(ahead) < threads:
                piece = next(upcoming, None)
                if piece is None:
                    return
                queued.append(piece)
                ahead.append(pool.submit(client.block_get, piece.locator))

        top_up()
        while ahead:
            data, piece = ahead.pop(0).result(), queued.pop(0)
            out.write(memoryview(data)[piece.offset : piece.offset + piece.length])
            top_up()
        out.flush()


def _run_all(task: Callable[[str], None], items: list[str], threads: int) -> None:
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="get") as pool:
        futures = [pool.submit(task, item) for item in items]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def list_target(
    client: ApiClient, target: str, *, sizes: bool, out: IO[str] | None
) -> list[tuple[str, int | None]]:
    """Print `./name` lines (with `sizes`, sizes first) unless `out` is None; returns the
    entries, in order: directories as `name/` with no size."""
    identifier, path = split_target(target)
    tree = fetch_tree(client, identifier)
    entries: list[tuple[str, int | None]]
    if path in tree.files:
        entries = [(path, tree.size(path))]
    elif path in tree.dirs:
        sub = tree.under(path)
        prefix = f"{path}/" if path else ""
        entries = [(prefix + name, sub.size(name)) for name in sub.files]
        parents = {name.rpartition("/")[0] for name in sub.files} | {
            d.rpartition("/")[0] for d in sub.dirs if d
        }
        entries += [(f"{prefix}{d}/", None) for d in sub.dirs if d and d not in parents]
    else:
        raise CommandError(f"{target}: no such file or directory in the collection")
    entries.sort()
    if out is not None:
        for name, size in entries:
            out.write(f"{size:>12} ./{name}\n" if sizes and size is not None else f"./{name}\n")
    return entries


# --- commands ------------------------------------------------------------------------------


def _client() -> ApiClient:
    return ApiClient.from_env()


def _run(command: str, body: Callable[[ApiClient], None]) -> int:
    def with_client() -> None:
        client = _client()
        try:
            body(client)
        finally:
            client.close()

    return run_command(command, with_client)


def cmd_put(args: argparse.Namespace) -> int:
    def body(client: ApiClient) -> None:
        collection = put_paths(
            client, args.paths, name=args.name, owner_uuid=args.project, threads=args.threads
        )
        if args.json:
            print_json(collection)
            return
        print(f"crunch put: saved collection {collection['uuid']}", file=sys.stderr)
        print(collection["portable_data_hash"], flush=True)

    return _run("put", body)


def cmd_get(args: argparse.Namespace) -> int:
    """`get UUID` shows a job; `get PDH[/PATH] DEST` copies from a collection."""
    if is_job_uuid(args.target):
        if args.destination is not None:
            return run_command("get", _usage(f"{args.target} is a job: crunch get UUID, no DEST"))
        return cmd_get_job(args)
    if args.destination is None:
        return run_command(
            "get", _usage("DEST is missing: crunch get PDH[/PATH] DEST (a directory, file or -)")
        )
    if args.json and args.destination == "-":
        return run_command("get", _usage("--json and DEST - both want standard output"))

    def body(client: ApiClient) -> None:
        written = get_target(
            client, args.target, args.destination, force=args.force, threads=args.threads
        )
        if args.json:
            files = [{"path": str(p), "size": size} for p, size in sorted(written.items())]
            print_json({"source": args.target, "destination": args.destination, "files": files})

    return _run("get", body)


def _usage(message: str) -> Callable[[], None]:
    def fail() -> None:
        raise UsageError(message)

    return fail


def cmd_ls(args: argparse.Namespace) -> int:
    def body(client: ApiClient) -> None:
        entries = list_target(
            client, args.target, sizes=args.s, out=None if args.json else sys.stdout
        )
        if args.json:
            print_json([{"path": f"./{name}", "size": size} for name, size in entries])

    return _run("ls", body)


def _threads(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 32:
        raise argparse.ArgumentTypeError(f"--threads takes 1 to 32, not {value!r}")
    return int(value)


def add_parsers(sub: Any) -> None:
    """Register put, get and ls on the `crunch` command's subparsers."""
    put = sub.add_parser("put", help="store files and directories as a collection")
    put.add_argument("paths", nargs="+", metavar="PATH")
    put.add_argument("--name", help="the collection's name (default: when and by whom)")
    put.add_argument("--project", metavar="UUID", help="owner: a project (group) or user uuid")
    put.add_argument("--threads", type=_threads, default=DEFAULT_THREADS, help="uploads at once")
    put.add_argument("--json", action="store_true", help="print the collection as JSON")
    put.set_defaults(func=cmd_put)

    get = sub.add_parser(
        "get",
        help="show a job (UUID), or copy a collection or a file or directory in it (PDH DEST)",
        description="crunch get JOB_UUID | crunch get PDH[/PATH] DEST",
    )
    get.add_argument(
        "target", metavar="UUID|PDH[/PATH]", help="a job uuid, or a portable data hash or uuid"
    )
    get.add_argument(
        "destination", nargs="?", metavar="DEST", help="a directory, a file name, or -"
    )
    get.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    get.add_argument("--threads", type=_threads, default=DEFAULT_THREADS, help="downloads at once")
    get.add_argument("--json", action="store_true", help="print the job, or what was written")
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", help="list the files of a collection")
    ls.add_argument("target", metavar="PDH[/PATH]", help="a portable data hash or uuid")
    ls.add_argument("-s", action="store_true", help="show sizes in bytes")
    ls.add_argument("--json", action="store_true", help="print the entries as JSON")
    ls.set_defaults(func=cmd_ls)
