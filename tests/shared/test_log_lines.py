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


@pytest.fixture
def configured(tmp_path: Path):
    """`logs.configure` to a file in this process, undone afterwards (structlog, the root logger)."""
    import logging

    saved, handlers, level = structlog.get_config(), logging.getLogger().handlers[:], logging.getLogger().level
    saved_processors = list(saved["processors"])
    path = tmp_path / "service.log"
    logs.configure("info", service="ledger", file=path)
    try:
        yield path
    finally:
        structlog.configure(**{**saved, "processors": saved_processors})
        logging.getLogger().handlers, logging.getLogger().level = handlers, level
        logs._configured = None


def test_a_request_s_lines_are_those_structlog_writes_all_in_one_write(configured: Path, monkeypatch):
    log = structlog.get_logger("t")
    fields = {"op": "bet", "status": 201, "code": None, "id": "b1", "token": "s3cret", "why": "Bearer abc"}
    bound = request_ids.bind("rid-9")
    try:
        log.info("ledger_action", **fields)  # structlog's way
        writes: list[bytes] = []
        real_write = logs.os.write
        monkeypatch.setattr(logs.os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
        lines = logs.RequestLines()
        lines.log(log, "info", "ledger_action", **fields)
        lines.log(log, "debug", "hidden", x=1)  # below the level: not written
        lines.log(log, "warning", "http_request", status=503)
        assert writes == []  # nothing written before the request ends
        lines.flush()
    finally:
        request_ids.unbind(bound)
    assert len(writes) == 1  # both lines, one system call
    expected, *written = [json.loads(line) for line in configured.read_text().splitlines()]
    assert [line["event"] for line in written] == ["ledger_action", "http_request"]
    for line in (expected, written[0]):
        assert ISO_UTC.fullmatch(line.pop("timestamp"))
    assert list(written[0].items()) == list(expected.items())  # same fields, values and order
    assert expected["token"] == "[redacted]" and expected["request_id"] == "rid-9"
    assert written[1]["level"] == "warning" and written[1]["service"] == "ledger"


def test_while_a_test_captures_lines_a_request_s_lines_go_through_structlog_at_once(configured: Path):
    from structlog.testing import capture_logs

    lines = logs.RequestLines()
    with capture_logs() as captured:
        lines.log(structlog.get_logger("t"), "info", "ledger_action", op="bet")
    assert captured == [{"event": "ledger_action", "op": "bet", "log_level": "info"}]
    lines.flush()
    assert configured.read_text() == ""
