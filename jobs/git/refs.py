"""Ref syntax (spec §4 step 2): which text may be handed to git as a revision."""

from __future__ import annotations

import os
import re

# Bytes refused anywhere in a ref by git (refs.c refname_disposition): control characters,
# DEL, space, and ~ ^ : ? * [ \
_REF_BAD_BYTES_RE = re.compile(rb"[\x00-\x20\x7f~^:?*\[\\]")
HEX40_RE = re.compile(r"[0-9a-f]{40}")  # always with fullmatch: "$" allows a final newline


def check_ref_format(ref: object) -> bool:
    """Whether `ref` may be handed to git as a revision (spec §4 step 2).

    True exactly when `ref` is a non-empty string whose first character is neither `-` nor
    `$` and `git check-ref-format --allow-onelevel <ref>` would succeed; computed here
    (following git's refs.c `check_refname_format`) instead of forking git. So `master^`,
    `HEAD~1`, `a..b`, `@{1}`, `x.lock`, `x/`, `a b`, `a:b` and `--opt` are all refused.
    """
    if not isinstance(ref, str) or not ref or ref[0] in "-$":
        return False
    try:
        name = os.fsencode(ref)  # the bytes git would receive as an argument
    except UnicodeError:
        return False
    if name == b"@" or name.endswith(b".") or b".." in name or b"@{" in name:
        return False
    if _REF_BAD_BYTES_RE.search(name):
        return False
    return all(
        part and not part.startswith(b".") and not part.endswith(b".lock")
        for part in name.split(b"/")
    )
