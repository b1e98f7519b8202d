"""Liabilities read from the system accounts and jackpot pools, on every storage backend, paging
through more system accounts than one page holds."""

from __future__ import annotations

import pytest

from core_ledger import liabilities
from core_ledger.store import Head, JournalRow, Store


async def test_liabilities_on_every_backend_page_through_system_accounts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(liabilities, "PAGE_ROWS", 2)
    balances = {
        "bonus:EUR": -300,
        "cashier:EUR": -10_000,
        "cashier:GBP": -700,
        "cashier:USD": 0,
        "house:EUR": 2_000,
        "house:GBP": 50,
        "jackpot:mega": 1_500,
        "jackpot:mini": 40,
        "player:p1:EUR": 6_800,
        "player:p2:GBP": 610,
    }
    assert sum(balances.values()) == 0  # double entry
    accounts = [((name,), {"balance_minor": b, "version": 1}) for name, b in balances.items()]
    jackpots = [(("mega",), {"currency": "EUR"}), (("mini",), {"currency": "GBP"})]
    await store.commit(
        [JournalRow(1, "tx1", '{"sequence":1}')], {"accounts": accounts, "jackpots": jackpots}, Head(1, "ab" * 32, 1)
    )
    got = await liabilities.read_liabilities(store)
    assert got == {
        ("player_balances", "EUR"): 6_800,
        ("player_balances", "GBP"): 610,
        ("player_balances", "USD"): 0,
        ("jackpot_pools", "EUR"): 1_500,
        ("jackpot_pools", "GBP"): 40,
        ("jackpot_pools", "USD"): 0,
        ("bonus_granted", "EUR"): 300,
        ("bonus_granted", "GBP"): 0,
        ("bonus_granted", "USD"): 0,
    }
