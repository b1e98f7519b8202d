"""structlog setup: JSON lines to stderr; secrets are redacted before rendering."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict

SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "credentials"})
BEARER_RE = re.compile(r"Bearer\s+\S+", re.IGNORECASE)


def redact(_: Any, __: str, event: EventDict) -> EventDict:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = BEARER_RE.sub("Bearer [redacted]", event[key])
    return event


def configure(level: str = "info") -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    # aiohttp's access log would print request lines; ours are structured and carry no headers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
