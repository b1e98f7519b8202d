"""Fail-stop: a broken money invariant inside the writer halts it (500 ledger_halted, not a
retryable 503), turns /readyz red, raises `ledger_halted`, logs the failing command, and stores
nothing of it. A storage failure stays a retryable 503."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from core_ledger.app_keys import SERVICE
from core_ledger.domain import SPECS, money
from core_ledger.domain.state import player_account, system_account
from tests.support.ledger import Api


def swap_rule(monkeypatch: pytest.MonkeyPatch, transaction_type: str, rule: Any) -> None:
    """Replace the `decide` of a type's spec for this test."""
    monkeypatch.setitem(SPECS, transaction_type, replace(SPECS[transaction_type], decide=rule))


def unbalanced_deposit(view: Any, cmd: Any, ctx: Any) -> money.Decided:
    """A deposit rule with a bug: it credits the player without debiting the cashier."""
    postings, result = money.deposit(view, cmd, ctx)
    return [p for p in postings if p["account"] != system_account("cashier", "EUR")], result


def deposit(id: str, amount: int = 10) -> dict[str, Any]:
    return {"id": id, "player_id": "p1", "currency": "EUR", "amount_minor": amount}


async def test_a_broken_invariant_halts_the_writer_instead_of_a_retryable_503(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.player(deposit=100)
    swap_rule(monkeypatch, "deposit", unbalanced_deposit)
    with capture_logs() as logs:
        status, body = await api.post("cashier", "/v1/deposits", deposit("d1"))
    assert status == 500 and body["code"] == "ledger_halted", body
    [halt] = [e for e in logs if e["event"] == "ledger_halted"]
    assert halt["log_level"] == "critical" and halt["command_type"] == "deposit" and halt["id"] == "d1"
    assert halt["request"]["amount_minor"] == 10 and "do not balance" in halt["error"]

    swap_rule(monkeypatch, "deposit", money.deposit)  # even a sound command now
    for _ in range(2):  # the same answer every time: no retry can help
        status, body = await api.post("cashier", "/v1/deposits", deposit("d2"))
        assert status == 500 and body["code"] == "ledger_halted"
    status, body = await api.post(
        "edge",
        "/v1/batch",
        {
            "actions": [
                {
                    "op": "bet",
                    "body": {
                        "id": "b1",
                        "player_id": "p1",
                        "currency": "EUR",
                        "amount_minor": 1,
                        "round_id": "r",
                        "game_id": "g",
                    },
                }
            ]
        },
    )
    assert status == 200 and body["results"][0]["status"] == 500
    assert body["results"][0]["body"]["code"] == "ledger_halted"

    status, ready = await api.get("", "/readyz")
    assert status == 503 and ready["status"] == "halted" and "do not balance" in ready["halted"]
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_halted 1.0" in metrics and "ledger_invariant_failures_total 1.0" in metrics
    assert "ledger_commit_failures_total 0.0" in metrics  # not counted as a storage outage
    _, balances = await api.get("edge", "/v1/players/p1/balances")
    assert balances["balances"][0]["balance_minor"] == 100  # nothing of the broken command was stored
    status, _ = await api.get("edge", "/v1/transactions/d1")
    assert status == 404


async def test_a_fold_that_breaks_an_invariant_also_halts(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that overdraws a player (the fold's non-negative check) halts too, whatever `python -O` says."""
    await api.player(deposit=100)

    def overdraw(view: Any, cmd: Any, ctx: Any) -> money.Decided:
        postings = money.transfer(player_account("p1", "EUR"), system_account("cashier", "EUR"), 1000, "EUR")
        return postings, {}

    swap_rule(monkeypatch, "withdrawal", overdraw)
    status, body = await api.post("cashier", "/v1/withdrawals", deposit("w1", 1000))
    assert status == 500 and body["code"] == "ledger_halted"
    status, ready = await api.get("", "/readyz")
    assert status == 503 and "negative" in ready["halted"]


async def test_a_healthy_ledger_reports_not_halted(api: Api) -> None:
    await api.player(deposit=100)
    status, ready = await api.get("", "/readyz")
    assert status == 200 and ready["status"] == "ready"
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_halted 0.0" in metrics and "ledger_invariant_failures_total 0.0" in metrics


async def test_a_bug_in_the_writer_loop_halts_it_and_answers_everyone_waiting(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.player(deposit=100)
    service = api.client.server.app[SERVICE]

    async def broken_prepare(*args: Any) -> Any:
        raise RuntimeError("a bug in the pipeline")

    monkeypatch.setattr(service.writer, "_prepare", broken_prepare)  # what every group goes through
    with capture_logs() as logs:
        status, body = await api.post("cashier", "/v1/deposits", deposit("d1"))
    assert status == 500 and body["code"] == "ledger_halted"
    assert [e["error"] for e in logs if e["event"] == "ledger_halted"] == ["RuntimeError('a bug in the pipeline')"]
    status, body = await api.post("cashier", "/v1/deposits", deposit("d2"))
    assert status == 500 and body["code"] == "ledger_halted"
    status, ready = await api.get("", "/readyz")
    assert status == 503 and ready["status"] == "halted"


async def test_a_bug_in_planning_the_rows_halts_instead_of_a_retryable_503(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rows_needed` is pure: when it raises, every retry would hit it again, as with a judging bug."""
    await api.player(deposit=100)

    def broken_plan(view: Any, cmd: Any, need: Any) -> None:
        raise KeyError("a bug in the deposit's plan")

    monkeypatch.setitem(SPECS, "deposit", replace(SPECS["deposit"], plan=broken_plan))
    with capture_logs() as logs:
        status, body = await api.post("cashier", "/v1/deposits", deposit("d1"))
    assert status == 500 and body["code"] == "ledger_halted", body
    [halt] = [e for e in logs if e["event"] == "ledger_halted"]
    assert halt["command_type"] == "deposit" and halt["id"] == "d1" and "a bug in the deposit" in halt["error"]
    assert not [e for e in logs if e["event"] == "ledger_judge_failed"]
    status, ready = await api.get("", "/readyz")
    assert status == 503 and ready["status"] == "halted"
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_halted 1.0" in metrics and "ledger_commit_failures_total 0.0" in metrics


async def test_a_store_that_fails_to_load_rows_stays_a_retryable_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    await api.player(deposit=100)
    service = api.client.server.app[SERVICE]

    async def failing_load(*args: Any) -> Any:
        raise OSError("disk I/O error")

    monkeypatch.setattr(service.writer.store, "load", failing_load)
    # Rows the deposit needs that are not cached (its fresh idempotency keys are known absent
    # without a load, core_ledger/key_filter.py; its player's rows are not once they are dropped).
    service.writer._overlay.restart()
    with capture_logs() as logs:
        status, body = await api.post("cashier", "/v1/deposits", deposit("d1"))
    assert status == 503 and body["code"] == "storage_unavailable", body
    assert [e["error"] for e in logs if e["event"] == "ledger_judge_failed"] == ["OSError('disk I/O error')"]
    monkeypatch.undo()  # the store is back: the same request now commits
    status, body = await api.post("cashier", "/v1/deposits", deposit("d1"))
    assert status == 201 and body["balance"]["balance_minor"] == 110, body
    status, ready = await api.get("", "/readyz")
    assert status == 200 and ready["status"] == "ready"


async def test_a_bug_in_a_commit_halts_instead_of_a_retryable_503_for_its_whole_group(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that fails on what it was given (rows that do not encode, say), not on the backend,
    fails again on every retry: answered as `storage_unavailable`, the retries of the same ids took
    every other command grouped with them down too, for good."""
    await api.player(deposit=100)
    store = api.client.server.app[SERVICE].writer.store
    commit = store.commit

    async def commit_that_cannot_encode(journal: Any, rows: Any, head: Any) -> None:
        if any(row.tx_id == "poison" for row in journal):
            raise TypeError("Type is not JSON serializable: Decimal")
        await commit(journal, rows, head)

    monkeypatch.setattr(store, "commit", commit_that_cannot_encode)
    with capture_logs() as logs:
        status, body = await api.post("cashier", "/v1/deposits", deposit("poison"))
    assert status == 500 and body["code"] == "ledger_halted", body
    assert [e["error"] for e in logs if e["event"] == "ledger_halted"] == [
        "TypeError('Type is not JSON serializable: Decimal')"
    ]
    status, ready = await api.get("", "/readyz")
    assert status == 503 and ready["status"] == "halted"
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_commit_failures_total 0.0" in metrics
