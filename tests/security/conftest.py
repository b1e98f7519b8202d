"""Fixtures for the security suite: one live cluster (a ledger and three edges as real processes,
debug logging so that a leak anywhere shows in the logs) for the whole package, and a client that
refuses any answer holding a credential (tests/support/cluster_client.py).

When the cluster stops, after the last test of the package whatever their order, every answer
recorded in `SEEN_BODIES` and every file the processes wrote (their logs included) is searched for
the cluster's clear credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from harness.cluster import Cluster, seed
from tests.support.cluster_client import SEEDED_PLAYERS, SEEN_BODIES, Client
from tests.support.leaks import cluster_tokens, leaks_in_bodies, leaks_in_files

REQUEST_TIMEOUT_S = 30.0


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def cluster(tmp_path_factory) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("security-cluster"), log_level="debug")
    try:
        await c.start()
        c.write_info(await seed(c, players=SEEDED_PLAYERS))
        yield c
    finally:
        await c.stop()
    tokens = cluster_tokens(c)
    leaks = leaks_in_bodies(SEEN_BODIES, tokens) + leaks_in_files(c.root, tokens)
    SEEN_BODIES.clear()
    assert leaks == [], "credentials leaked during the security suite"


@pytest_asyncio.fixture(loop_scope="package")
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as http:
        yield Client(cluster, http)
