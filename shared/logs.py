"""structlog setup: one JSON object per line, to stderr or a configured file; secrets redacted.

Every line holds `timestamp` (ISO 8601, UTC), `level`, `event`, the process's `service` ("ledger"
or "edge") and, on an edge, its `edge_id`; lines written while a request is served also hold its
`request_id`. Lines of other libraries (aiohttp's server errors, asyncio) go through the same
renderer, so the whole log is JSON. aiohttp's access log stays off: `shared.web` writes one
`http_request` line per request instead (without headers, so no token can leak into it).

A request writes one or two lines (a batch one per action), so our own lines take a short path
(`LineShaper`, then `LineWriter`): the fields are stamped and ordered in one dict, rendered once by
orjson, and written as bytes in one `write` call. The lines of one request (`RequestLines`: its
`ledger_action` lines and its `http_request` line) skip structlog's bound-logger machinery too: each
is rendered as it is logged, by the same processors, and all are written together in one `write`
when the request ends. Redaction costs a single search of the rendered line: only a line
that mentions `bearer` or has a secret-named key is redacted field by field (`redact`) and rendered
again. Lines of other libraries keep structlog's processor chain (rare, so cost does not matter).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict

from shared import request_ids
from shared.config import LOG_LEVELS

SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "credentials"})
BEARER_RE = re.compile(r"Bearer\s+\S+", re.IGNORECASE)
LEVELS = LOG_LEVELS
# Config fields never shown in the start-up summary (their names contain one of these).
SECRET_FIELD_PARTS = ("token", "secret", "password", "dsn", "credential")


def redact(_: Any, __: str, event: EventDict) -> EventDict:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = BEARER_RE.sub("Bearer [redacted]", event[key])
    return event


def add_request_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The id of the request being served, unless the line names one itself."""
    request_id = request_ids.current()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


class AddStatic:
    """Fields every line of this process carries (service, edge id)."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in self.fields.items():
            event.setdefault(key, value)
        return event


FIRST_KEYS = ("timestamp", "level", "service", "edge_id", "event", "request_id")


def lead_with_the_essentials(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Time, level, service, event and request id first: what a reader scans a line for."""
    first = {k: event[k] for k in FIRST_KEYS if k in event}
    return {**first, **{k: v for k, v in event.items() if k not in first}}


# What may need redacting, searched for in a rendered line: a bearer token anywhere (even escaped, the
# word is there), or a secret-named key (orjson writes a key as `"name":`, nothing else does).
# (Substring searches of the lowered line: several times faster than one case-blind regex.)
REDACT_CANDIDATES = (b"bearer", *(f'"{key}":'.encode() for key in sorted(SECRET_KEYS)))
LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level names them


def may_hold_secret(rendered: bytes) -> bool:
    """Whether a rendered line may hold a secret: when not, it needs no redaction."""
    lowered = rendered.lower()
    for candidate in REDACT_CANDIDATES:  # noqa: SIM110 -- any() over a generator costs more per line
        if candidate in lowered:
            return True
    return False


