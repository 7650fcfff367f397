"""Which PDHs a user may read (`jobs.selectors.readable_pdhs`), on the real database,
including PDHs shared by more collections than it reads at once (every job with an empty
output has a collection holding the empty manifest)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from jobs import manifests
from jobs.models import Collection
from jobs.selectors import PDH_ROWS, readable_pdhs

pytestmark = pytest.mark.django_db

EMPTY = manifests.portable_data_hash("")


def collection(owner: Any, manifest: str, *, trashed: bool = False) -> Collection:
    now = timezone.now()
    return Collection.objects.create(
        uuid=Collection.new_uuid(),
        owner_uuid=owner.uuid,
        created_at=now,
        modified_at=now,
        manifest_text=manifest,
        portable_data_hash=manifests.portable_data_hash(manifest),
        is_trashed=trashed,
        file_count=0,
        file_size_total=0,
    )


def manifest(n: int) -> str:
    return f". d41d8cd98f00b204e9800998ecf8427e+0 0:0:file{n}\n"


def test_readable_untrashed_copies_only(active: Any, spectator: Any) -> None:
    mine, theirs, trashed = manifest(1), manifest(2), manifest(3)
    collection(active[0], mine)
    collection(spectator[0], theirs)
    collection(active[0], trashed, trashed=True)
    pdhs = {manifests.portable_data_hash(m) for m in (mine, theirs, trashed)}
    assert readable_pdhs(active[0], pdhs) == {manifests.portable_data_hash(mine)}
    assert readable_pdhs(active[0], set()) == set()


def test_a_pdh_shared_by_many_collections_hides_no_other(active: Any, spectator: Any) -> None:
    """More readable copies of one PDH than are read at once: the others are still found,
    and one nobody lets the user read is still refused."""
    for _ in range(PDH_ROWS + 5):
        collection(active[0], "")
    mine, theirs = manifest(1), manifest(2)
    collection(active[0], mine)
    collection(spectator[0], theirs)
    wanted = {EMPTY, manifests.portable_data_hash(mine), manifests.portable_data_hash(theirs)}
    assert readable_pdhs(active[0], wanted) == {EMPTY, manifests.portable_data_hash(mine)}
    assert readable_pdhs(spectator[0], wanted) == {manifests.portable_data_hash(theirs)}
