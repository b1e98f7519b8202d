"""Fixtures for in-process edge tests: a fake ledger and edges on loopback, always stopped.
The helpers they use live in tests/support/edges.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from harness.cluster import free_port
from tests.support.edges import GS, Edges
from tests.support.fake_ledger import FakeLedger


@pytest.fixture
async def fake_ledger() -> AsyncIterator[tuple[FakeLedger, TestServer]]:
    ledger = FakeLedger()
    server = TestServer(ledger.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield ledger, server
    finally:
        await server.close()


@pytest.fixture
async def edges(tmp_path, fake_ledger) -> AsyncIterator[Callable[..., Awaitable[Edges]]]:
    made: list[Edges] = []

    async def make(*ids: str, **overrides: Any) -> Edges:
        e = Edges(tmp_path, str(fake_ledger[1].make_url("")).rstrip("/"), {i: free_port() for i in ids})
        made.append(e)
        for i in ids:
            await e.start(i, **overrides)
        return e

    try:
        yield make
    finally:
        for e in made:
            for i in list(e.servers):
                await e.stop(i)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {GS}"}, timeout=aiohttp.ClientTimeout(total=10)
    ) as s:
        yield s
