"""Which PDHs a user may read (`jobs.selectors.readable_pdhs`), on the real database,
including PDHs shared by more collections than it reads at once (every job with an empty
output has a collection holding the empty manifest)."""

from __future__ import annotations

from typing import Any

import pytest

from jobs import manifests
from jobs.models import Collection
from jobs.selectors import PDH_ROWS, readable_pdhs
from tests.rows import make_collection

pytestmark = pytest.mark.django_db

EMPTY = manifests.portable_data_hash("")


def test_readable_untrashed_copies_only(active: Any, spectator: Any) -> None:
    mine = make_collection(active[0], {"file1": b""})
    theirs = make_collection(spectator[0], {"file2": b""})
    trashed = make_collection(active[0], {"file3": b""})
    Collection.objects.filter(pk=trashed.pk).update(is_trashed=True)
    pdhs = {c.portable_data_hash for c in (mine, theirs, trashed)}
    assert readable_pdhs(active[0], pdhs) == {mine.portable_data_hash}
    assert readable_pdhs(active[0], set()) == set()


def test_a_pdh_shared_by_many_collections_hides_no_other(active: Any, spectator: Any) -> None:
    """More readable copies of one PDH than are read at once: the others are still found,
    and one nobody lets the user read is still refused."""
    for _ in range(PDH_ROWS + 5):
        assert make_collection(active[0], {}).portable_data_hash == EMPTY
    mine = make_collection(active[0], {"file1": b""}).portable_data_hash
    theirs = make_collection(spectator[0], {"file2": b""}).portable_data_hash
    wanted = {EMPTY, mine, theirs}
    assert readable_pdhs(active[0], wanted) == {EMPTY, mine}
    assert readable_pdhs(spectator[0], wanted) == {theirs}
