"""The `crunch` client's building blocks without a server: the Server-Sent Events parser,
terminal and plain rendering, and command-line errors (exit 1, a message, no traceback)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest

from crunch.cli import main
from crunch.client import EventParser, ServerEvent, parse_events
from crunch.output import (
    Output,
    format_ago,
    format_duration,
    parse_time,
    strip_ansi,
)

STREAM = (
    b"retry: 2000\n\n"
    b'event: status\ndata: {"state": "Queued", "cannot_run": null}\n\n'
    b"id: 0\ndata: line one\ndata: line two\n\n"
    b": keepalive\n\n"
    b"id: 1\ndata: \xc3\xa9t\xc3\xa9 \xe2\x9c\x93\ndata:\ndata:  two spaces\n\n"
    b'event: end\ndata: {"state": "Complete"}\n\n'
)


def events_of(pieces: list[bytes]) -> list[tuple[str, list[str], str | None]]:
    return [(e.event, e.lines, e.id) for e in parse_events(pieces)]


EXPECTED = [
    ("status", ['{"state": "Queued", "cannot_run": null}'], None),
    ("message", ["line one", "line two"], "0"),
    ("message", ["été ✓", "", " two spaces"], "1"),
    ("end", ['{"state": "Complete"}'], None),
]


def test_sse_parser_reads_events_however_the_bytes_are_cut() -> None:
    assert events_of([STREAM]) == EXPECTED
    # one byte at a time: lines, CRLFs and UTF-8 characters cut anywhere
    assert events_of([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
    for cut in range(1, len(STREAM)):
        assert events_of([STREAM[:cut], STREAM[cut:]]) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_sse_parser_accepts_every_line_ending(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    assert events_of([stream[i : i + 1] for i in range(len(stream))]) == EXPECTED
    for cut in range(1, len(stream)):
        assert events_of([stream[:cut], stream[cut:]]) == EXPECTED


def test_sse_parser_edge_cases() -> None:
    parser = EventParser()
    # no data: not dispatched; a field without a colon; unknown fields ignored
    assert parser.feed(b"event: status\n\nid: 7\n\nfoo: bar\ndata\n\n") == [
        ServerEvent(event="message", lines=[""], id=None)
    ]
    assert parser.last_id == "7"
    # an unfinished event waits for its blank line; a CRLF may be cut between pieces
    assert parser.feed(b"id: 8\ndata: x\r") == []
    assert parser.feed(b"\n\r\n") == [ServerEvent(lines=["x"], id="8")]
    # a CRLF, then a LF in the next piece: a blank line of its own
    assert parser.feed(b"data: y\r\n") == []
    assert parser.feed(b"\n") == [ServerEvent(lines=["y"])]
    assert ServerEvent(lines=["a", "b"]).data == "a\nb"


def test_plain_output_is_aligned_without_codes_or_header() -> None:
    stream = io.StringIO()
    out = Output(stream, environ={})
    assert not out.rich and not out.color
    out.table(("A", "B", "C"), [[out.state("Failed"), "x", "last"], ["longer", "", "z z"]])
    assert stream.getvalue() == "Failed  x  last\nlonger  -  z z\n"
    assert out.when("2026-01-02T03:04:05.123456000Z") == "2026-01-02T03:04:05.123456000Z"


def test_rich_output_colours_states_and_honours_no_color() -> None:
    stream = io.StringIO()
    out = Output(stream, environ={"FORCE_COLOR": "1"})
    out.table(("UUID", "STATE"), [["u1", out.state("Complete")], ["u2", out.state("Failed")]])
    text = stream.getvalue()
    assert "\x1b[32mComplete\x1b[0m" in text and "\x1b[31mFailed\x1b[0m" in text
    assert strip_ansi(text).splitlines() == ["UUID  STATE", "u1    Complete", "u2    Failed"]
    plain = Output(io.StringIO(), environ={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.rich and plain.state("Running") == "Running"
    assert "ago" in plain.when("2020-01-01T00:00:00Z")
    assert not Output(io.StringIO(), environ={"FORCE_COLOR": "1", "TERM": "dumb"}).rich


def test_times_and_durations() -> None:
    when = parse_time("2026-01-02T03:04:05.123456789Z")
    assert when == dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert parse_time("2026-01-02T04:04:05+01:00") == dt.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
    assert parse_time("yesterday") is None and parse_time(None) is None
    assert [format_duration(s) for s in (0.42, 12, 185, 7380, 93600)] == [
        "0.4s",
        "12s",
        "3m05s",
        "2h03m",
        "1d02h",
    ]
    now = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC)
    ago = [now - dt.timedelta(seconds=s) for s in (1, 30, 190, 7300, 90000, 200000)]
    assert [format_ago(t, now) for t in ago] == [
        "just now",
        "30 s ago",
        "3 min ago",
        "2 h ago",
        "1 day ago",
        "2 days ago",
    ]


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_command_line_errors_exit_1_with_a_message(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARVADOS_API_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("ARVADOS_API_TOKEN", "x")
    job = "zzzzz-8i9sb-0123456789abcde"
    cases = [
        (["list", "--state", "bogus"], "--state takes one of"),
        (["list", "--limit", "0"], "--limit takes a positive number"),
        (["list", "--filter", "[1]"], "must be a JSON array"),
        (["get", job, "somewhere"], "is a job: crunch get UUID, no DEST"),
        (["get", "d41d8cd98f00b204e9800998ecf8427e+0"], "DEST is missing"),
        (["get", "d41d8cd98f00b204e9800998ecf8427e+0", "-", "--json"], "both want"),
        (["logs", "not-a-uuid"], "is not a job uuid"),
        (["logs", job, "--since", "2", "--all"], "not allowed with"),
        (["cancel", job, "zzzzz-4zz18-0123456789abcde"], "is not a job uuid"),
        (["submit", "--repository", "r", "--script", "s", "oops"], "name=text or name:=JSON"),
        (["submit", "--repository", "r", "--script", "s", "@/nonexistent.json"], "No such"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, ""), (argv, code, out, err)
        assert message in err and "Traceback" not in err, (argv, err)
    # nothing listens on port 9: a connection error, exit 1
    code, _, err = run(capsys, "get", job)
    assert code == 1 and err.startswith("crunch get: Cannot reach http://127.0.0.1:9")


def test_parameters_from_a_json_file(tmp_path: Any) -> None:
    from crunch.submitcli import parse_parameters

    params = tmp_path / "p.json"
    params.write_text('{"a": 1, "b": "two"}')
    assert parse_parameters([f"@{params}", "b=three", "c:=[1]"], None) == {
        "a": 1,
        "b": "three",
        "c": [1],
    }
