"""Fixtures for durability tests: the power-loss shim, built once, and a ledger on a simulated disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.powered_ledger import PoweredLedger, build_shim


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shim(tmp_path_factory.mktemp("powerloss"))


@pytest.fixture
async def powered(tmp_path: Path, shim: Path) -> AsyncIterator[PoweredLedger]:
    ledger = PoweredLedger(tmp_path, shim)
    try:
        yield ledger
    finally:
        ledger.stop()
