"""Manifests as files (spec §6.1): the tree of a manifest, its normalised form (checked
against the Arvados SDK's own normalisation), escapes, empty directories, and signing."""

from __future__ import annotations

import hashlib
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import manifests
from jobs.exceptions import InvalidRequest

FOO = "acbd18db4cc2f85cedef654fccc4a4d8+3"
BAR = "37b51d194a7513e45b56f6524f2d51f2+3"
EMPTY = manifests.EMPTY_BLOCK


def sdk_normalize(text: str) -> str:
    """The Arvados SDK's normalisation of `text` (no server: nothing is read or written)."""
    import arvados.collection

    api = types.SimpleNamespace(_rootDesc={}, config=dict)
    keep = types.SimpleNamespace(num_prefetch_threads=0)
    collection = arvados.collection.Collection(text, api_client=api, keep_client=keep)
    try:
        return str(collection.manifest_text(normalize=True))
    finally:
        collection.stop_threads()


def test_escape_matches_the_sdk() -> None:
    assert manifests.escape("a b:c\\d\te") == "a\\040b\\072c\\134d\\011e"
    assert manifests.unescape(manifests.escape("a b:c\\d")) == "a b:c\\d"
    assert manifests.escape("blåbær") == "blåbær"


def test_tree_of_a_manifest() -> None:
    text = (
        f"./a\\040b {FOO} {BAR} 0:2:x 2:4:y 6:0:e\n"
        f". {BAR} 0:3:bar 0:0:sub/\\056\n"
        f"./a\\040b {BAR} 0:1:y\n"  # a second stream line adds to y
    )
    tree = manifests.manifest_tree(text)
    assert sorted(tree.files) == ["a b/e", "a b/x", "a b/y", "bar"]
    assert tree.dirs == {"", "a b", "sub"}
    assert tree.files["a b/y"] == [
        manifests.Piece(FOO, 3, 2, 1),
        manifests.Piece(BAR, 3, 0, 3),
        manifests.Piece(BAR, 3, 0, 1),
    ]
    assert tree.size("a b/y") == 5
    assert tree.files["a b/e"] == []
    assert manifests.manifest_tree("").files == {}


def test_normalised_form() -> None:
    text = f"./d {BAR} {FOO} 3:3:foo 0:3:bar\n. {FOO} 0:0:z 0:3:a\n./e {EMPTY} 0:0:\\056\n"
    expected = f". {FOO} 0:3:a 0:0:z\n./d {BAR} {FOO} 0:3:bar 3:3:foo\n./e {EMPTY} 0:0:\\056\n"
    assert manifests.normalize_manifest(text) == expected
    assert manifests.normalize_manifest(expected) == expected
    assert sdk_normalize(text) == expected


def test_adjacent_segments_merge() -> None:
    text = f". {FOO} {BAR} 0:1:f 1:2:f 3:3:f\n"
    assert manifests.normalize_manifest(text) == f". {FOO} {BAR} 0:6:f\n"


def test_empty_directory_markers() -> None:
    assert manifests.parse_manifest(f". {EMPTY} 0:0:\\056\n").file_count == 0
    assert manifests.parse_manifest(f". {EMPTY} 0:0:a/. 0:0:b\n").file_count == 1
    with pytest.raises(InvalidRequest, match="must be empty"):
        manifests.parse_manifest(f". {FOO} 0:3:\\056\n")
    for bad in (f". {EMPTY} 0:0:../.\n", f". {EMPTY} 0:0:a//.\n"):
        with pytest.raises(InvalidRequest):
            manifests.parse_manifest(bad)


def test_a_name_cannot_be_a_file_and_a_directory() -> None:
    with pytest.raises(InvalidRequest, match="both a file and a directory"):
        manifests.manifest_tree(f". {FOO} 0:3:a 0:3:a/b\n")


def test_sign_manifest_signs_every_locator_and_keeps_other_hints() -> None:
    text = f"./d {FOO}+Kzzzzz {BAR}+A{'0' * 40}@00000001 0:3:a 3:3:b\n. {FOO} 0:3:c\n"
    signed = manifests.sign_manifest(text, token_id="tok", expiry=0x7FFFFFFF, key=b"k")
    assert (
        manifests.parse_manifest(signed).portable_text
        == manifests.parse_manifest(text).portable_text
    )
    locators = [t for t in signed.split() if manifests.LOCATOR_RE.match(t)]
    assert len(locators) == 3
    for token in locators:
        parsed = manifests.parse_locator(token)
        assert parsed is not None
        assert manifests.signature_valid(parsed, token_id="tok", now=0, key=b"k")
    assert "+Kzzzzz+A" in signed
    assert signed.count("+A") == 3


# --- normalisation agrees with the SDK on arbitrary trees ------------------------------------

names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("åé"),
    min_size=1,
    max_size=6,
).filter(lambda n: n not in (".", "..") and "/" not in n)
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
contents = st.binary(min_size=0, max_size=20)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(paths, contents, min_size=1, max_size=6), st.integers(1, 7))
def test_normalisation_agrees_with_the_sdk(files: dict[str, bytes], block_size: int) -> None:
    """Files packed into small blocks in arbitrary streams; our normal form is the SDK's."""
    # Drop paths that are a directory of another path.
    files = {p: d for p, d in files.items() if not any(q.startswith(p + "/") for q in files)}
    data = b"".join(files.values())
    blocks = [data[i : i + block_size] for i in range(0, len(data), block_size)] or [b""]
    locators = [f"{hashlib.md5(b).hexdigest()}+{len(b)}" for b in blocks]
    position = 0
    segments = []
    for path, content in files.items():
        segments.append(f"{position}:{len(content)}:{manifests.escape(path)}")
        position += len(content)
    text = f". {' '.join(locators)} {' '.join(segments)}\n"
    ours = manifests.normalize_manifest(text)
    assert ours == sdk_normalize(text)
    assert manifests.normalize_manifest(ours) == ours
    tree = manifests.manifest_tree(ours)
    assert {p: tree.size(p) for p in tree.files} == {p: len(d) for p, d in files.items()}
