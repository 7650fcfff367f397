"""Docker images stored as collections, and finding them (spec §6.2, §6.3).

An image is a collection holding exactly one `<image id>.tar` (v1) or `sha256:<id>.tar`
(v2), with `docker_image_hash` and `docker_image_repo+tag` links pointing at it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q

from jobs import manifests
from jobs.exceptions import InvalidRequest
from jobs.filters import parse_time
from jobs.models import Collection, Link, User
from jobs.selectors import restrict_readable

V1_RE = re.compile(r"^[0-9A-Fa-f]{64}\.tar\Z")
V2_RE = re.compile(r"^sha256:[0-9A-Fa-f]{64}\.tar\Z")
ANY_RE = re.compile(r"^(sha256:)?[0-9A-Fa-f]{64}\.tar\Z")


class IncompatibleImage(InvalidRequest):
    default_message = (
        "Matching Docker image is incompatible with 'docker_image_formats' configuration."
    )


def file_pattern(*, compatible_only: bool) -> re.Pattern[str]:
    formats = set(settings.CRUNCH_DOCKER_IMAGE_FORMATS)
    if not compatible_only or {"v1", "v2"} <= formats:
        return ANY_RE
    if formats == {"v2"}:
        return V2_RE
    if formats == {"v1"}:
        return V1_RE
    raise InvalidRequest("CRUNCH_DOCKER_IMAGE_FORMATS must name v1, v2 or both")


def manifest_file_names(text: str) -> list[str]:
    """The (unescaped) names of the files a manifest lists, with their stream path."""
    names = []
    for line in text.splitlines():
        tokens = line.split(" ")
        stream = manifests.unescape(tokens[0])
        for token in tokens[1:]:
            if manifests.LOCATOR_RE.match(token):
                continue
            parts = token.split(":", 2)
            if len(parts) == 3:
                name = manifests.unescape(parts[2])
                names.append(name if stream == "." else f"{stream[2:]}/{name}")
    return names


def is_image(collection: Collection, pattern: re.Pattern[str]) -> bool:
    names = manifest_file_names(collection.manifest_text or "")
    return sum(1 for n in set(names) if pattern.match(n)) == 1 and len(set(names)) == 1


@dataclass(frozen=True)
class _Ranked:
    collection: Collection
    key: tuple[int, float, float]


def _readable_collections(readers: list[User]):  # type: ignore[no-untyped-def]
    return restrict_readable(Collection.objects.filter(is_trashed=False), readers)


def _timestamp(link: Link) -> dt.datetime | None:
    value = (link.properties or {}).get("image_timestamp")
    return parse_time(value) if isinstance(value, str) else None


def _migrated(
    collection: Collection, pattern: re.Pattern[str], readers: list[User]
) -> Collection | None:
    """Follow a migration link from an incompatible image (newest link wins)."""
    from jobs.services.tokens import system_user

    link = (
        Link.objects.filter(
            link_class="docker_image_migration",
            owner_uuid=system_user().uuid,
            tail_uuid=collection.portable_data_hash,
        )
        .order_by("-created_at")
        .first()
    )
    if link is None:
        return None
    target = _readable_collections(readers).filter(portable_data_hash=link.head_uuid).first()
    if target is not None and is_image(target, pattern):
        return target
    return None


def _compatible(
    collection: Collection, pattern: re.Pattern[str], readers: list[User]
) -> Collection | None:
    """The collection if it is an image in an allowed format, else the image its migration
    link leads to (if compatible), else None."""
    if is_image(collection, pattern):
        return collection
    return _migrated(collection, pattern, readers)


def find_all_docker_images(
    *, search: str, tag: str | None, readers: list[User], compatible_only: bool = True
) -> list[Collection]:
    """Image collections matching `search` (repository, repo:tag, hash prefix or PDH), best
    first: images with an `image_timestamp` before those without, newer first, then newer
    links. Raises IncompatibleImage when links match images but none has an allowed format.
    """
    if not isinstance(search, str) or not search:
        return []
    pattern = file_pattern(compatible_only=compatible_only)
    readable = _readable_collections(readers)

    locator = manifests.parse_locator(search)
    if locator is not None:
        # Step 3: the collection itself, if it is a compatible image; otherwise nothing
        # (the "incompatible" error of step 8 is for link matches only).
        found = readable.filter(portable_data_hash=locator.portable).first()
        compatible = _compatible(found, pattern, readers) if found is not None else None
        return [compatible] if compatible is not None else []

    if tag is None and ":" in search:
        search, tag = search.split(":", 1)
    # Step 1: candidate links are readable and point at a readable collection, so a readable
    # tag link to an image the readers cannot see does not hide the hash search.
    candidates = restrict_readable(Link.objects.all(), readers).filter(
        head_uuid__in=readable.values("uuid")
    )
    order = ("-created_at", "-id")
    links = list(
        candidates.filter(
            link_class="docker_image_repo+tag", name=f"{search}:{tag or 'latest'}"
        ).order_by(*order)
    )
    if not links:
        # A case-sensitive prefix: SQLite's LIKE (behind `startswith`) ignores ASCII case.
        # v2 hash links are named `sha256:<hex>`: a bare hex prefix finds them too.
        prefixes = (search, f"sha256:{search}")
        links = [
            link
            for link in candidates.filter(
                Q(name__startswith=search) | Q(name__startswith=prefixes[1]),
                link_class="docker_image_hash",
            ).order_by(*order)
            if link.name.startswith(prefixes)
        ]
    collections = {c.uuid: c for c in readable.filter(uuid__in={lk.head_uuid for lk in links})}
    # Links are visited newest first; a collection keeps the key of its oldest link.
    keys: dict[str, tuple[int, float, float]] = {}
    for link in links:
        if link.head_uuid not in collections:
            continue
        stamp = _timestamp(link)
        keys[link.head_uuid] = (
            0 if stamp is not None else 1,
            -(stamp.timestamp() if stamp else 0.0),
            -link.created_at.timestamp(),
        )
    ranked = sorted(keys.items(), key=lambda item: item[1])
    results: list[Collection] = []
    for uuid, _key in ranked:
        compatible = _compatible(collections[uuid], pattern, readers)
        if compatible is not None:
            results.append(compatible)
    if ranked and not results:
        raise IncompatibleImage()
    return results


def find_latest_docker_image(
    *, search: str, tag: str | None, readers: list[User]
) -> Collection | None:
    found = find_all_docker_images(search=search, tag=tag, readers=readers)
    return found[0] if found else None
