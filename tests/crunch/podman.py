"""A container engine for tests: rootful Podman (with runc) and an image built here without
a network: `podman import` of a root file system holding only a static busybox, then
`podman save --format docker-archive`. It is built in one Podman store and run by workers
from another (both under a tmp dir, configured through CONTAINERS_CONF and
CONTAINERS_STORAGE_CONF), so the first job loads it from Keep. The `podman` fixture
(tests/crunch/conftest.py) skips, with the reason, when Podman cannot run containers here;
with CRUNCH_REQUIRE_SERVICES=1 (CI) that is a failure instead."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

IMAGE_TAG = "crunch-test/busybox:1"
# What this machine's rootful Podman needs (README, "Jobs in containers"): no network, and
# limits under the hard limits the worker itself has.
RUN_ARGS = "--network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
APPLETS = (
    "sh",
    "cat",
    "cp",
    "echo",
    "env",
    "id",
    "ls",
    "mkdir",
    "printf",
    "readlink",
    "sleep",
    "touch",
    "wc",
)


@dataclass
class Podman:
    """The worker's Podman: its store under a tmp dir, the image archive built for it."""

    cli: str
    env: dict[str, str]  # CONTAINERS_CONF, CONTAINERS_STORAGE_CONF
    archive: Path
    image_id: str

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args],
            env=os.environ | self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def podman_store(directory: Path) -> dict[str, str]:
    """Configuration files that keep a Podman store, and its runtime state, in `directory`."""
    directory.mkdir(parents=True)
    storage = directory / "storage.conf"
    storage.write_text(
        "[storage]\n"
        'driver = "vfs"\n'
        f'graphroot = "{directory / "root"}"\n'
        f'runroot = "{directory / "run"}"\n'
    )
    containers = directory / "containers.conf"
    containers.write_text(
        f'[engine]\nruntime = "runc"\nevents_logger = "file"\ntmp_dir = "{directory / "tmp"}"\n'
    )
    return {"CONTAINERS_CONF": str(containers), "CONTAINERS_STORAGE_CONF": str(storage)}


def is_static(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP) needs no libraries."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    return all(
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little") != 3
        for i in range(phnum)
    )


def rootfs_tar(busybox: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return out.getvalue()


def build_podman(tmp: Path) -> Podman | str:
    """The worker's Podman and the image archive, or why containers cannot run here."""
    cli = shutil.which("podman")
    if cli is None:
        return "podman is not installed (apt-get install podman runc busybox-static)"
    busybox = Path("/bin/busybox")
    if not busybox.is_file() or not is_static(busybox):
        return "no static /bin/busybox to build a test image from (apt-get install busybox-static)"
    build_env = os.environ | podman_store(tmp / "build")
    (tmp / "rootfs.tar").write_bytes(rootfs_tar(busybox))
    archive = tmp / "image.tar"

    def build(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli, *args], env=build_env, capture_output=True, text=True, timeout=300
        )

    for step in (
        ("import", str(tmp / "rootfs.tar"), IMAGE_TAG),
        ("run", "--rm", *RUN_ARGS.split(), IMAGE_TAG, "/bin/sh", "-c", "echo ok"),
        ("save", "--format", "docker-archive", "--output", str(archive), IMAGE_TAG),
    ):
        done = build(*step)
        if done.returncode != 0:
            return f"podman cannot run containers here: podman {step[0]}: {done.stderr.strip()}"
    image_id = build("image", "inspect", "--format", "{{.Id}}", IMAGE_TAG).stdout.strip()
    build("rm", "--all", "--force")
    return Podman(cli=cli, env=podman_store(tmp / "worker"), archive=archive, image_id=image_id)
