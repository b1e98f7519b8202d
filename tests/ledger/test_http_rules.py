"""HTTP: every ledger rule and error code (wins, rollbacks, jackpots, bonuses, freezes, limits)."""

from __future__ import annotations

from typing import Any

from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet


def win(id: str, amount: int, *, round_id: str = "r1", close: bool = False) -> dict[str, Any]:
    return {
        "id": id,
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": amount,
        "round_id": round_id,
        "close_round": close,
    }


def rollback(id: str, bet_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "bet_id": bet_id, "player_id": "p1", **extra}


async def balance(api: Api, player: str = "p1") -> int:
    status, body = await api.get("edge", f"/v1/players/{player}/balances")
    assert status == 200, body
    return body["balances"][0]["balance_minor"]


async def test_win_needs_a_round_with_a_bet_and_closing_refuses_later_bets_and_wins(api: Api) -> None:
    await api.player(deposit=1000)
    status, body = await api.post("edge", "/v1/wins", win("w0", 10, round_id="nope"))
    assert status == 404 and body["code"] == "not_found"
    await api.post("edge", "/v1/bets", bet("b1", 100))
    status, body = await api.post("edge", "/v1/wins", win("w1", 0, close=True))
    assert status == 201 and body["balance"]["balance_minor"] == 900
    status, body = await api.post("edge", "/v1/bets", bet("b2", 100))
    assert status == 409 and body["code"] == "round_closed"
    status, body = await api.post("edge", "/v1/wins", win("w2", 5))
    assert status == 409 and body["code"] == "round_closed"
    status, body = await api.get("edge", "/v1/players/p1/rounds?status=open")
    assert body == {"rounds": []}
    status, body = await api.get("edge", "/v1/players/p1/rounds?status=closed")
    assert [r["round_id"] for r in body["rounds"]] == ["r1"] and body["rounds"][0]["bets_minor"] == 100


async def test_rollback_reverses_once_and_repeats_as_success(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 300))
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1"))
    assert status == 201 and body["balance"]["balance_minor"] == 1000 and body["transaction"]["reversed"]
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb2", "b1"))
    assert status == 201 and body["transaction"]["reversed"] is False and body["balance"]["balance_minor"] == 1000


async def test_rollback_after_a_win_is_round_closed(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 300))
    await api.post("edge", "/v1/wins", win("w1", 50))
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1"))
    assert status == 409 and body["code"] == "round_closed"
    assert await balance(api) == 750


async def test_rollback_of_unknown_bet_refuses_the_late_bet_without_charging(api: Api) -> None:
    await api.player(deposit=1000)
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb1", "late", round_id="r1"))
    assert status == 201 and body["transaction"]["bet_found"] is False and body["balance"] is None
    status, body = await api.post("edge", "/v1/bets", bet("late", 100))
    assert status == 409 and body["code"] == "bet_rolled_back"
    assert await balance(api) == 1000


async def test_withdrawal_refuses_overdraw_and_unknown_player_is_not_found(api: Api) -> None:
    await api.player(deposit=100)
    body = {"id": "w1", "player_id": "p1", "currency": "EUR", "amount_minor": 101}
    status, answer = await api.post("cashier", "/v1/withdrawals", body)
    assert status == 422 and answer["code"] == "insufficient_funds"
    status, answer = await api.post("cashier", "/v1/withdrawals", {**body, "id": "w2", "amount_minor": 100})
    assert status == 201 and answer["balance"]["balance_minor"] == 0
    status, answer = await api.post("cashier", "/v1/deposits", {**body, "id": "d9", "player_id": "ghost"})
    assert status == 404 and answer["code"] == "not_found"
    status, answer = await api.post("cashier", "/v1/deposits", {**body, "id": "d8", "currency": "USD"})
    assert status == 422 and answer["code"] == "currency_mismatch"


