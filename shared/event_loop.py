"""The services' event loop: uvloop where it is installed (Linux and macOS: a dependency there),
asyncio's own loop elsewhere. The ledger, the edge and the benchmark's no-op baseline all serve
on it, so the baseline keeps measuring the same framework cost as the services."""

from __future__ import annotations

import asyncio


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # a platform without uvloop (Windows): asyncio's loop serves as well, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`, for the start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
