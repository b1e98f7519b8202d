"""Our own log lines take a short path (shared/logs.py `LineShaper`, `LineWriter`): the same fields,
order and redaction as the structlog chain the lines of other libraries go through, and secrets
never written, however a caller spells them."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path

import orjson
import pytest
import structlog

from shared import logs, request_ids

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def old_chain(method_name: str, event: dict, static: dict[str, str]) -> dict:
    """The processors our lines went through before the short path (still those of stdlib lines)."""
    for proc in (
        logs.add_request_id,
        structlog.processors.add_log_level,
        logs.AddStatic(static),
        logs.redact,
        logs.lead_with_the_essentials,
    ):
        event = proc(None, method_name, event)
    return event


EVENTS = [
    {"event": "http_request", "method": "POST", "route": "/v1/bets", "status": 201, "code": None, "principal": "e"},
    {"event": "x", "request_id": "own-id", "service": "mine", "edge_id": "named"},
    {"event": "x", "request_id": None, "nested": {"a": [1, 2]}, "n": 1.5},
    {"event": "x", "token": "s3cret", "Password": "p", "SECRET": 7, "Credentials": ["c"], "authorization": None},
    {"event": "x", "header": "Bearer abc.def", "other": "BEARER  xyz and more", "note": "bearer"},
    {"event": "x", "tabbed": "a\tbEaReR\tq.r", "quoted": 'say "token": here'},
    {"event": "bearer Bearer-ish", "ok": "nothing secret"},
]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("method_name", ["info", "warn", "exception", "debug"])
def test_a_line_holds_what_the_structlog_chain_made(event, method_name):
    static = {"service": "ledger", "edge_id": "eu"}
    bound = request_ids.bind("rid-bound-1")
    try:
        expected = old_chain(method_name, dict(event), static)
        line = orjson.loads(logs.LineShaper(static)(None, method_name, dict(event)))
    finally:
        request_ids.unbind(bound)
    timestamp = line.pop("timestamp")
    assert ISO_UTC.fullmatch(timestamp)
    assert list(line) == [k for k in expected if k != "timestamp"]  # same order, timestamp first
    assert line == {k: v for k, v in json.loads(orjson.dumps(expected, default=repr)).items() if k != "timestamp"}
    assert next(iter(orjson.loads(logs.LineShaper(static)(None, method_name, dict(event))))) == "timestamp"


def test_no_secret_is_written_however_it_is_spelled():
    shaper = logs.LineShaper({"service": "ledger"})
    lies = {
        "event": "x",
        "TOKEN": "tok-1",
        "Authorization": "Bearer tok-2",
        "why": "the caller sent bEaReR tok-3",
        "many": "Bearer tok-4 then Bearer tok-5",
    }
    text = shaper(None, "info", dict(lies)).decode()
    assert all(f"tok-{i}" not in text for i in range(1, 6)), text
    line = json.loads(text)
    assert line["TOKEN"] == line["Authorization"] == "[redacted]"
    assert line["why"] == "the caller sent Bearer [redacted]"


def test_the_clock_writes_microseconds_in_utc():
    clock = logs.UtcClock()
    stamps = [clock() for _ in range(1000)]
    assert all(ISO_UTC.fullmatch(s) for s in stamps) and stamps == sorted(stamps)


def test_the_writer_writes_whole_lines_from_many_threads(tmp_path: Path):
    path = tmp_path / "lines.log"
    with path.open("a", buffering=1, encoding="utf-8") as stream:
        writer = logs.LineWriter(stream)
        assert writer.fd is not None

        def write(n: int) -> None:
            for i in range(200):
                writer.info(orjson.dumps({"thread": n, "i": i, "pad": "x" * 3000}))

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 800 and {(e["thread"], e["i"]) for e in lines} == {
        (n, i) for n in range(4) for i in range(200)
    }


def test_a_stream_without_a_descriptor_gets_text_lines():
    stream = io.StringIO()
    writer = logs.LineWriter(stream)
    assert writer.fd is None
    writer.info(b'{"event":"x"}')
    writer.error('{"event":"y"}')
    assert stream.getvalue() == '{"event":"x"}\n{"event":"y"}\n'


def test_the_clock_moves_to_the_next_second_with_its_date(monkeypatch):
    times = iter([86_399_999_999_999, 86_400_000_000_000, 86_400_000_001_999, 86_401_250_000_000])
    monkeypatch.setattr(logs.time, "time_ns", lambda: next(times))
    clock = logs.UtcClock()
    assert [clock() for _ in range(4)] == [
        "1970-01-01T23:59:59.999999Z",
        "1970-01-02T00:00:00.000000Z",
        "1970-01-02T00:00:00.000001Z",
        "1970-01-02T00:00:01.250000Z",
    ]
