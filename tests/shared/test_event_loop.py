"""The services serve on uvloop (a dependency except on Windows), and say so at start-up."""

from __future__ import annotations

import asyncio

from shared import event_loop


def test_the_services_loop_is_uvloop_and_runs_coroutines() -> None:
    loop = event_loop.new_loop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, result=42)) == 42
        assert event_loop.name(loop) == "uvloop"  # a dependency on every platform but Windows
    finally:
        loop.close()


def test_asyncio_own_loop_is_named_so() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert event_loop.name(loop) == "asyncio"
    finally:
        loop.close()
