"""Interrupted rounds: listed when open longer than stale_round_after_s, counted, settled by the
policy (the job) or by hand, by idempotent admin transactions naming the round; a game server that
resumes later gets round_refunded / round_closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.config import ConfigError

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE, STALE_ROUNDS
from core_ledger.config import parse
from core_ledger.journal_checks import rebuild_differences
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet, ledger_config


def win(id: str, amount: int, round_id: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"id": id, "player_id": "p1", "currency": "EUR", "amount_minor": amount, "round_id": round_id, **extra}


async def ledger(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, **config: Any) -> tuple[Api, Any]:
    app = create_app(
        ledger_config(tmp_path / "data", stale_round_after_s=60.0, stale_round_check_interval_s=3600.0, **config),
        clock=clock,
    )
    return Api(await aiohttp_client(app)), app


async def balance(api: Api) -> int:
    _, body = await api.get("edge", "/v1/players/p1/balances")
    return body["balances"][0]["balance_minor"]


async def test_old_open_rounds_are_listed_oldest_first_and_paged(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    api, app = await ledger(aiohttp_client, tmp_path, clock)
    await api.player(deposit=1000)
    for i in range(3):
        await api.post("edge", "/v1/bets", bet(f"b{i}", 10, round_id=f"r{i}"))
    await api.post("edge", "/v1/wins", win("w2", 0, round_id="r2", close_round=True))  # closed: not stale
    await api.post("edge", "/v1/bets", bet("b-rolled", 10, round_id="r-rolled"))
    rolled_back = await api.post("edge", "/v1/rollbacks", {"id": "rb", "bet_id": "b-rolled", "player_id": "p1"})
    assert rolled_back[1]["transaction"]["reversed"]  # holds no bet: not stale, though its status is open
    status, page = await api.get("admin_read", "/admin/v1/stale-rounds")
    assert status == 200 and page["rounds"] == [] and not page["has_more"]  # too young yet
    clock.advance(61)
    await api.post("edge", "/v1/bets", bet("young", 10, round_id="r-young"))
    status, page = await api.get("admin_read", "/admin/v1/stale-rounds?limit=1")
    assert status == 200, page
    assert [r["round_id"] for r in page["rounds"]] == ["r0"] and page["has_more"]
    status, page = await api.get("admin_read", f"/admin/v1/stale-rounds?after_sequence={page['next_after_sequence']}")
    assert [r["round_id"] for r in page["rounds"]] == ["r1"] and not page["has_more"]
    status, page = await api.get("admin_read", "/admin/v1/rounds?status=stale")  # the operator's list, filtered
    assert status == 200, page
    assert sorted(r["round_id"] for r in page["rounds"]) == ["r0", "r1"]
    status, page = await api.get("admin_read", "/admin/v1/stale-rounds?older_than_s=0")
    assert [r["round_id"] for r in page["rounds"]] == ["r0", "r1", "r-young"]
    assert await app[STALE_ROUNDS].check() == 2  # policy none: counted, nothing settled
    assert app[STALE_ROUNDS].metrics.stale_rounds._value.get() == 2
    status, page = await api.get("admin_read", "/admin/v1/stale-rounds")
    assert len(page["rounds"]) == 2


async def test_the_refund_policy_gives_bets_back_once_and_a_resumed_game_server_is_told(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    api, app = await ledger(aiohttp_client, tmp_path, clock, stale_round_policy="refund")
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100))
    await api.post("edge", "/v1/bets", bet("b2", 50))
    await api.post("edge", "/v1/bets", bet("b3", 70, round_id="r-won"))
    await api.post("edge", "/v1/wins", win("w3", 5, round_id="r-won"))
    assert await balance(api) == 1000 - 220 + 5
    clock.advance(120)
    assert await app[STALE_ROUNDS].check() == 2
    assert await balance(api) == 1000 - 70 + 5  # r1's bets refunded; r-won (a win) closed instead
    assert await app[STALE_ROUNDS].check() == 0  # settled: nothing stale, nothing journaled twice
    status, problem = await api.post("edge", "/v1/wins", win("w1", 10))
    assert status == 409 and problem["code"] == "round_refunded"
    status, problem = await api.post("edge", "/v1/bets", bet("b4", 10))
    assert status == 409 and problem["code"] == "round_refunded"
    status, problem = await api.post("edge", "/v1/wins", win("w4", 10, round_id="r-won"))
    assert status == 409 and problem["code"] == "round_closed"
    status, answer = await api.post("edge", "/v1/rollbacks", {"id": "rb1", "bet_id": "b1", "player_id": "p1"})
    assert status == 201 and answer["transaction"]["reversed"] is False  # nothing left to give back
    # visible in the statement and the trace
    status, statement = await api.get("admin_read", "/admin/v1/players/p1/statement?currency=EUR")
    refund = [e for e in statement["entries"] if e["type"] == "round_refund"]
    assert [e["amount_minor"] for e in refund] == [150]
    status, trace = await api.get("admin_read", f"/admin/v1/transactions/{refund[0]['id']}/trace")
    assert status == 200 and trace["entries"][0]["principal"] == "stale-round-job"


async def test_an_operator_settles_one_round_by_hand(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    api, _ = await ledger(aiohttp_client, tmp_path, clock)
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100))
    path = "/admin/v1/rounds/p1/r1/settle"
    status, problem = await api.post("admin_write", path, {"policy": "burn", "reason": "x"})
    assert status == 400 and problem["code"] == "validation_error"
    status, problem = await api.post(
        "admin_write", "/admin/v1/rounds/p1/nope/settle", {"policy": "close", "reason": "x"}
    )
    assert status == 404 and problem["code"] == "not_found"
    status, answer = await api.post("admin_write", path, {"policy": "refund", "reason": "provider outage"})
    assert status == 201, answer
    tx = answer["transaction"]
    assert tx["type"] == "round_refund" and tx["round_id"] == "r1" and tx["amount_minor"] == 100
    assert answer["balance"]["balance_minor"] == 1000
    status, again = await api.post("admin_write", path, {"policy": "refund", "reason": "provider outage"})
    assert status == 200 and again["replayed"] and again["transaction"]["sequence"] == tx["sequence"]
    status, problem = await api.post("admin_write", path, {"policy": "close", "reason": "second thoughts"})
    assert status == 409 and problem["code"] == "round_refunded"
    status, rounds = await api.get("edge", "/v1/players/p1/rounds?status=refunded")
    assert [(r["round_id"], r["status"], r["bets_minor"]) for r in rounds["rounds"]] == [("r1", "refunded", 0)]
    assert await balance(api) == 1000


async def test_a_refund_takes_back_jackpot_contributions_and_wagering_per_edge(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    api, _ = await ledger(aiohttp_client, tmp_path, clock)
    await api.player(deposit=5000)
    status, _ = await api.post(
        "admin_write",
        "/admin/v1/jackpots",
        {
            "jackpot_id": "mega",
            "currency": "EUR",
            "seed_minor": 1000,
            "contribution_ppm": 10_000,
            "game_ids": ["slots"],
        },
    )
    assert status == 201
    status, _ = await api.post(
        "admin_write",
        "/admin/v1/bonuses",
        {
            "id": "g1",
            "player_id": "p1",
            "bonus_id": "welcome",
            "currency": "EUR",
            "amount_minor": 500,
            "wagering_requirement_minor": 10_000,
            "expires_at": "2099-01-01T00:00:00Z",
        },
    )
    assert status == 201
    await api.post("edge", "/v1/bets", bet("b1", 1000, via="eu"))
    await api.post("edge", "/v1/bets", bet("b2", 2000, via="us"))
    _, jackpot = await api.get("edge", "/v1/jackpots/mega")
    assert jackpot["pool_minor"] == 1030 and jackpot["contributions_by_edge"] == {"eu": 10, "us": 20}
    status, answer = await api.post(
        "admin_write", "/admin/v1/rounds/p1/r1/settle", {"policy": "refund", "reason": "provider outage"}
    )
    assert status == 201, answer
    assert [(b["bet_id"], b["amount_minor"]) for b in answer["transaction"]["refunded_bets"]] == [
        ("b1", 1000),
        ("b2", 2000),
    ]
    assert answer["balance"]["balance_minor"] == 5000
    _, jackpot = await api.get("edge", "/v1/jackpots/mega")
    assert jackpot["pool_minor"] == 1000 and jackpot["contributions_by_edge"] == {"eu": 0, "us": 0}
    _, bonuses = await api.get("edge", "/v1/players/p1/bonuses")
    [welcome] = bonuses["bonuses"]
    assert welcome["wagered_minor"] == 0 and welcome["wagered_by_edge"] == {"eu": 0, "us": 0}
    status, audit = await api.post("admin_read", "/admin/v1/audit/verify")
    assert status == 200 and audit["ok"], audit


async def test_the_new_indexes_are_what_a_rebuild_from_the_journal_gives(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    api, app = await ledger(aiohttp_client, tmp_path, clock, stale_round_policy="close")
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100, external_ref="prov-1", metadata={"k": "v"}))
    await api.post("edge", "/v1/bets", bet("b2", 100, round_id="r2", external_ref="prov-1"))
    await api.post("edge", "/v1/bets", bet("b3", 100, round_id="r3"))
    await api.post("edge", "/v1/rollbacks", {"id": "rb3", "bet_id": "b3", "player_id": "p1"})
    await api.post("admin_write", "/admin/v1/rounds/p1/r2/settle", {"policy": "refund", "reason": "x"})
    clock.advance(120)
    assert await app[STALE_ROUNDS].check() == 1  # r1 (r2 refunded, r3 rolled back entirely)
    store = app[SERVICE].store
    assert len(await store.dump("external_refs")) == 2 and len(await store.dump("round_openings")) == 3
    assert await rebuild_differences(store) == []


def test_the_policy_is_one_of_three_and_the_threshold_not_negative(tmp_path: Path) -> None:
    for bad in ({"stale_round_policy": "burn"}, {"stale_round_after_s": -1.0}):
        with pytest.raises(ConfigError, match="stale_round"):
            parse({"ledger": {"data_dir": str(tmp_path), **bad}}, tmp_path, {})
    config = parse(
        {"ledger": {"data_dir": str(tmp_path), "stale_round_after_s": 3600.0, "stale_round_policy": "refund"}},
        tmp_path,
        {},
    )
    assert (config.stale_round_after_s, config.stale_round_policy) == (3600.0, "refund")


async def test_listing_stale_rounds_while_they_are_off_is_refused_clearly(api: Api) -> None:
    status, problem = await api.get("admin_read", "/admin/v1/rounds?status=stale")
    assert status == 400 and problem["code"] == "validation_error" and problem["field"] == "status"


async def test_a_refund_refused_while_the_round_held_no_stake_binds_nothing(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """The job listed a round, the game server rolled its bet back before the job's refund, so the
    refund was refused; the resumed game server then bet again in the still-open round. The
    refusal used to be journaled under the round's settlement id, which refused every later refund
    of it: the second stake could never be given back."""
    api, app = await ledger(aiohttp_client, tmp_path, clock, stale_round_policy="refund")
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 300))
    clock.advance(120)
    job = app[STALE_ROUNDS]
    [listed] = (await job.reads.stale_rounds(job.after_s, after_sequence=0, limit=10))["rounds"]
    status, _ = await api.post("edge", "/v1/rollbacks", {"id": "rb1", "bet_id": "b1", "player_id": "p1"})
    assert status == 201
    await job.settle(listed)  # refused: the round holds no stake any more
    status, refunds = await api.get("admin_read", "/admin/v1/transactions?type=round_refund")
    assert status == 200 and refunds["transactions"] == []  # nothing journaled, the id stays free
    status, _ = await api.post("edge", "/v1/bets", bet("b2", 500))  # the round is still open
    assert status == 201 and await balance(api) == 500
    clock.advance(120)
    assert await job.check() == 1
    assert await balance(api) == 1000  # the second stake given back
    assert await job.check() == 0
