"""Resource quantities as people write them: `512Mi`, `1Gb`, `2G`, `1.5GiB`, `500m` CPUs.

One parser for every door and the `crunch` command, so `--memory 512Mi` and a job spec's
`Memory: 512Mi` mean the same number of bytes. Binary suffixes (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`,
with or without a trailing `B`) are powers of 1024; decimal ones (`k`, `K`, `M`, `G`, `T`,
`P`, in either case, with or without `B`/`b`: Bacalhau's `256mb`) powers of 1000; a bare
number is bytes.
"""

from __future__ import annotations

import math
import re

_BYTES_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KkMmGgTtPp]i?)?[Bb]?\s*\Z")
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_CPU_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m?)\s*\Z")


def parse_bytes(text: str) -> int:
    """Bytes in `text`; ValueError with a message that shows the accepted forms."""
    match = _BYTES_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an amount of memory (e.g. 512Mi, 2Gi, 1.5GB, 1000000)")
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix:
        base = 1024 if suffix.endswith("i") else 1000
        number *= base ** _POWERS[suffix[0].upper()]
    return math.ceil(number)


def parse_cpus(text: str) -> float:
    """CPUs in `text`: `2`, `0.5`, or millicores `500m`; ValueError when not that."""
    match = _CPU_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a number of CPUs (e.g. 2, 0.5, 500m)")
    value = float(match.group(1)) / (1000 if match.group(2) else 1)
    if value <= 0:
        raise ValueError(f"{text!r}: the number of CPUs must be more than 0")
    return value


def format_bytes(size: float) -> str:
    """`8 GiB`, `512 MiB`, `1.5 GiB`: for messages."""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        value = size / 1024**power
        if value >= 1:
            return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{int(size)} B"
