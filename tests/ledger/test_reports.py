"""Finance reports reconcile to the journal, to the unit.

A mixed history (bets, wins, rollbacks, round refunds, jackpot contributions and payouts, bonus
grants and claims, deposits, withdrawals, adjustments; two currencies, three games, two clients,
three UTC days) goes through the real ledger over HTTP on every backend. The journal is then
exported (`GET /admin/v1/journal/export`) and every report is recomputed here from the export's
POSTINGS alone (which accounts moved, by how much), independently of core_ledger/domain/reports.py,
and compared: GGR rows, cash rows, liabilities, grouped variants, and the CSV and NDJSON forms.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from core_ledger.app import create_app
from core_ledger.domain.accounts import system_account
from core_ledger.domain.reports import PLAY_TABLE
from core_ledger.domain.state import State
from core_ledger.reports_http import REPORTS
from core_ledger.store import Head, Store
from tests.support.clock import FakeClock
from tests.support.ledger import Api, auth_headers, bet, ledger_config
from tests.support.ledger_cli import ledger_cli

GAMES = {"EUR": ("slots", "roulette"), "USD": ("poker", "slots")}
CLIENTS = ("gs-a", "gs-b")
PLAYERS = ("p1", "p2", "p3")
DAYS = 3
STEPS_PER_DAY = 14
RANGE = "from=2026-11-01&to=2026-12-31"
PLAY_SUMS = (
    "bets_minor",
    "bet_count",
    "wins_minor",
    "win_count",
    "rollbacks_minor",
    "rollback_count",
    "refunds_minor",
    "refund_count",
    "jackpot_contributions_minor",
    "jackpot_payouts_minor",
    "jackpot_payout_count",
    "bonus_cost_minor",
    "bonus_claim_count",
)
CASH_SUMS = (
    "deposits_minor",
    "deposit_count",
    "withdrawals_minor",
    "withdrawal_count",
    "adjustments_minor",
    "adjustment_count",
    "jackpot_seeds_minor",
)


# --- driving a history through the ledger --------------------------------------------------------


class History:
    """Sends a seeded, bounded mix of every money transaction through the API, day by day."""

    def __init__(self, api: Api, clock: FakeClock, seed: int = 7) -> None:
        self.api, self.clock, self.rng = api, clock, random.Random(seed)
        self.n = 0
        self.open_rounds: list[tuple[str, str, str, str]] = []  # (client, player, round, currency)

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    async def _edge(self, path: str, body: dict[str, Any], client: str) -> tuple[int, Any]:
        return await self.api.post("edge", path, {**body, "via": "eu", "client_id": client})

    async def setup(self) -> None:
        for p in PLAYERS:
            await self.api.player(p, ("EUR", "USD"))
            for cur in ("EUR", "USD"):
                status, body = await self.api.post(
                    "cashier",
                    "/v1/deposits",
                    {"id": self._id("dep"), "player_id": p, "currency": cur, "amount_minor": 5_000},
                )
                assert status == 201, body
        for jackpot_id, cur, games in (("jp-eur", "EUR", ["slots"]), ("jp-usd", "USD", ["poker"])):
            status, body = await self.api.post(
                "admin_write",
                "/admin/v1/jackpots",
                {
                    "jackpot_id": jackpot_id,
                    "currency": cur,
                    "seed_minor": 1_000,
                    "contribution_ppm": 20_000,
                    "game_ids": games,
                },
            )
            assert status == 201, body
        status, body = await self.api.post(
            "admin_write",
            "/admin/v1/bonuses",
            {
                "id": "grant-1",
                "player_id": "p1",
                "bonus_id": "welcome",
                "currency": "EUR",
                "amount_minor": 300,
                "wagering_requirement_minor": 50,
                "expires_at": "2027-01-01T00:00:00Z",
            },
        )
        assert status == 201, body

    async def step(self) -> None:
        rng = self.rng
        player, cur, client = rng.choice(PLAYERS), rng.choice(("EUR", "USD")), rng.choice(CLIENTS)
        game = rng.choice(GAMES[cur])
        round_id, bet_id = self._id("r"), self._id("b")
        body = bet(bet_id, rng.randint(10, 400), player=player, round_id=round_id, game=game, currency=cur)
        status, _ = await self._edge("/v1/bets", body, client)
        if status != 201:
            return
        what = rng.choice(("win", "win", "rollback", "open", "payout", "second_bet"))
        if what == "second_bet":  # two bets in one round, then a win settles it
            again = bet(self._id("b"), rng.randint(10, 100), player=player, round_id=round_id, game=game, currency=cur)
            await self._edge("/v1/bets", again, client)
            what = "win"
        if what == "win":
            win = {
                "id": self._id("w"),
                "player_id": player,
                "currency": cur,
                "amount_minor": rng.choice((0, rng.randint(1, 900))),
                "round_id": round_id,
                "close_round": rng.random() < 0.7,
            }
            await self._edge("/v1/wins", win, client)
        elif what == "rollback":
            await self._edge("/v1/rollbacks", {"id": self._id("rb"), "bet_id": bet_id, "player_id": player}, client)
        elif what == "payout":
            jackpot = "jp-eur" if cur == "EUR" else "jp-usd"
            payout = {"id": self._id("jp"), "jackpot_id": jackpot, "player_id": player, "round_id": round_id}
            await self._edge("/v1/jackpot-payouts", payout, client)
        else:
            self.open_rounds.append((client, player, round_id, cur))

    async def cashier_and_admin(self) -> None:
        rng = self.rng
        for p in PLAYERS:
            cur = rng.choice(("EUR", "USD"))
            await self.api.post(
                "cashier",
                "/v1/withdrawals",
                {"id": self._id("wd"), "player_id": p, "currency": cur, "amount_minor": rng.randint(1, 300)},
            )
        await self.api.post(
            "cashier",
            "/v1/deposits",
            {"id": self._id("dep"), "player_id": rng.choice(PLAYERS), "currency": "USD", "amount_minor": 777},
        )
        for amount in (25, -10, 0):  # an adjustment of 0 moves nothing but is counted
            status, body = await self.api.post(
                "admin_write",
                "/admin/v1/adjustments",
                {
                    "id": self._id("adj"),
                    "player_id": rng.choice(PLAYERS),
                    "currency": rng.choice(("EUR", "USD")),
                    "amount_minor": amount,
                    "reason": "goodwill",
                },
            )
            assert status == 201, body
        if self.open_rounds:  # an interrupted round refunded by an operator
            client, player, round_id, _ = self.open_rounds.pop(0)
            status, body = await self.api.post(
                "admin_write",
                f"/admin/v1/rounds/{player}/{round_id}/settle",
                {"policy": "refund", "reason": "interrupted", "client_id": client},
            )
            assert status in (200, 201, 409), body

    async def run(self) -> None:
        await self.setup()
        for day in range(DAYS):
            for _ in range(STEPS_PER_DAY):
                await self.step()
                self.clock.advance(self.rng.randint(60, 1800))
            if day == 0:
                claim = {"id": "claim-1", "player_id": "p1", "bonus_id": "welcome"}
                await self.api.post("edge", "/v1/bets", {**bet("wager-1", 60, round_id="wager"), "client_id": "gs-a"})
                status, body = await self.api.post("edge", "/v1/bonus-claims", {**claim, "client_id": "gs-a"})
                assert status == 201, body
            await self.cashier_and_admin()
            self.clock.advance(86_400)


# --- recomputing the reports from the export's postings ------------------------------------------


def _kind(account: str) -> str:
    return account.split(":", 1)[0]


def recompute(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every report, from the postings of the exported entries (the only use of request fields is
    to name the game and client a movement belongs to)."""
    play: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(PLAY_SUMS, 0))
    cash: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(CASH_SUMS, 0))
    balances: dict[str, int] = defaultdict(int)
    game_of_bet: dict[tuple[str, str], str] = {}
    game_of_round: dict[tuple[str, str, str], str] = {}
    pool_currency: dict[str, str] = {}
    for entry in entries:
        tx, postings = entry["transaction"], entry["postings"]
        if tx["outcome"] != "committed":
            assert postings == []
            continue
        r, client, day = tx["request"], tx["client_id"] or "", tx["committed_at"][:10]
        by_kind: dict[str, int] = defaultdict(int)
        for p in postings:
            balances[p["account"]] += p["amount_minor"]
            by_kind[_kind(p["account"])] += p["amount_minor"]
        cur = postings[0]["currency"] if postings else r.get("currency")  # a win of 0 moves nothing
        to_player, pools = by_kind["player"], by_kind["jackpot"]
        kind = tx["type"]
        if kind == "bet":
            game_of_bet[(client, tx["id"])] = r["game_id"]
            game_of_round[(client, r["player_id"], r["round_id"])] = r["game_id"]
            row = play[(day, cur, r["game_id"], client)]
            row["bets_minor"] -= to_player
            row["bet_count"] += 1
            row["jackpot_contributions_minor"] += pools
        elif kind == "win":
            row = play[(day, cur, game_of_round[(client, r["player_id"], r["round_id"])], client)]
            row["wins_minor"] += to_player
            row["win_count"] += 1
        elif kind == "rollback" and postings:
            row = play[(day, cur, game_of_bet[(client, r["bet_id"])], client)]
            row["rollbacks_minor"] += to_player
            row["rollback_count"] += 1
            row["jackpot_contributions_minor"] += pools
        elif kind == "round_refund":
            scope = r["round_client_id"]
            row = play[(day, cur, game_of_round[(scope, r["player_id"], r["round_id"])], scope)]
            row["refunds_minor"] += to_player
            row["refund_count"] += 1
            row["jackpot_contributions_minor"] += pools
        elif kind == "jackpot_payout":
            row = play[(day, cur, game_of_round[(client, r["player_id"], r["round_id"])], client)]
            row["jackpot_payouts_minor"] += to_player
            row["jackpot_payout_count"] += 1
            cash[(day, cur)]["jackpot_seeds_minor"] -= by_kind["house"]
        elif kind == "bonus_claim":
            row = play[(day, cur, "", client)]
            row["bonus_cost_minor"] += to_player
            row["bonus_claim_count"] += 1
        elif kind in ("deposit", "withdrawal", "adjustment"):
            row = cash[(day, cur)]
            name = {"deposit": "deposits", "withdrawal": "withdrawals", "adjustment": "adjustments"}[kind]
            row[f"{name}_minor"] += -to_player if kind == "withdrawal" else to_player
            row[f"{name[:-1]}_count"] += 1
        elif kind == "jackpot_create":
            pool_currency[r["jackpot_id"]] = r["currency"]
            cash[(day, cur)]["jackpot_seeds_minor"] += pools
        else:
            assert not postings, kind  # every type that moves money is counted above
    liabilities: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(
            (
                "player_balances_minor",
                "jackpot_liability_minor",
                "bonus_liability_minor",
                "house_position_minor",
                "cash_held_minor",
            ),
            0,
        )
    )
    for account, balance in balances.items():
        kind = _kind(account)
        if kind == "jackpot":
            liabilities[pool_currency[account.split(":", 1)[1]]]["jackpot_liability_minor"] += balance
            continue
        cur = account.rsplit(":", 1)[1]
        member = {
            "player": "player_balances_minor",
            "house": "house_position_minor",
            "bonus": "bonus_liability_minor",
            "cashier": "cash_held_minor",
        }[kind]
        liabilities[cur][member] += -balance if kind in ("bonus", "cashier") else balance
    return {"play": dict(play), "cash": dict(cash), "liabilities": dict(liabilities), "balances": dict(balances)}


