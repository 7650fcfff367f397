"""`crunch keepdocker`: store a Docker image as a collection that jobs can name (spec §6.2).

    crunch keepdocker FILE.tar [REPO[:TAG]]   a `docker save` archive
    crunch keepdocker IMAGE [REPO[:TAG]]      asks the local Docker (or Podman) engine for it

The collection holds one file, `sha256:<image id>.tar`. Two links point at it: a
`docker_image_hash` link named `sha256:<image id>` and, when the image has a repository and
tag, a `docker_image_repo+tag` link named `repo:tag`. Both carry `image_timestamp`, the
image's creation time from its config, so "latest" means the newest image. Storing an image
that is already stored only adds the missing tag link. It prints the collection's portable
data hash, or with `--json` the collection record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crunch.client import ApiClient
from crunch.keepcli import CommandError, put_paths
from crunch.output import print_json, run_command

# An image reference as engines accept it; never starting with "-", so never an option.
_IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}\Z")
_REPO_TAG_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?\Z"
)


@dataclass(frozen=True)
class ImageArchive:
    image_id: str  # 64 hex, the sha256 of the image config
    created: str | None  # ISO 8601 from the config
    repo_tags: tuple[str, ...]


def inspect_archive(path: Path) -> ImageArchive:
    """Read a `docker save` archive's manifest and config (never extracting to disk)."""
    try:
        with tarfile.open(path, "r:*") as archive:
            manifest = json.loads(_member(archive, "manifest.json"))
            if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
                raise CommandError(f"{path}: manifest.json does not describe an image")
            entry = manifest[0]
            config_name = entry.get("Config")
            if not isinstance(config_name, str):
                raise CommandError(f"{path}: manifest.json names no image config")
            config_bytes = _member(archive, config_name)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise CommandError(f"{path}: not a docker save archive ({exc})") from None
    config = json.loads(config_bytes)
    created = config.get("created") if isinstance(config, dict) else None
    tags = entry.get("RepoTags") or []
    return ImageArchive(
        image_id=hashlib.sha256(config_bytes).hexdigest(),
        created=created if isinstance(created, str) else None,
        repo_tags=tuple(t for t in tags if isinstance(t, str)),
    )


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise CommandError(f"the archive has no {name}") from None
    handle = archive.extractfile(member)
    if handle is None:
        raise CommandError(f"{name} in the archive is not a file")
    return handle.read()


def container_cli(configured: str) -> str:
    """The engine's command: `configured` (CRUNCH_CONTAINER_CLI), else docker if its engine
    answers, else podman. Workers pass the setting (api/settings.py validates it); this
    client command, which loads no server settings, reads the variable as it reads
    ARVADOS_API_HOST (`client_container_cli`)."""
    if configured:
        return configured
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0:
        return docker
    podman = shutil.which("podman")
    if podman:
        return podman
    raise CommandError("no container engine: set CRUNCH_CONTAINER_CLI, or install docker or podman")


def client_container_cli() -> str:
    """CRUNCH_CONTAINER_CLI as `crunch keepdocker` reads it: from its own environment."""
    configured = os.environ.get("CRUNCH_CONTAINER_CLI", "")
    if configured.startswith("-") or any(c.isspace() for c in configured):
        raise CommandError(
            f"CRUNCH_CONTAINER_CLI must be one word that does not start with '-', not "
            f"{configured!r}"
        )
    return container_cli(configured)