class UtcClock:
    """ISO 8601 UTC timestamps with microseconds (`2026-01-02T03:04:05.123456Z`), formatting the
    date and time once per second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # (a second, its formatted date and time): one object

    def __call__(self) -> str:
        now_second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)  # integers: exact microseconds
        second, prefix = self._second  # read once: another thread may replace it meanwhile
        if now_second != second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_second))
            self._second = (now_second, prefix)
        return f"{prefix}.{nanoseconds // 1000:06d}Z"


class LineShaper:
    """The last processor of our own lines: request id, level, timestamp and the process's static
    fields added, the essentials first (FIRST_KEYS), secrets redacted, rendered as one JSON line
    (bytes). Same fields, order and redaction as the stdlib chain (add_request_id, add_log_level,
    TimeStamper, AddStatic, redact, lead_with_the_essentials, render_json) at a fraction of the cost."""

    def __init__(self, static: dict[str, str]) -> None:
        self.static = tuple(static.items())
        self.clock = UtcClock()

    def __call__(self, _: Any, method_name: str, event: MutableMapping[str, Any]) -> bytes:
        event["timestamp"] = self.clock()
        event["level"] = LEVEL_OF_METHOD.get(method_name, method_name)
        for key, value in self.static:
            event.setdefault(key, value)
        if "request_id" not in event:
            request_id = request_ids.current()
            if request_id is not None:
                event["request_id"] = request_id
        line = {k: event.pop(k) for k in FIRST_KEYS if k in event}
        line.update(event)
        rendered = orjson.dumps(line, default=repr)
        if may_hold_secret(rendered):
            rendered = orjson.dumps(redact(None, method_name, line), default=repr)
        return rendered


class LineWriter:
    """Writes each rendered line (bytes) and its newline to a file descriptor in one `write` call,
    so lines of several threads never interleave; a stream without a descriptor (a test's capture)
    gets them through its text interface."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self.fd = None

    def msg(self, message: bytes | str) -> None:
        data = message if isinstance(message, bytes) else message.encode()
        with self._lock:
            if self.fd is None:
                self.stream.write(data.decode() + "\n")
                self.stream.flush()
                return
            data += b"\n"
            while data:  # a write to a pipe or a full disk may take only part of the line
                written = os.write(self.fd, data)
                data = data[written:]

    log = debug = info = warn = warning = msg
    error = critical = exception = failure = fatal = msg


LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


@dataclasses.dataclass(frozen=True)
class _Configured:
    """What `configure` installed: while structlog still runs exactly this, a request's lines may be
    rendered by its processors directly (`RequestLines`)."""

    processors: list[Any]
    wrapper_class: Any
    shaper: LineShaper
    writer: LineWriter
    level: int

    def in_force(self) -> bool:
        """False once structlog was configured otherwise (a test capturing lines, another setup)."""
        config = structlog.get_config()
        return (
            config["processors"] is self.processors
            and self.processors[-1] is self.shaper
            and config["wrapper_class"] is self.wrapper_class
        )


_configured: _Configured | None = None


class RequestLines:
    """The log lines of one request, each rendered when it is logged (timestamp, fields, order and
    redaction exactly as `logger.<method>(event, **fields)` renders it under `configure`) and all
    written together, in one `write` call, by `flush` at the request's end: a bet's `ledger_action`
    and `http_request` lines cost one system call, a batch's hundred lines too. When structlog is not
    configured by `configure` (a test capturing lines), a line goes to `logger` at once, as any line."""

    __slots__ = ("_pending", "_writer")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._writer: LineWriter | None = None

    def log(self, logger: Any, method_name: str, event: str, **fields: Any) -> None:
        configured = _configured
        if configured is None or "exc_info" in fields or not configured.in_force():
            getattr(logger, method_name)(event, **fields)
            return
        if LEVEL_NUMBERS[method_name] < configured.level:
            return
        fields["event"] = event
        # The processors `configure` installed, in order (format_exc_info has nothing to do here).
        event_dict = structlog.contextvars.merge_contextvars(None, method_name, fields)
        self._pending.append(configured.shaper(None, method_name, event_dict))
        self._writer = configured.writer

    def flush(self) -> None:
        """Write the lines logged so far (one `write`)."""
        if self._pending and self._writer is not None:
            self._writer.msg(b"\n".join(self._pending))
        self._pending.clear()


def render_json(event: dict[str, Any], **_: Any) -> str:
    """orjson (several times faster than json): a line per request must stay cheap. Values it
    cannot encode are written as their repr."""
    return orjson.dumps(event, default=repr).decode()


def check_level(level: str) -> str:
    """The level in lower case; ValueError unless it is one of LEVELS."""
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LEVELS)}")
    return level.lower()


def configure(
    level: str = "info", *, service: str | None = None, edge_id: str | None = None, file: Path | None = None
) -> None:
    """Set up logging for this process: lines of `level` and above, to `file` (appended, one line
    at a time) or to stderr."""
    global _configured  # noqa: PLW0603 -- the one setup of this process, read by RequestLines
    level = check_level(level)
    stream: TextIO = file.open("a", buffering=1, encoding="utf-8") if file is not None else sys.stderr
    static = AddStatic({k: v for k, v in (("service", service), ("edge_id", edge_id)) if v is not None})
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        static,
        redact,
        lead_with_the_essentials,
    ]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=render_json),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print request lines; ours are structured and carry no headers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    writer = LineWriter(stream)
    shaper = LineShaper(static.fields)
    level_number = logging.getLevelName(level.upper())
    wrapper_class = structlog.make_filtering_bound_logger(level_number)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.format_exc_info,
            shaper,
        ],
        wrapper_class=wrapper_class,
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    processors = structlog.get_config()["processors"]
    _configured = _Configured(processors, wrapper_class, shaper, writer, level_number)


def version() -> str:
    try:
        return importlib.metadata.version("croupier")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def config_summary(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready values for the start-up line, without secrets: fields named
    like a secret are left out, accepted credentials are shown as `name:role` only."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.name == "tokens":
            out["credentials_accepted"] = sorted(f"{t.name}:{t.role}" for t in getattr(config, f.name))
        elif _shown(f):
            out[f.name] = _plain(getattr(config, f.name))
    return out


def _shown(f: dataclasses.Field[Any]) -> bool:
    return f.repr and not any(part in f.name.lower() for part in SECRET_FIELD_PARTS)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if _shown(f)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
