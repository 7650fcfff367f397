"""Keep locators, manifests and portable data hashes (spec §6.1).

A manifest is lines of `<stream> <locator>... <pos>:<len>:<name>...`. Validation is strict:
stream and file names are checked component by component (no `.`/`..`/empty components, no
control characters), locators follow the grammar, and file segments stay inside the stream's
data. The portable data hash (PDH) is the MD5 of the manifest with every locator stripped to
`hash+size`, plus `+` and that text's length.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from jobs.exceptions import InvalidRequest

LOCATOR_RE = re.compile(r"^([0-9a-fA-F]{32})(\+[0-9]+)?((?:\+[A-Z][A-Za-z0-9@_-]*)*)\Z")
PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+\Z")
_SEGMENT_RE = re.compile(r"^([0-9]+):([0-9]+):(.+)\Z")
_ESCAPE_RE = re.compile(r"\\([0-7]{3})")
_TO_ESCAPE_RE = re.compile(r"[\\:\000-\040]")
EMPTY_PDH = "d41d8cd98f00b204e9800998ecf8427e+0"
# The locator of the empty block, which empty files and empty directories point at.
EMPTY_BLOCK = "d41d8cd98f00b204e9800998ecf8427e+0"


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


def unescape(name: str) -> str:
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), name)


def escape(name: str) -> str:
    """A stream or file name as a manifest writes it: backslash, colon, space and control
    characters as `\\ooo` octal escapes (what the Arvados SDK writes)."""
    return _TO_ESCAPE_RE.sub(lambda m: f"\\{ord(m.group(0)):03o}", name)


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
        if parts[-1] == "." and len(parts) > 1:
            # `sub/.`: the empty-directory marker of a subdirectory (see `is_dir_marker`).
            parts = parts[:-1]
        elif parts == ["."]:
            parts = []
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidRequest(f"Invalid manifest: {what} {name!r} has an invalid component")


def is_dir_marker(name: str) -> bool:
    """Arvados keeps an empty directory as an empty file named `.` (written `\\056`) in the
    directory's stream, or `sub/.` in its parent's: a marker, not a file."""
    return unescape(name).split("/")[-1] == "."


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
            if is_dir_marker(seg.group(3)):
                if length:
                    raise InvalidRequest(
                        f"Invalid manifest: the empty-directory marker {token!r} on line "
                        f"{number} must be empty"
                    )
            else:
                files += 1
                total += length
            out.append(token)
        portable_lines.append(" ".join(out) + "\n")
    return ManifestStats("".join(portable_lines), tuple(locators), files, total)


def portable_data_hash(text: str) -> str:
    portable = parse_manifest(text).portable_text.encode()
    return f"{hashlib.md5(portable).hexdigest()}+{len(portable)}"


# --- the files of a manifest, and its normalised form --------------------------------------


@dataclass(frozen=True)
class Piece:
    """The part of a file held in one block."""

    locator: str  # the block's locator as the manifest writes it (hints included)
    block_size: int
    offset: int  # where the part starts inside the block
    length: int


@dataclass
class ManifestTree:
    """A collection's files and directories by path from its root (`dir/file`; `""` is the
    root). `files` keeps each file's pieces in order; `dirs` holds every directory, the
    root included, whether it holds files or is an empty-directory marker."""

    files: dict[str, list[Piece]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {""})

    def size(self, path: str) -> int:
        return sum(p.length for p in self.files[path])

    def add_file(self, path: str, pieces: list[Piece]) -> None:
        self.files.setdefault(path, []).extend(pieces)
        self.add_dir(path.rpartition("/")[0])

    def add_dir(self, path: str) -> None:
        while path not in self.dirs:
            self.dirs.add(path)
            path = path.rpartition("/")[0]

    def under(self, path: str) -> ManifestTree:
        """The subtree below directory `path`, with paths relative to it."""
        if not path:
            return self
        prefix = path + "/"
        sub = ManifestTree()
        for name, pieces in self.files.items():
            if name.startswith(prefix):
                sub.add_file(name[len(prefix) :], pieces)
        for name in self.dirs:
            if name.startswith(prefix):
                sub.add_dir(name[len(prefix) :])
        return sub


def manifest_tree(text: str) -> ManifestTree:
    """Validate a manifest and list its files. A file named on several lines, or several
    times on one, is the concatenation of its segments, as in the Arvados SDK."""
    parse_manifest(text)
    tree = ManifestTree()
    for line in text.split("\n")[:-1] if text else []:
        tokens = line.split(" ")
        stream = unescape(tokens[0])
        base = stream[2:] if stream.startswith("./") else ""
        tree.add_dir(base)
        blocks: list[tuple[str, int]] = []
        starts: list[int] = []
        position = 0
        index = 1
        while index < len(tokens) and LOCATOR_RE.match(tokens[index]):
            size = int(tokens[index].split("+")[1])
            blocks.append((tokens[index], size))
            starts.append(position)
            position += size
            index += 1
        for token in tokens[index:]:
            pos_text, len_text, name = token.split(":", 2)
            path = f"{base}/{unescape(name)}" if base else unescape(name)
            if is_dir_marker(name):
                tree.add_dir(path.rpartition("/")[0])
                continue
            start, remaining = int(pos_text), int(len_text)
            pieces = []
            block = bisect.bisect_right(starts, start) - 1
            while remaining > 0:
                while starts[block] + blocks[block][1] <= start:
                    block += 1  # skips empty blocks
                locator, size = blocks[block]
                offset = start - starts[block]
                length = min(size - offset, remaining)
                pieces.append(Piece(locator, size, offset, length))
                start += length
                remaining -= length
            tree.add_file(path, pieces)
    clashes = sorted(set(tree.files) & tree.dirs)
    if clashes:
        raise InvalidRequest(f"Invalid manifest: {clashes[0]!r} is both a file and a directory")
    return tree


def write_manifest(tree: ManifestTree) -> str:
    """The normalised manifest of `tree`, as the Arvados SDK writes it: one stream per
    directory that holds files (depth first, names sorted), each block once per stream in
    order of first use, adjacent segments of a file merged, empty files as `0:0:name`, and
    an empty directory as a stream holding only the `\\056` marker."""
    children: dict[str, tuple[list[str], list[str]]] = {d: ([], []) for d in tree.dirs}
    for path in tree.files:
        parent, _, name = path.rpartition("/")
        children[parent][0].append(name)
    for path in tree.dirs:
        if path:
            parent, _, name = path.rpartition("/")
            children[parent][1].append(name)
    lines: list[str] = []
    stack = [""]
    while stack:
        directory = stack.pop()
        files, subdirs = (sorted(names) for names in children[directory])
        stream = escape("./" + directory if directory else ".")
        if files:
            lines.append(_stream_line(tree, stream, directory, files))
        elif directory and not subdirs:
            lines.append(f"{stream} {EMPTY_BLOCK} 0:0:\\056\n")
        stack.extend(f"{directory}/{d}" if directory else d for d in reversed(subdirs))
    return "".join(lines)


def _stream_line(tree: ManifestTree, stream: str, directory: str, names: list[str]) -> str:
    offsets: dict[str, int] = {}
    tokens = [stream]
    position = 0
    paths = [f"{directory}/{name}" if directory else name for name in names]
    for path in paths:
        for piece in tree.files[path]:
            if piece.locator not in offsets:
                offsets[piece.locator] = position
                tokens.append(piece.locator)
                position += piece.block_size
    if len(tokens) == 1:
        tokens.append(EMPTY_BLOCK)
    segments = []
    for name, path in zip(names, paths, strict=True):
        escaped = escape(name)
        span: list[int] | None = None
        for piece in tree.files[path]:
            start = offsets[piece.locator] + piece.offset
            if span is not None and span[1] == start:
                span[1] += piece.length
                continue
            if span is not None:
                segments.append(f"{span[0]}:{span[1] - span[0]}:{escaped}")
            span = [start, start + piece.length]
        if span is None:
            segments.append(f"0:0:{escaped}")
        else:
            segments.append(f"{span[0]}:{span[1] - span[0]}:{escaped}")
    return " ".join(tokens + segments) + "\n"


def normalize_manifest(text: str) -> str:
    """The normalised form of a valid manifest (`write_manifest` of its files). Two manifests
    of the same files normalise to the same text, whatever their streams and block order."""
    return write_manifest(manifest_tree(text))


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


def sign_manifest(text: str, *, token_id: str, expiry: int, key: bytes) -> str:
    """`text` with every block locator signed for `token_id` until `expiry`, replacing any
    signature it carried; other hints are kept. The manifest is not otherwise changed."""
    signed: dict[str, str] = {}
    lines = text.split("\n")
    for number, line in enumerate(lines):
        tokens = line.split(" ")
        for index in range(1, len(tokens)):
            token = tokens[index]
            if token not in signed:
                locator = parse_locator(token)
                if locator is None:
                    break
                signed[token] = sign_locator(locator, token_id=token_id, expiry=expiry, key=key)
            tokens[index] = signed[token]
        lines[number] = " ".join(tokens)
    return "\n".join(lines)