def ggr_of(sums: dict[str, int]) -> int:
    return (
        sums["bets_minor"]
        - sums["wins_minor"]
        - sums["rollbacks_minor"]
        - sums["refunds_minor"]
        - sums["jackpot_contributions_minor"]
    )


def summed(rows: dict[tuple[str, ...], dict[str, int]], pick: Callable[[tuple[str, ...]], tuple[str, ...]]) -> dict:
    out: dict[tuple[str, ...], dict[str, int]] = {}
    for key, sums in rows.items():
        into = out.setdefault(pick(key), dict.fromkeys(sums, 0))
        for name, value in sums.items():
            into[name] += value
    return out


def keyed(rows: list[dict[str, Any]], dims: tuple[str, ...], sums: tuple[str, ...]) -> dict:
    return {tuple(row[d] or "" for d in dims): {s: row[s] for s in sums} for row in rows}


async def _export(api: Api) -> list[dict[str, Any]]:
    async with api.client.get("/admin/v1/journal/export", headers=auth_headers("admin_read")) as resp:
        assert resp.status == 200
        return [orjson.loads(line) for line in (await resp.read()).splitlines() if line]


async def _text(api: Api, path: str, accept: str | None = None) -> tuple[str, str]:
    headers = {**auth_headers("admin_read"), **({"Accept": accept} if accept else {})}
    async with api.client.get(path, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return resp.content_type, await resp.text()


def _from_csv(text: str) -> list[dict[str, Any]]:
    def cell(value: str) -> Any:
        return int(value) if value.lstrip("-").isdigit() else (value or None)

    return [{k: cell(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


async def _reports(api: Api) -> dict[str, Any]:
    out = {}
    for name in ("ggr", "cash"):
        status, out[name] = await api.get("admin_read", f"/admin/v1/reports/{name}?{RANGE}")
        assert status == 200, out[name]
    status, out["liabilities"] = await api.get("admin_read", "/admin/v1/reports/liabilities")
    assert status == 200, out["liabilities"]
    return out


@pytest.fixture
async def ledger(storage: Callable[[], Store], aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    return Api(await aiohttp_client(create_app(ledger_config(tmp_path / "data"), store=storage(), clock=clock)))


async def test_every_report_recomputed_from_the_journal_export_matches_to_the_unit(
    ledger: Api, clock: FakeClock
) -> None:
    await History(ledger, clock).run()
    entries = await _export(ledger)
    committed = {e["transaction"]["type"] for e in entries if e["transaction"]["outcome"] == "committed"}
    assert {"bet", "win", "rollback", "round_refund", "jackpot_payout", "bonus_claim"} <= committed
    assert {"deposit", "withdrawal", "adjustment", "jackpot_create", "bonus_grant"} <= committed
    truth = recompute(entries)
    assert len({k[0] for k in truth["play"]}) == DAYS and len({k[3] for k in truth["play"]}) == 2
    reports = await _reports(ledger)
    head = entries[-1]["sequence"]
    assert reports["ggr"]["up_to_sequence"] == reports["cash"]["up_to_sequence"] == head
    assert reports["liabilities"]["up_to_sequence"] == head

    play_dims = ("day", "currency", "game_id", "client_id")
    ggr_rows = reports["ggr"]["rows"]
    assert keyed(ggr_rows, play_dims, PLAY_SUMS) == truth["play"]
    for row in ggr_rows:
        assert row["ggr_minor"] == ggr_of(row) and row["ngr_minor"] == ggr_of(row) - row["bonus_cost_minor"]
    assert keyed(reports["cash"]["rows"], ("day", "currency"), CASH_SUMS) == truth["cash"]
    members = tuple(truth["liabilities"]["EUR"])
    assert keyed(reports["liabilities"]["rows"], ("currency",), members) == {
        (cur,): sums for cur, sums in truth["liabilities"].items()
    }

    # The house's balance is, to the unit, GGR minus jackpot seeds minus adjustments.
    for cur in ("EUR", "USD"):
        house = truth["balances"][system_account("house", cur)]
        ggr = sum(ggr_of(s) for k, s in truth["play"].items() if k[1] == cur)
        costs = sum(s["jackpot_seeds_minor"] + s["adjustments_minor"] for k, s in truth["cash"].items() if k[1] == cur)
        assert house == ggr - costs

    # Grouped and filtered: sums of the same rows.
    _, by_game = await ledger.get("admin_read", f"/admin/v1/reports/ggr?{RANGE}&group_by=game_id")
    assert by_game["group_by"] == ["currency", "game_id"]
    assert keyed(by_game["rows"], ("currency", "game_id"), PLAY_SUMS) == summed(truth["play"], lambda k: (k[1], k[2]))
    assert all("day" not in row and "client_id" not in row for row in by_game["rows"])
    day2 = sorted({k[0] for k in truth["play"]})[1]
    _, one = await ledger.get(
        "admin_read", f"/admin/v1/reports/ggr?from={day2}&to={day2}&currency=EUR&client_id=gs-b&group_by=currency"
    )
    expected = summed(
        {k: v for k, v in truth["play"].items() if k[:2] == (day2, "EUR") and k[3] == "gs-b"}, lambda k: (k[1],)
    )
    assert keyed(one["rows"], ("currency",), PLAY_SUMS) == expected and expected
    _, cash_total = await ledger.get("admin_read", f"/admin/v1/reports/cash?{RANGE}&group_by=currency&currency=USD")
    usd = summed({k: v for k, v in truth["cash"].items() if k[1] == "USD"}, lambda k: (k[1],))
    assert keyed(cash_total["rows"], ("currency",), CASH_SUMS) == usd
    assert (
        cash_total["rows"][0]["net_cash_minor"] == usd[("USD",)]["deposits_minor"] - usd[("USD",)]["withdrawals_minor"]
    )

    # CSV and NDJSON carry the same numbers (and the sequence on every row).
    for path, dims, sums in (
        (f"/admin/v1/reports/ggr?{RANGE}", play_dims, (*PLAY_SUMS, "ggr_minor", "ngr_minor")),
        (f"/admin/v1/reports/cash?{RANGE}", ("day", "currency"), (*CASH_SUMS, "net_cash_minor")),
        ("/admin/v1/reports/liabilities", ("currency",), members),
    ):
        _, json_answer = await ledger.get("admin_read", path)
        want = keyed(json_answer["rows"], dims, sums)
        media, text = await _text(ledger, path, "text/csv")
        rows = _from_csv(text)
        assert media == "text/csv" and keyed(rows, dims, sums) == want and {r["up_to_sequence"] for r in rows} == {head}
        media, text = await _text(ledger, path + ("&" if "?" in path else "?") + "format=ndjson")
        lines = [orjson.loads(line) for line in text.splitlines()]
        assert media == "application/x-ndjson" and keyed(lines, dims, sums) == want
        assert {line["up_to_sequence"] for line in lines} == {head}


async def test_reports_are_the_same_after_the_report_tables_are_dropped_and_rebuilt(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    config = ledger_config(tmp_path / "data")
    client = await aiohttp_client(create_app(config, clock=clock))
    api = Api(client)
    await History(api, clock, seed=11).run()
    before = await _reports(api)
    assert before["ggr"]["rows"] and before["cash"]["rows"]
    await client.close()
    db = config.data_dir / "ledger.db"
    assert db.exists()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM report_play_days")
    conn.execute("DELETE FROM report_cash_days")
    conn.commit()
    conn.close()
    done = await ledger_cli("rebuild", str(db))
    assert done.returncode == 0 and orjson.loads(done.stdout)["rebuilt"] is True, done.stderr
    again = Api(await aiohttp_client(create_app(config, clock=clock)))
    assert await _reports(again) == before


async def test_bad_report_queries_are_refused_with_a_stable_code_and_change_nothing(api: Api) -> None:
    await api.player("p1", deposit=1000)
    cases = {
        "/admin/v1/reports/ggr?to=2026-11-23": "from",
        "/admin/v1/reports/ggr?from=2026-11-23": "to",
        "/admin/v1/reports/ggr?from=2026-13-01&to=2026-12-01": "from",
        "/admin/v1/reports/ggr?from=20261101&to=2026-12-01": "from",
        "/admin/v1/reports/ggr?from=2026-12-02&to=2026-12-01": "from",
        f"/admin/v1/reports/ggr?{RANGE}&format=xml": "format",
        f"/admin/v1/reports/ggr?{RANGE}&group_by=day,player_id": "group_by",
        f"/admin/v1/reports/ggr?{RANGE}&currency=eur": "currency",
        f"/admin/v1/reports/ggr?{RANGE}&game_id=a%20b": "game_id",
        f"/admin/v1/reports/cash?{RANGE}&group_by=game_id": "group_by",
        "/admin/v1/reports/liabilities?format=pdf": "format",
    }
    for path, field in cases.items():
        status, body = await api.get("admin_read", path)
        assert (status, body["code"], body.get("field")) == (400, "validation_error", field), path
    status, body = await api.get("cashier", f"/admin/v1/reports/ggr?{RANGE}")
    assert (status, body["code"]) == (403, "forbidden")
    assert len(await _export(api)) == 2  # nothing was journaled by the refusals


async def test_a_report_reading_more_rows_than_its_bound_is_refused(api: Api, clock: FakeClock) -> None:
    await api.player("p1", deposit=1000)
    clock.advance(86_400)
    await api.post("cashier", "/v1/deposits", {"id": "d2", "player_id": "p1", "currency": "EUR", "amount_minor": 5})
    api.client.app[REPORTS].rows_max = 1
    status, body = await api.get("admin_read", f"/admin/v1/reports/cash?{RANGE}")
    assert (status, body["code"]) == (422, "report_too_large")
    status, body = await api.get("admin_read", "/admin/v1/reports/cash?from=2026-11-24&to=2026-11-24")
    assert status == 200 and [r["deposits_minor"] for r in body["rows"]] == [5]


async def test_the_answer_in_json_by_default_and_by_accept(api: Api) -> None:
    await api.player("p1", deposit=1000)
    _, body = await api.get("admin_read", f"/admin/v1/reports/cash?{RANGE}")
    assert body["report"] == "cash" and body["from"] == "2026-11-01" and body["group_by"] == ["day", "currency"]
    assert body["rows"] == [
        {
            "day": "2026-11-23",
            "currency": "EUR",
            "deposits_minor": 1000,
            "deposit_count": 1,
            "withdrawals_minor": 0,
            "withdrawal_count": 0,
            "adjustments_minor": 0,
            "adjustment_count": 0,
            "jackpot_seeds_minor": 0,
            "net_cash_minor": 1000,
        }
    ]
    media, text = await _text(api, f"/admin/v1/reports/cash?{RANGE}", "application/x-ndjson, text/csv;q=0.5")
    assert media == "application/x-ndjson" and orjson.loads(text)["deposits_minor"] == 1000
    media, _ = await _text(api, f"/admin/v1/reports/cash?{RANGE}", "*/*")
    assert media == "application/json"


# --- the pieces: one delta per key per commit, and stores that add it --------------------------


def test_a_commit_group_writes_one_delta_per_touched_key() -> None:
    """The writer's overlay keeps no report rows: what a group adds to a key is summed in memory
    and handed to the commit once; a rebuild state also keeps the totals (its tables)."""
    names = ("bets_minor", "bet_count")
    for complete in (False, True):
        state = State(complete=complete)
        key = ("2026-11-23", "EUR", "slots", "gs-a")
        for amount in (10, 20, 30):
            state.add(PLAY_TABLE, key, {"bets_minor": amount, "bet_count": 1}, names)
        state.add(PLAY_TABLE, ("2026-11-23", "EUR", "poker", "gs-a"), {"bet_count": 1}, names)
        assert state.take_dirty()[PLAY_TABLE] == [
            (key, {"bets_minor": 60, "bet_count": 3}),
            (("2026-11-23", "EUR", "poker", "gs-a"), {"bets_minor": 0, "bet_count": 1}),
        ]
        state.add(PLAY_TABLE, key, {"bets_minor": 5, "bet_count": 1}, names)
        assert state.take_dirty()[PLAY_TABLE] == [(key, {"bets_minor": 5, "bet_count": 1})]  # deltas only
        assert state.rows(PLAY_TABLE) == ({key: {"bets_minor": 65, "bet_count": 4}} if complete else {}) | (
            {("2026-11-23", "EUR", "poker", "gs-a"): {"bets_minor": 0, "bet_count": 1}} if complete else {}
        )


async def test_every_store_adds_report_deltas_and_reads_them_in_one_snapshot(store: Store) -> None:
    key = ("2026-11-23", "EUR", "slots", "gs-a")
    other = ("2026-11-25", "EUR", "slots", "gs-b")
    await store.commit([], {PLAY_TABLE: [(key, {"bets_minor": 7, "bet_count": 1})]}, Head())
    await store.commit(
        [],
        {PLAY_TABLE: [(key, {"bets_minor": 2**40, "bet_count": 2}), (other, {"bets_minor": 1, "bet_count": 1})]},
        Head(),
    )
    # A row holds sums: a member never added is 0 (stored as such, or absent).
    given = ("bets_minor", "bet_count")
    dumped = await store.dump(PLAY_TABLE)
    assert {k: {m: d[m] for m in given} for k, d in dumped.items()} == {
        key: {"bets_minor": 7 + 2**40, "bet_count": 3},
        other: {"bets_minor": 1, "bet_count": 1},
    }
    assert all(v == 0 for d in dumped.values() for m, v in d.items() if m not in given)
    every = ("day", "currency", "game_id", "client_id")
    members = ("bets_minor", "bet_count")

    async def sums(day_from: str, day_to: str, group_by: tuple[str, ...], limit: int = 10, **equals: str) -> Any:
        return await store.report_sums(
            PLAY_TABLE,
            day_from=day_from,
            day_to=day_to,
            equals=equals,
            group_by=group_by,
            members=members,
            limit=limit,
        )

    rows, head = await sums("2026-11-23", "2026-11-24", every)
    assert rows == [(key, {"bets_minor": 7 + 2**40, "bet_count": 3})] and head == 0
    rows, _ = await sums("2026-11-01", "2026-11-30", every, client_id="gs-b")
    assert [k for k, _ in rows] == [other]
    rows, _ = await sums("2026-11-01", "2026-11-30", ("currency",))
    assert rows == [(("EUR",), {"bets_minor": 8 + 2**40, "bet_count": 4})]
    rows, _ = await sums("2026-11-01", "2026-11-30", ("currency", "client_id"), limit=1)
    assert rows == [(("EUR", "gs-a"), {"bets_minor": 7 + 2**40, "bet_count": 3})]
    await store.commit(
        [],
        {
            "accounts": [
                (("house:EUR",), {"balance_minor": 5, "version": 1}),
                (("player:p:EUR",), {"balance_minor": 1, "version": 1}),
            ]
        },
        Head(),
    )
    accounts, head = await store.accounts_by_prefix(["house:", "bonus:"], 10)
    assert accounts == {"house:EUR": {"balance_minor": 5, "version": 1}} and head == 0