def save_image(image: str, destination: Path) -> None:
    if not _IMAGE_REF_RE.match(image):
        raise CommandError(f"{image!r} is not an image name")
    engine = client_container_cli()
    result = subprocess.run(
        [engine, "save", "--output", str(destination), "--", image],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise CommandError(f"{engine} save {image} failed: {result.stderr.strip()}")


def _existing_image(client: ApiClient, image_id: str) -> dict[str, Any] | None:
    links = client.call(
        "GET",
        "links",
        query={
            "filters": [
                ["link_class", "=", "docker_image_hash"],
                ["name", "=", f"sha256:{image_id}"],
            ],
            "order": ["created_at asc"],
        },
    )["items"]
    for link in links:
        found = client.call(
            "GET", "collections", query={"filters": [["uuid", "=", link["head_uuid"]]]}
        )["items"]
        if found:
            return found[0]
    return None


def _link(
    client: ApiClient,
    *,
    link_class: str,
    name: str,
    head: str,
    created: str | None,
    owner_uuid: str | None,
) -> None:
    body: dict[str, Any] = {
        "link_class": link_class,
        "name": name,
        "head_uuid": head,
        "properties": {"image_timestamp": created} if created else {},
    }
    if owner_uuid:
        body["owner_uuid"] = owner_uuid
    client.call("POST", "links", body={"link": body})


def keepdocker(
    client: ApiClient, source: str, repo_tag: str | None, *, owner_uuid: str | None = None
) -> dict[str, Any]:
    """Store an image archive (or an engine's image) and link it; returns the collection."""
    with tempfile.TemporaryDirectory(prefix="crunch-keepdocker-") as tmp:
        archive = Path(source)
        if not archive.is_file():
            archive = Path(tmp) / "image.tar"
            save_image(source, archive)
            repo_tag = repo_tag or source
        image = inspect_archive(archive)
        if repo_tag is None and image.repo_tags:
            repo_tag = image.repo_tags[0]
        if repo_tag is not None:
            if ":" not in repo_tag.rsplit("/", 1)[-1]:
                repo_tag = f"{repo_tag}:latest"
            if not _REPO_TAG_RE.match(repo_tag):
                raise CommandError(f"{repo_tag!r} is not REPO[:TAG]")
        collection = _existing_image(client, image.image_id)
        if collection is None:
            named = Path(tmp) / f"sha256:{image.image_id}.tar"
            named.symlink_to(archive.resolve())
            collection = put_paths(
                client,
                [str(named)],
                name=f"Docker image {repo_tag or 'untagged'} sha256:{image.image_id[:12]}",
                owner_uuid=owner_uuid,
            )
            _link(
                client,
                link_class="docker_image_hash",
                name=f"sha256:{image.image_id}",
                head=collection["uuid"],
                created=image.created,
                owner_uuid=owner_uuid,
            )
        if repo_tag is not None:
            tagged = client.call(
                "GET",
                "links",
                query={
                    "filters": [
                        ["link_class", "=", "docker_image_repo+tag"],
                        ["name", "=", repo_tag],
                        ["head_uuid", "=", collection["uuid"]],
                    ]
                },
            )["items"]
            if not tagged:
                _link(
                    client,
                    link_class="docker_image_repo+tag",
                    name=repo_tag,
                    head=collection["uuid"],
                    created=image.created,
                    owner_uuid=owner_uuid,
                )
        return collection


def cmd_keepdocker(args: argparse.Namespace) -> int:
    def body() -> None:
        client = ApiClient.from_env()
        collection = keepdocker(client, args.image, args.repo_tag, owner_uuid=args.project)
        if args.json:
            print_json(collection)
        else:
            print(collection["portable_data_hash"])

    return run_command("keepdocker", body)


def add_parsers(sub: Any) -> None:
    keep = sub.add_parser("keepdocker", help="store a Docker image for jobs to use")
    keep.add_argument(
        "image",
        metavar="FILE.tar|IMAGE",
        help="a `docker save` archive, or an image the local engine has",
    )
    keep.add_argument(
        "repo_tag",
        nargs="?",
        metavar="REPO[:TAG]",
        help="name it so (default: the archive's tag, or IMAGE)",
    )
    keep.add_argument("--project", metavar="UUID", help="owner: a project (group) or user uuid")
    keep.add_argument("--json", action="store_true", help="print the collection as JSON")
    keep.set_defaults(func=cmd_keepdocker)
