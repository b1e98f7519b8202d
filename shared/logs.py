"""structlog setup: one JSON object per line, to stderr or a configured file; secrets redacted.

Every line holds `timestamp` (ISO 8601, UTC), `level`, `event`, the process's `service` ("ledger"
or "edge") and, on an edge, its `edge_id`; lines written while a request is served also hold its
`request_id`. Lines of other libraries (aiohttp's server errors, asyncio) go through the same
renderer, so the whole log is JSON. aiohttp's access log stays off: `shared.web` writes one
`http_request` line per request instead (without headers, so no token can leak into it).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import re
import sys
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
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=render_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


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
