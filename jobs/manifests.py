"""Keep locators, manifests and portable data hashes (spec §6.1).

A manifest is lines of `<stream> <locator>... <pos>:<len>:<name>...`. Validation is strict:
stream and file names are checked component by component (no `.`/`..`/empty components, no
control characters), locators follow the grammar, and file segments stay inside the stream's
data. The portable data hash (PDH) is the MD5 of the manifest with every locator stripped to
`hash+size`, plus `+` and that text's length.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from jobs.exceptions import InvalidRequest

LOCATOR_RE = re.compile(r"^([0-9a-fA-F]{32})(\+[0-9]+)?((?:\+[A-Z][A-Za-z0-9@_-]*)*)\Z")
PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")
_SEGMENT_RE = re.compile(r"^([0-9]+):([0-9]+):(.+)\Z")
_ESCAPE_RE = re.compile(r"\\([0-7]{3})")
EMPTY_PDH = "d41d8cd98f00b204e9800998ecf8427e+0"


@dataclass(frozen=True)
class Locator:
    md5: str
    size: int | None
    hints: tuple[str, ...]

    @property
    def portable(self) -> str:
        return self.md5 if self.size is None else f"{self.md5}+{self.size}"

    def signature(self) -> str | None:
        for hint in self.hints:
            if hint.startswith("A"):
                return hint
        return None


def parse_locator(text: str) -> Locator | None:
    match = LOCATOR_RE.match(text)
    if not match:
        return None
    size = int(match.group(2)[1:]) if match.group(2) else None
    hints = tuple(h for h in match.group(3).split("+") if h)
    return Locator(match.group(1).lower(), size, hints)


def strip_hints(locator: str) -> str:
    """`hash+size+hints` → `hash+size` (spec §2.13); other text is returned unchanged."""
    parsed = parse_locator(locator)
    return parsed.portable if parsed else locator


def unescape(name: str) -> str:
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), name)


def _check_name(name: str, what: str, *, stream: bool) -> None:
    decoded = unescape(name)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        raise InvalidRequest(f"Invalid manifest: {what} contains a control character")
    if stream:
        if decoded != "." and not decoded.startswith("./"):
            raise InvalidRequest(f"Invalid manifest: stream name {name!r} must start with '.'")
        parts = decoded.split("/")[1:]
    else:
        parts = decoded.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidRequest(f"Invalid manifest: {what} {name!r} has an invalid component")


@dataclass(frozen=True)
class ManifestStats:
    portable_text: str
    locators: tuple[Locator, ...]
    file_count: int
    file_size_total: int


def parse_manifest(text: str) -> ManifestStats:
    """Validate a manifest; raise `InvalidRequest` naming the first problem."""
    if not isinstance(text, str):
        raise InvalidRequest("manifest_text must be a string")
    if text and not text.endswith("\n"):
        raise InvalidRequest("Invalid manifest: it must end with a newline")
    portable_lines = []
    locators: list[Locator] = []
    files = 0
    total = 0
    for number, line in enumerate(text.split("\n")[:-1] if text else [], start=1):
        tokens = line.split(" ")
        if len(tokens) < 3 or "" in tokens:
            raise InvalidRequest(f"Invalid manifest: line {number} is malformed")
        _check_name(tokens[0], f"stream on line {number}", stream=True)
        index = 1
        stream_size = 0
        out = [tokens[0]]
        while index < len(tokens) and LOCATOR_RE.match(tokens[index]):
            loc = parse_locator(tokens[index])
            assert loc is not None
            if loc.size is None:
                raise InvalidRequest(f"Invalid manifest: locator on line {number} has no size")
            locators.append(loc)
            stream_size += loc.size
            out.append(loc.portable)
            index += 1
        if index == 1:
            raise InvalidRequest(f"Invalid manifest: line {number} has no block locator")
        if index == len(tokens):
            raise InvalidRequest(f"Invalid manifest: line {number} has no file segment")
        for token in tokens[index:]:
            seg = _SEGMENT_RE.match(token)
            if not seg:
                raise InvalidRequest(
                    f"Invalid manifest: bad file segment {token!r} on line {number}"
                )
            pos, length = int(seg.group(1)), int(seg.group(2))
            if pos + length > stream_size:
                raise InvalidRequest(
                    f"Invalid manifest: file segment {token!r} on line {number} is past the "
                    "end of the stream's data"
                )
            _check_name(seg.group(3), f"file name on line {number}", stream=False)
            files += 1
            total += length
            out.append(token)
        portable_lines.append(" ".join(out) + "\n")
    return ManifestStats("".join(portable_lines), tuple(locators), files, total)


def portable_data_hash(text: str) -> str:
    portable = parse_manifest(text).portable_text.encode()
    return f"{hashlib.md5(portable).hexdigest()}+{len(portable)}"


# --- permission signatures: +A<hmac-sha1>@<expiry, hex unix seconds> ---------------------


def signature_for(*, md5: str, token_id: str, expiry: int, key: bytes) -> str:
    message = f"{md5}@{token_id}@{expiry:08x}".encode()
    return hmac.new(key, message, hashlib.sha1).hexdigest()


def sign_locator(locator: Locator, *, token_id: str, expiry: int, key: bytes) -> str:
    sig = signature_for(md5=locator.md5, token_id=token_id, expiry=expiry, key=key)
    kept = [h for h in locator.hints if not h.startswith("A")]
    return "+".join([locator.portable, *kept, f"A{sig}@{expiry:08x}"])


def signature_valid(locator: Locator, *, token_id: str, now: int, key: bytes) -> bool:
    hint = locator.signature()
    if hint is None:
        return False
    match = re.fullmatch(r"A([0-9a-f]{40})@([0-9a-f]{1,16})", hint)
    if not match:
        return False
    expiry = int(match.group(2), 16)
    if expiry < now:
        return False
    expected = signature_for(md5=locator.md5, token_id=token_id, expiry=expiry, key=key)
    return hmac.compare_digest(expected, match.group(1))