async def test_frozen_player_money_ops_are_423_until_unfrozen(api: Api) -> None:
    await api.player(deposit=1000)
    status, body = await api.post("admin_write", "/admin/v1/players/p1/freeze", {"reason": "kyc"})
    assert status == 201 and body["player"]["frozen"] is True
    status, body = await api.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 423 and body["code"] == "account_frozen"
    await api.post("admin_write", "/admin/v1/players/p1/unfreeze", {"reason": "ok"})
    assert (await api.post("edge", "/v1/bets", bet("b1", 100)))[0] == 423  # sticky to the id
    assert (await api.post("edge", "/v1/bets", bet("b2", 100)))[0] == 201


async def test_jackpot_contributions_per_edge_payout_reseeds_and_rollback_takes_back(api: Api) -> None:
    await api.player(deposit=100_000)
    status, body = await api.post(
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
    assert status == 201 and body["jackpot"]["pool_minor"] == 1000
    _, b1 = await api.post("edge", "/v1/bets", bet("b1", 5000, via="eu"))
    assert b1["transaction"]["jackpot_contributions"] == [{"jackpot_id": "mega", "amount_minor": 50, "epoch": 1}]
    await api.post("edge", "/v1/bets", bet("b2", 2000, via="us", round_id="r2"))
    await api.post("edge", "/v1/bets", bet("b3", 99, via="us", round_id="r3"))  # share rounds down to 0
    _, jp = await api.get("edge", "/v1/jackpots/mega")
    assert (jp["pool_minor"], jp["epoch"], jp["contributions_by_edge"]) == (1070, 1, {"eu": 50, "us": 20})
    await api.post("edge", "/v1/rollbacks", rollback("rb2", "b2"))
    _, jp = await api.get("edge", "/v1/jackpots/mega")
    assert jp["contributions_by_edge"] == {"eu": 50, "us": 0} and jp["pool_minor"] == 1050
    before = await balance(api)
    status, body = await api.post(
        "edge", "/v1/jackpot-payouts", {"id": "jp1", "jackpot_id": "mega", "player_id": "p1", "round_id": "r1"}
    )
    assert status == 201 and body["transaction"]["amount_minor"] == 1050 and body["transaction"]["epoch"] == 2
    assert await balance(api) == before + 1050
    _, jp = await api.get("edge", "/v1/jackpots/mega")
    assert (jp["pool_minor"], jp["epoch"], jp["contributions_by_edge"]) == (1000, 2, {})
    assert jp["as_of_sequence"] == body["transaction"]["sequence"]
    # The payout's `epoch` is the jackpot's; `ledger_epoch` and the reads' `as_of_epoch` are always
    # the ledger copy's (edges order effects by epoch and sequence across failovers).
    assert body["transaction"]["ledger_epoch"] == 1 and b1["transaction"]["ledger_epoch"] == 1
    assert jp["as_of_epoch"] == 1
    _, bonuses = await api.get("edge", "/v1/players/p1/bonuses")
    assert bonuses["as_of_epoch"] == 1
    status, body = await api.post(
        "edge", "/v1/jackpot-payouts", {"id": "jp2", "jackpot_id": "nope", "player_id": "p1", "round_id": "r1"}
    )
    assert status == 404


async def test_bonus_claim_checks_wagering_expiry_and_double_claim(api: Api, clock: FakeClock) -> None:
    await api.player(deposit=10_000)
    grant = {
        "id": "g1",
        "player_id": "p1",
        "bonus_id": "welcome",
        "currency": "EUR",
        "amount_minor": 500,
        "wagering_requirement_minor": 1000,
        "expires_at": "2026-11-24T10:00:00Z",
    }
    assert (await api.post("admin_write", "/admin/v1/bonuses", grant))[0] == 201
    assert (await api.post("admin_write", "/admin/v1/bonuses", {**grant, "id": "g2"}))[0] == 400
    claim = {"id": "c1", "player_id": "p1", "bonus_id": "welcome"}
    status, body = await api.post("edge", "/v1/bonus-claims", claim)
    assert status == 422 and body["code"] == "wagering_not_met"
    await api.post("edge", "/v1/bets", bet("b1", 600, via="eu"))
    await api.post("edge", "/v1/bets", bet("b2", 400, via="us"))
    _, bonuses = await api.get("edge", "/v1/players/p1/bonuses")
    [b] = bonuses["bonuses"]
    assert (b["wagered_minor"], b["wagered_by_edge"], b["status"]) == (1000, {"eu": 600, "us": 400}, "active")
    assert isinstance(bonuses["as_of_sequence"], int)
    status, body = await api.post("edge", "/v1/bonus-claims", {**claim, "id": "c2"})
    assert status == 201 and body["balance"]["balance_minor"] == 10_000 - 1000 + 500
    status, body = await api.post("edge", "/v1/bonus-claims", {**claim, "id": "c3"})
    assert status == 409 and body["code"] == "already_claimed"
    await api.post(
        "admin_write", "/admin/v1/bonuses", {**grant, "id": "g3", "bonus_id": "late", "wagering_requirement_minor": 0}
    )
    clock.advance(86_400)
    status, body = await api.post("edge", "/v1/bonus-claims", {**claim, "id": "c4", "bonus_id": "late"})
    assert status == 422 and body["code"] == "bonus_expired"
    status, body = await api.post("edge", "/v1/bonus-claims", {**claim, "id": "c5", "bonus_id": "none"})
    assert status == 404


async def test_adjustment_with_expected_version_and_no_overdraw(api: Api) -> None:
    await api.player(deposit=100)
    adj = {
        "id": "a1",
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": -50,
        "reason": "chargeback",
        "expected_version": 0,
    }
    status, body = await api.post("admin_write", "/admin/v1/adjustments", adj)
    assert status == 409 and body["code"] == "version_conflict"
    status, body = await api.post("admin_write", "/admin/v1/adjustments", {**adj, "id": "a2", "expected_version": 1})
    assert status == 201 and body["balance"] == {
        "player_id": "p1",
        "currency": "EUR",
        "balance_minor": 50,
        "version": 2,
    }
    status, body = await api.post(
        "admin_write", "/admin/v1/adjustments", {**adj, "id": "a3", "amount_minor": -51, "expected_version": None}
    )
    assert status == 422 and body["code"] == "insufficient_funds"
    _, trace = await api.get("admin_read", "/admin/v1/transactions/a2/trace")
    assert trace["entries"][0]["principal"] == "admin-write-1" and len(trace["entries"][0]["hash"]) == 64


async def test_request_errors_malformed_unknown_field_too_large_and_bad_limits(api: Api) -> None:
    await api.player()
    async with api.client.post(
        "/v1/bets",
        data=b"{nope",
        headers={"Authorization": "Bearer token-of-edge-0123456789", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == "malformed_json"
    status, body = await api.post("edge", "/v1/bets", {**bet("b1"), "bonus": 1})
    assert status == 400 and body["code"] == "validation_error" and body["field"] == "bonus"
    status, body = await api.post("edge", "/v1/bets", {**bet("b1"), "amount_minor": 1.5})
    assert status == 400 and body["field"] == "amount_minor"
    status, body = await api.post("edge", "/v1/bets", {**bet("b1"), "round_id": "x" * 5000})
    assert status == 413 and body["code"] == "payload_too_large"
    status, body = await api.get("edge", "/v1/players/p1/rounds?limit=51")
    assert status == 400 and body["field"] == "limit"
    status, body = await api.get("edge", "/v1/players/p1/rounds?status=maybe")
    assert status == 400 and body["field"] == "status"
    status, body = await api.get("edge", "/v1/players/bad%20id/balances")
    assert status == 400
    status, body = await api.get("edge", "/v1/transactions/missing")
    assert status == 404 and body["code"] == "not_found"


async def grant_welcome(api: Api, requirement: int = 1000, amount: int = 500) -> None:
    status, body = await api.post(
        "admin_write",
        "/admin/v1/bonuses",
        {
            "id": "g1",
            "player_id": "p1",
            "bonus_id": "welcome",
            "currency": "EUR",
            "amount_minor": amount,
            "wagering_requirement_minor": requirement,
            "expires_at": "2026-11-24T10:00:00Z",
        },
    )
    assert status == 201, body


async def test_a_rollback_cannot_take_back_wagering_that_a_claimed_bonus_needs(api: Api) -> None:
    await api.player(deposit=1000)
    await grant_welcome(api)
    assert (await api.post("edge", "/v1/bets", bet("b1", 1000)))[0] == 201
    status, body = await api.post("edge", "/v1/bonus-claims", {"id": "c1", "player_id": "p1", "bonus_id": "welcome"})
    assert status == 201 and body["balance"]["balance_minor"] == 500
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1"))
    assert status == 409 and body["code"] == "wagering_already_claimed"
    assert await balance(api) == 500  # not 1500 of a 1000 deposit
    status, again = await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1"))
    assert status == 409 and again["code"] == "wagering_already_claimed" and again["replayed"] is True
    _, bonuses = await api.get("edge", "/v1/players/p1/bonuses")
    assert bonuses["bonuses"][0]["wagered_minor"] == 1000


async def test_a_rollback_is_allowed_while_the_claimed_bonus_keeps_its_requirement(api: Api) -> None:
    await api.player(deposit=2000)
    await grant_welcome(api)
    await api.post("edge", "/v1/bets", bet("b1", 1000))
    await api.post("edge", "/v1/bets", bet("b2", 400, round_id="r2"))
    claim = {"id": "c1", "player_id": "p1", "bonus_id": "welcome"}
    assert (await api.post("edge", "/v1/bonus-claims", claim))[0] == 201
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb2", "b2"))
    assert status == 201 and body["transaction"]["reversed"] is True
    assert await balance(api) == 2000 - 1000 + 500
    status, body = await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1"))
    assert status == 409 and body["code"] == "wagering_already_claimed"


async def test_no_win_is_paid_in_a_round_whose_every_bet_was_rolled_back(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100))
    assert (await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1")))[0] == 201
    status, body = await api.post("edge", "/v1/wins", win("w1", 50_000))
    assert status == 409 and body["code"] == "round_refunded"
    assert await balance(api) == 1000
    await api.post("edge", "/v1/bets", bet("b2", 100))  # a new bet in the round: its win is paid
    status, body = await api.post("edge", "/v1/wins", win("w2", 30))
    assert status == 201 and body["balance"]["balance_minor"] == 930


async def test_a_jackpot_payout_needs_a_round_of_the_player_with_a_stake(api: Api) -> None:
    await api.player(deposit=1000)
    status, _ = await api.post(
        "admin_write",
        "/admin/v1/jackpots",
        {"jackpot_id": "mega", "currency": "EUR", "seed_minor": 1000, "contribution_ppm": 0, "game_ids": ["slots"]},
    )
    assert status == 201
    payout = {"id": "jp1", "jackpot_id": "mega", "player_id": "p1", "round_id": "r1"}
    status, body = await api.post("edge", "/v1/jackpot-payouts", payout)
    assert status == 404 and body["code"] == "not_found" and body["field"] == "round_id"
    await api.post("edge", "/v1/bets", bet("b1", 100))
    await api.post("edge", "/v1/rollbacks", rollback("rb1", "b1"))
    status, body = await api.post("edge", "/v1/jackpot-payouts", {**payout, "id": "jp2"})
    assert status == 409 and body["code"] == "round_refunded"
    assert await balance(api) == 1000
    await api.post("edge", "/v1/bets", bet("b2", 100, round_id="r2"))
    status, body = await api.post("edge", "/v1/jackpot-payouts", {**payout, "id": "jp3", "round_id": "r2"})
    assert status == 201 and body["balance"]["balance_minor"] == 1900


async def test_rounds_are_scoped_by_client_like_ids(api: Api) -> None:
    await api.player(deposit=1000)
    assert (await api.post("edge", "/v1/bets", bet("a-bet", 100, round_id="7", client_id="gs-a")))[0] == 201
    # Client B never bet in round "7": it cannot close client A's round.
    status, body = await api.post(
        "edge", "/v1/wins", {**win("b-win", 0, round_id="7", close=True), "client_id": "gs-b"}
    )
    assert status == 404 and body["code"] == "not_found" and body["field"] == "round_id"
    status, body = await api.post("edge", "/v1/wins", {**win("a-win", 40, round_id="7"), "client_id": "gs-a"})
    assert status == 201 and body["balance"]["balance_minor"] == 940
    assert "round_client_id" not in body["transaction"]  # the journal's scope is not part of the answer
    # B plays a round "7" of its own, next to A's.
    assert (await api.post("edge", "/v1/bets", bet("b-bet", 10, round_id="7", client_id="gs-b")))[0] == 201
    status, body = await api.post(
        "edge", "/v1/wins", {**win("b-win2", 5, round_id="7", close=True), "client_id": "gs-b"}
    )
    assert status == 201
    status, body = await api.post("edge", "/v1/bets", bet("a-bet2", 10, round_id="7", client_id="gs-a"))
    assert status == 201  # A's round is still open: B closed only its own
    _, rounds = await api.get("edge", "/v1/players/p1/rounds")
    assert [(r["round_id"], r["client_id"], r["status"], r["bets_minor"]) for r in rounds["rounds"]] == [
        ("7", "gs-a", "open", 110),
        ("7", "gs-b", "closed", 10),
    ]
    payout = {"id": "jp1", "jackpot_id": "mega", "player_id": "p1", "round_id": "7", "client_id": "gs-c"}
    await api.post(
        "admin_write",
        "/admin/v1/jackpots",
        {"jackpot_id": "mega", "currency": "EUR", "seed_minor": 1, "contribution_ppm": 0, "game_ids": ["slots"]},
    )
    status, body = await api.post("edge", "/v1/jackpot-payouts", payout)
    assert status == 404 and body["field"] == "round_id"  # a jackpot too is paid in the client's own round


async def test_a_game_servers_open_rounds_are_its_own_that_still_hold_a_stake(api: Api) -> None:
    """What an edge shows a game server resuming a player: another client's round is not its to
    finish, and a round whose every bet was rolled back holds nothing to resume (a hundred of
    those once filled the page and hid the live round)."""
    await api.player(deposit=10_000)
    await api.post("edge", "/v1/bets", bet("other", 10, round_id="r-other", client_id="gs2"))
    for i in range(3):
        await api.post("edge", "/v1/bets", bet(f"dead{i}", 10, round_id=f"a-dead{i}", client_id="gs"))
        status, _ = await api.post(
            "edge", "/v1/rollbacks", {"id": f"rb{i}", "bet_id": f"dead{i}", "player_id": "p1", "client_id": "gs"}
        )
        assert status == 201
    await api.post("edge", "/v1/bets", bet("live", 10, round_id="z-live", client_id="gs"))
    status, body = await api.get("edge", "/v1/players/p1/rounds?status=open&client_id=gs&limit=1")
    assert status == 200 and [(r["round_id"], r["client_id"]) for r in body["rounds"]] == [("z-live", "gs")]
    status, body = await api.get("edge", "/v1/players/p1/rounds?status=open")
    assert sorted(r["round_id"] for r in body["rounds"]) == ["r-other", "z-live"]
    status, body = await api.get("edge", "/v1/players/p1/rounds?client_id=gs")  # every status: all four
    assert len(body["rounds"]) == 4
    status, body = await api.get("edge", "/v1/players/p1/rounds?client_id=not%20an%20id")
    assert status == 400 and body["field"] == "client_id"
