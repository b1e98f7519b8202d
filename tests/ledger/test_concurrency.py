"""Concurrency over HTTP: the single writer serializes money, so no bet overdraws."""

from __future__ import annotations

import asyncio

from tests.support.ledger import Api, bet


async def test_200_concurrent_bets_of_1_against_100_exactly_100_succeed(api: Api) -> None:
    await api.player(deposit=100)
    answers = await asyncio.gather(
        *(api.post("edge", "/v1/bets", bet(f"b{i}", 1, round_id=f"r{i % 7}")) for i in range(200))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(201) == 100 and statuses.count(422) == 100
    assert all(body["code"] == "insufficient_funds" for status, body in answers if status == 422)
    balances = sorted(body["balance"]["balance_minor"] for status, body in answers if status == 201)
    assert balances == list(range(100))  # every success saw all the successes before it
    _status, body = await api.get("edge", "/v1/players/p1/balances")
    assert body["balances"][0]["balance_minor"] == 0
    _status, report = await api.post("admin_read", "/admin/v1/audit/verify")
    assert report["ok"] and report["head_sequence"] == 2 + 200


async def test_concurrent_retries_of_one_id_commit_once(api: Api) -> None:
    await api.player(deposit=100)
    answers = await asyncio.gather(*(api.post("edge", "/v1/bets", bet("same", 10, via=f"e{i}")) for i in range(20)))
    assert sorted(s for s, _ in answers) == [200] * 19 + [201]
    assert len({b["transaction"]["sequence"] for _, b in answers}) == 1
    _status, body = await api.get("edge", "/v1/players/p1/balances")
    assert body["balances"][0]["balance_minor"] == 90
