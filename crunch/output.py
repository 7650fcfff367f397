"""How `crunch` client commands print: rich on a terminal, plain when piped, JSON on request.

- On a terminal (or with `FORCE_COLOR` set): job states in colour (Complete green, Failed red,
  Running cyan, Queued yellow, Cancelled dim), tables with a bold header, times relative to
  now ("3 min ago"). `NO_COLOR` (any non-empty value) keeps the layout and drops the colour;
  `TERM=dumb` drops both.
- Piped: the same columns aligned with two spaces, no header, no escape codes, `-` for an
  empty value and times as the API's ISO 8601 UTC stamps, so that `split()` or `awk` parse
  every row. This form is a stable interface.
- `--json`: the API's objects as JSON on stdout, nothing else there.

Errors go to stderr as `crunch <command>: <message>`, without a traceback. Exit codes: 0 the
command worked, 1 it did not (usage, connection, the server said no), 2 the job failed or
cannot be placed (`submit --follow`, `logs --follow`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from crunch.client import ClientError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_JOB = 2  # the job failed, was cancelled, or cannot be placed

FINAL_STATES = frozenset({"Complete", "Failed", "Cancelled"})

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"
STATE_STYLES = {
    "Complete": GREEN,
    "Failed": RED,
    "Running": CYAN,
    "Queued": YELLOW,
    "Cancelled": DIM,
}

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TIME_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$"
)


class CommandError(Exception):
    """A command cannot do what was asked; the message says why (exit 1)."""


class UsageError(CommandError):
    """The command line is wrong."""


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


def parse_time(value: Any) -> dt.datetime | None:
    """An API timestamp (`2026-01-02T03:04:05.123456000Z`) as an aware datetime, else None."""
    if not isinstance(value, str):
        return None
    match = _TIME_RE.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match.group(7) or "0")[:6].ljust(6, "0")
    zone = match.group(8) or "Z"
    if zone == "Z":
        tz = dt.UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return dt.datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=tz)
    except ValueError:
        return None


def format_duration(seconds: float) -> str:
    """`0.4s`, `12s`, `3m05s`, `2h03m`, `1d02h`: short, no spaces."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_ago(when: dt.datetime, now: dt.datetime) -> str:
    """`just now`, `12 s ago`, `3 min ago`, `2 h ago`, `5 days ago`."""
    seconds = (now - when).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return "1 day ago" if days == 1 else f"{days} days ago"


def job_duration(job: Mapping[str, Any], now: dt.datetime) -> float | None:
    """Seconds the job ran (or has been running); None before it started."""
    started = parse_time(job.get("started_at"))
    if started is None:
        return None
    finished = parse_time(job.get("finished_at")) or parse_time(job.get("cancelled_at"))
    return ((finished or now) - started).total_seconds()


class Output:
    """One output stream and how to write on it (see the module docstring)."""

    def __init__(self, stream: IO[str], *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.stream = stream
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        dumb = env.get("TERM") == "dumb"
        self.rich = (tty or bool(env.get("FORCE_COLOR"))) and not dumb
        self.color = self.rich and not env.get("NO_COLOR")
        self.tty = tty and not dumb

    # --- pieces ------------------------------------------------------------------------

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles or not text:
            return text
        return "".join(styles) + text + RESET

    def state(self, state: Any) -> str:
        text = str(state or "-")
        return self.paint(text, STATE_STYLES.get(text, ""))

    def when(self, value: Any, now: dt.datetime | None = None) -> str:
        """A timestamp: relative on a terminal, the API's stamp when piped."""
        if not value:
            return "-"
        parsed = parse_time(value)
        if not self.rich or parsed is None:
            return str(value)
        return format_ago(parsed, now or dt.datetime.now(dt.UTC))

    # --- writing -----------------------------------------------------------------------

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Aligned columns; the last column is not padded. Cells may hold colour codes."""
        shown = [list(headers), *rows] if self.rich else [list(r) for r in rows]
        if not shown:
            return
        cells = [[cell if cell else "-" for cell in row] for row in shown]
        widths = [0] * max(len(row) for row in cells)
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(strip_ansi(cell)))
        for number, row in enumerate(cells):
            parts = []
            for i, cell in enumerate(row):
                pad = "" if i == len(row) - 1 else " " * (widths[i] - len(strip_ansi(cell)))
                parts.append(cell + pad)
            text = "  ".join(parts).rstrip()
            if self.rich and number == 0:
                text = self.paint(text, BOLD)
            self.line(text)

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`name: value` lines with the values aligned (names carry no colour)."""
        width = max((len(name) for name, _ in pairs), default=0) + 1
        for name, value in pairs:
            label = f"{name}:".ljust(width)
            self.line(f"{self.paint(label, BOLD)} {value or '-'}")


def print_json(value: Any, stream: IO[str] | None = None, *, compact: bool = False) -> None:
    out = stream if stream is not None else sys.stdout
    if compact:
        out.write(json.dumps(value, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(value, indent=2) + "\n")
    out.flush()


def run_command(command: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; errors become a message on stderr and exit 1."""
    try:
        return int(body() or 0)
    except BrokenPipeError:
        raise  # the reader went away: `crunch.cli.main` stops quietly
    except (ClientError, CommandError, OSError) as exc:
        print(f"crunch {command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"crunch {command}: interrupted", file=sys.stderr)
        return EXIT_ERROR
