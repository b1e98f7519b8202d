"""Standby: tails the primary's journal, verifies and applies it, refuses writes, reports lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from core_ledger.app import create_app
from core_ledger.app_keys import READS, SERVICE, STANDBY
from core_ledger.domain.state import TABLES
from core_ledger.replica_apply import ReplicationError
from core_ledger.standby_tailer import ACKED_HEADER, HEAD_HEADER, StandbySettings, journal_lines
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, auth_headers, bet, ledger_config, standby_of
from tests.support.polling import wait_for


async def test_standby_replicates_refuses_writes_and_reports_lag(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    primary_app = create_app(ledger_config(tmp_path / "primary"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    settings = StandbySettings(
        str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], page_limit=7, poll_interval_s=0.05
    )
    standby_app = create_app(ledger_config(tmp_path / "standby"), clock=clock, standby=settings)
    standby = Api(await aiohttp_client(standby_app))
    assert TOKENS["replica"] not in repr(settings)

    await primary.player(deposit=1000)
    await primary.post(
        "admin_write",
        "/admin/v1/jackpots",
        {"jackpot_id": "j", "currency": "EUR", "seed_minor": 10, "contribution_ppm": 20_000, "game_ids": ["slots"]},
    )
    for i in range(20):
        await primary.post("edge", "/v1/bets", bet(f"b{i}", 10 + i, round_id=f"r{i // 4}", via="eu"))
    await primary.post("edge", "/v1/rollbacks", {"id": "rb", "bet_id": "b19", "player_id": "p1"})
    head = primary_app[SERVICE].head
    await wait_for(lambda: standby_app[SERVICE].head == head)

    for table in TABLES:
        assert await standby_app[SERVICE].store.dump(table) == await primary_app[SERVICE].store.dump(table), table
    assert await standby.get("edge", "/v1/players/p1/balances") == await primary.get("edge", "/v1/players/p1/balances")
    status, body = await standby.post("edge", "/v1/bets", bet("x", 1))
    assert status == 503 and body["code"] == "not_primary"
    status, repl = await standby.get("admin_read", "/admin/v1/replication")
    assert repl["role"] == "standby" and repl["primary"]["lag_sequences"] == 0 and repl["head"]["hash"] == head.hash
    _, metrics = await standby.get("admin_read", "/metrics")
    assert "ledger_replica_lag_sequences 0.0" in metrics and "ledger_replica_lag_seconds 0.0" in metrics
    status, ready = await standby.get("", "/readyz")
    assert status == 200 and ready["role"] == "standby"
    _, report = await standby.post("admin_read", "/admin/v1/audit/verify")
    assert report["ok"] and report["head_hash"] == head.hash


async def test_standby_refuses_a_journal_that_does_not_chain(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    app = create_app(
        ledger_config(tmp_path / "s"),
        clock=clock,
        standby=StandbySettings("http://127.0.0.1:9", "t", poll_interval_s=10),
    )
    await aiohttp_client(app)
    await app[STANDBY].stop()  # drive it by hand
    forged = {"sequence": 1, "epoch": 1, "transaction": {}, "postings": [], "prev_hash": "0" * 64, "hash": "ab" * 32}
    try:
        await app[SERVICE].apply_replicated([(1, orjson.dumps(forged).decode())])
    except ReplicationError as e:
        assert e.first_bad_sequence == 1
    else:
        raise AssertionError("a forged entry was applied")
    assert app[SERVICE].head.sequence == 0


async def test_promoted_standby_takes_writes_in_a_higher_epoch(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    primary_app, primary, standby_app, standby = await primary_and_standby(
        aiohttp_server, aiohttp_client, tmp_path, clock
    )
    await primary.player(deposit=500)
    head = primary_app[SERVICE].head
    await wait_for(lambda: standby_app[SERVICE].head == head)
    status, promoted = await standby.post("admin_write", "/admin/v1/promote")
    assert status == 200 and promoted["epoch"] == head.epoch + 1 and promoted["head"]["sequence"] == head.sequence
    status, body = await standby.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 201 and body["transaction"]["epoch"] == head.epoch + 1
    assert body["balance"]["balance_minor"] == 400
    _, report = await standby.post("admin_read", "/admin/v1/audit/verify")
    assert report["ok"] and report["head_sequence"] == head.sequence + 2  # the promotion's record, the bet
    assert (await standby.get("", "/readyz"))[0] == 200
    assert (await standby.post("admin_write", "/admin/v1/promote"))[1]["epoch"] == head.epoch + 1  # no-op now


async def test_an_entry_holding_unicode_line_separators_replicates_whole(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    # orjson leaves U+2028, U+2029 and U+0085 unescaped in a string; `str.splitlines` splits at them.
    primary_app, primary, standby_app, standby = await primary_and_standby(
        aiohttp_server, aiohttp_client, tmp_path, clock
    )
    await primary.player(deposit=1000)
    note = {"note": "a\u2028b\u2029c\u0085d"}
    assert (await primary.post("edge", "/v1/bets", bet("sep1", 10, metadata=note)))[0] == 201
    assert (await primary.post("edge", "/v1/bets", bet("sep2", 10)))[0] == 201
    head = primary_app[SERVICE].head
    await wait_for(lambda: standby_app[SERVICE].head == head)
    assert standby_app[STANDBY].broken_at is None
    status, tx = await standby.get("edge", "/v1/transactions/sep1")
    assert status == 200 and tx["metadata"] == note


@pytest.mark.parametrize(
    ("what", "answer_headers"),
    [
        ("an epoch past the store's integers", {"X-Ledger-Epoch": str(2**63 - 1)}),
        ("an epoch in other digits", {"X-Ledger-Epoch": "²"}),
        ("acknowledged beyond the head", {"X-Journal-Head": "1", "X-Journal-Acknowledged": str(10**17)}),
        ("a head that is not a number", {"X-Journal-Head": "-1"}),
    ],
)
async def test_a_primarys_lying_headers_fail_the_poll_and_change_nothing(
    aiohttp_server: Any,
    aiohttp_client: Any,
    tmp_path: Path,
    clock: FakeClock,
    what: str,
    answer_headers: dict[str, str],
) -> None:
    async def journal(request: web.Request) -> web.Response:
        return web.Response(text="", headers=answer_headers)

    liar = web.Application()
    liar.router.add_get("/v1/journal", journal)
    server = await aiohttp_server(liar)
    app = standby_of(server, tmp_path / "s", clock)
    await aiohttp_client(app)
    await app[STANDBY].stop()  # drive it by hand
    epoch = app[SERVICE].epoch
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError):  # counted and retried with backoff, as an unreachable primary
            await app[STANDBY].poll_once(session)
    assert (app[SERVICE].epoch, app[SERVICE].head.sequence, app[STANDBY].primary_acked) == (epoch, 0, 0), what


def test_a_journal_page_is_split_at_newlines_only() -> None:
    assert journal_lines("") == []
    assert journal_lines('{"a":"x\u2028y"}\n{"b":1}\n') == ['{"a":"x\u2028y"}', '{"b":1}']
    with pytest.raises(ValueError):  # a page cut short: its last entry is not whole
        journal_lines('{"b":1}\n{"c"')


async def primary_and_standby(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> tuple[web.Application, Api, web.Application, Api]:
    """A primary on loopback and a standby tailing it: each app and a client of it."""
    primary_app = create_app(ledger_config(tmp_path / "primary"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    standby_app = standby_of(primary_server, tmp_path / "standby", clock)
    return primary_app, Api(await aiohttp_client(primary_server)), standby_app, Api(await aiohttp_client(standby_app))


async def test_a_journal_page_never_says_more_is_acknowledged_than_its_head(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """The head and what is acknowledged are read at one instant, before the page: a commit while
    the page was read put the acknowledged sequence beyond the head, and the standby dropped the
    page as a lying answer (under load, page after page)."""
    app = create_app(ledger_config(tmp_path / "p"), clock=clock)
    primary = Api(await aiohttp_client(app))
    await primary.player(deposit=1000)
    reads, read_page = app[READS], app[READS].journal_page

    async def page_while_a_bet_commits(after: int, limit: int) -> list[str]:
        lines = await read_page(after, limit)
        status, body = await primary.post("edge", "/v1/bets", bet(f"b{after}", 1))
        assert status == 201, body
        return lines

    reads.journal_page = page_while_a_bet_commits  # type: ignore[method-assign]  # a commit lands while the page is read
    resp = await primary.client.get("/v1/journal?after_sequence=0", headers=auth_headers("replica"))
    assert resp.status == 200
    head, acked = int(resp.headers[HEAD_HEADER]), int(resp.headers[ACKED_HEADER])
    assert acked <= head < app[SERVICE].head.sequence
