"""The event stream (GET /v1/events) and its named consumers: NDJSON and SSE, long polling woken by
commits, only acknowledged entries, durable cursors that only move forward, lag as a metric, roles."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from shared.auth import TokenEntry, hash_token
from shared.config import ConfigError

from core_ledger.app import create_app
from core_ledger.domain.journal import seal
from core_ledger.events import read_events
from core_ledger.failover import Acks
from core_ledger.store import Head, JournalRow, MemoryStore
from core_ledger.watermark import Watermark
from tests.support.clock import FakeClock
from tests.support.ledger import Api, ledger_config

EVENTS_TOKEN = "token-of-events-0123456789"
EVENTS = {"Authorization": f"Bearer {EVENTS_TOKEN}"}


@pytest.fixture
async def events_api(aiohttp_client: Any, tmp_path: Path) -> Api:
    config = ledger_config(
        tmp_path / "data", page_limit_max=50, event_wait_s_max=5, event_consumers_max=2, webhook_hosts=("127.0.0.1",)
    )
    config = replace(config, tokens=(*config.tokens, TokenEntry("warehouse", "events", hash_token(EVENTS_TOKEN))))
    return Api(await aiohttp_client(create_app(config, clock=FakeClock())))


async def get_events(api: Api, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with api.client.get(f"/v1/events{query}", headers={**EVENTS, **(headers or {})}) as resp:
        text = await resp.text()
        if resp.status >= 400:
            return resp.status, orjson.loads(text), resp.headers
        if resp.content_type == "text/event-stream":
            return resp.status, text, resp.headers
        return resp.status, [orjson.loads(line) for line in text.splitlines()], resp.headers


async def call_events(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.client.request(method, path, json=body, headers=EVENTS) as resp:
        return resp.status, await resp.json()


class TestStream:
    async def test_committed_transactions_in_order_with_ids_postings_and_a_next_cursor(self, events_api: Api) -> None:
        api = events_api
        await api.player("p1", deposit=100)
        status, body = await api.post(
            "cashier", "/v1/withdrawals", {"id": "w-big", "player_id": "p1", "currency": "EUR", "amount_minor": 10_000}
        )
        assert status == 422 and body["code"] == "insufficient_funds"  # journaled as a refusal (sequence 3)
        status, events, headers = await get_events(api)
        assert status == 200 and [(e["sequence"], e["type"]) for e in events] == [(1, "player_create"), (2, "deposit")]
        deposit = events[1]
        assert deposit["id"] == "dep-p1" and deposit["outcome"] == "committed" and deposit["time"]
        assert deposit["request"]["amount_minor"] == 100 and len(deposit["hash"]) == 64
        assert sorted(p["amount_minor"] for p in deposit["postings"]) == [-100, 100]
        assert headers["X-Events-Next-After"] == "3" and headers["X-Events-Acknowledged"] == "3"
        _, with_refusals, _ = await get_events(api, "?include_rejected=true&after=2")
        assert [(e["sequence"], e["outcome"], e["code"]) for e in with_refusals] == [
            (3, "rejected", "insufficient_funds")
        ]
        _, page, headers = await get_events(api, "?after=1&limit=1")
        assert [e["sequence"] for e in page] == [2] and headers["X-Events-Next-After"] == "2"
        _, none, headers = await get_events(api, "?after=3")
        assert none == [] and headers["X-Events-Next-After"] == "3"

    async def test_a_long_poll_wakes_on_the_commit_and_times_out_without_one(self, events_api: Api) -> None:
        api = events_api
        await api.player("p1")
        started = time.monotonic()
        _, none, _ = await get_events(api, "?after=1&wait_s=1")
        assert none == [] and time.monotonic() - started >= 0.9
        poll = asyncio.ensure_future(get_events(api, "?after=1&wait_s=5"))
        await asyncio.sleep(0.2)
        assert not poll.done()
        started = time.monotonic()
        await api.post("cashier", "/v1/deposits", {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 7})
        _, events, _ = await asyncio.wait_for(poll, 5)
        assert [e["id"] for e in events] == ["d1"] and time.monotonic() - started < 2.5

    async def test_server_sent_events_carry_the_sequence_as_id_and_resume_from_last_event_id(
        self, events_api: Api
    ) -> None:
        api = events_api
        await api.player("p1", deposit=5)
        status, text, headers = await get_events(api, headers={"Accept": "text/event-stream"})
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        frames = [f for f in text.split("\n\n") if f.startswith("id:")]
        assert [f.splitlines()[0] for f in frames] == ["id: 1", "id: 2"]
        assert frames[1].splitlines()[1] == "event: deposit"
        assert orjson.loads(frames[1].splitlines()[2].removeprefix("data: "))["sequence"] == 2
        _, resumed, _ = await get_events(api, headers={"Accept": "text/event-stream", "Last-Event-ID": "1"})
        assert [line for line in resumed.splitlines() if line.startswith("id:")] == ["id: 2"]
        for bad in ("x", "9" * 19, "-1"):  # 9...9 overflows a store's integer
            status, body, _ = await get_events(api, headers={"Accept": "text/event-stream", "Last-Event-ID": bad})
            assert status == 400 and body["field"] == "Last-Event-ID", bad

    async def test_a_page_of_refusals_only_is_read_past_by_pull_and_by_server_sent_events(
        self, events_api: Api
    ) -> None:
        """Five refusals in a row, then a deposit: a page of refusals only was served empty, and
        forever to a reader holding its place (a named consumer's cursor, an EventSource whose
        Last-Event-ID got no `id` from it), which then never saw the deposit."""
        api = events_api
        await api.player("p1", deposit=10)  # sequences 1 and 2
        for i in range(5):  # 3 to 7
            withdrawal = {"id": f"w{i}", "player_id": "p1", "currency": "EUR", "amount_minor": 999}
            assert (await api.post("cashier", "/v1/withdrawals", withdrawal))[0] == 422
        await api.post(
            "cashier", "/v1/deposits", {"id": "late", "player_id": "p1", "currency": "EUR", "amount_minor": 5}
        )
        _, events, headers = await get_events(api, "?after=2&limit=5")
        assert [e["id"] for e in events] == ["late"] and headers["X-Events-Next-After"] == "8"
        _, text, _ = await get_events(api, "?limit=2", {"Accept": "text/event-stream"})
        assert [line for line in text.splitlines() if line.startswith("id:")] == ["id: 1", "id: 2"]
        _, text, _ = await get_events(api, "?limit=5", {"Accept": "text/event-stream", "Last-Event-ID": "2"})
        assert [line for line in text.splitlines() if line.startswith("id:")] == ["id: 8"]
        assert "event: deposit" in text
        # Refusals after the last event: an `id` frame alone moves Last-Event-ID past them.
        await api.post(
            "cashier", "/v1/withdrawals", {"id": "w9", "player_id": "p1", "currency": "EUR", "amount_minor": 999}
        )
        _, text, _ = await get_events(api, "", {"Accept": "text/event-stream", "Last-Event-ID": "8"})
        assert text.endswith("id: 9\n\n") and "data:" not in text

    async def test_bad_queries_are_refused_and_change_nothing(self, events_api: Api) -> None:
        for query, field in (
            ("?after=-1", "after"),
            ("?after=x", "after"),
            ("?wait_s=6", "wait_s"),
            ("?limit=0", "limit"),
            ("?include_rejected=yes", "include_rejected"),
            ("?consumer=a%20b", "consumer"),
        ):
            status, body, _ = await get_events(events_api, query)
            assert status == 400 and body["code"] == "validation_error" and body["field"] == field, query
        status, body, _ = await get_events(events_api, "?consumer=nobody")
        assert status == 404 and body["field"] == "consumer"

    async def test_the_events_role_reads_events_only_and_others_may_not_read_them(self, events_api: Api) -> None:
        api = events_api
        for method, path in (
            ("GET", "/v1/journal"),
            ("GET", "/admin/v1/consumers"),
            ("GET", "/v1/players/p1/balances"),
            ("GET", "/admin/v1/audit/checkpoints"),
        ):
            status, body = await call_events(api, method, path)
            assert status == 403 and body["code"] == "forbidden", path
        status, _ = await call_events(
            api, "POST", "/v1/deposits", {"id": "x", "player_id": "p1", "currency": "EUR", "amount_minor": 1}
        )
        assert status == 403
        for role in ("edge", "cashier", "replica"):
            status, _ = await api.get(role, "/v1/events")
            assert status == 403, role
        assert (await api.get("admin_read", "/v1/events"))[0] == 200


async def test_only_acknowledged_entries_are_served() -> None:
    """With a synchronous standby an entry is served once a standby confirmed it, never before:
    a failover may drop what is committed but unconfirmed."""
    store, prev = MemoryStore(), "0" * 64
    rows = []
    for sequence in (1, 2, 3):
        entry = seal(
            {
                "type": "deposit",
                "id": f"d{sequence}",
                "client_id": "c",
                "via": None,
                "principal": "c",
                "committed_at": "t",
                "request": {},
                "outcome": "committed",
                "result": {},
            },
            [],
            sequence=sequence,
            epoch=1,
            prev_hash=prev,
        )
        prev = entry["hash"]
        rows.append(JournalRow(sequence, f"d{sequence}", orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()))
    await store.commit(rows, {}, Head(3, prev, 1))
    service = SimpleNamespace(
        store=store, confirmed_sequence=1, head=Head(3, prev, 1), commits=Watermark(3), acks=Acks()
    )
    page = await read_events(service, 0, 10, wait_s=0, include_rejected=False)  # type: ignore[arg-type]  # a stub service
    assert [e["sequence"] for e in page.events] == [1] and page.next_after == 1
    reading = read_events(service, 1, 10, wait_s=3, include_rejected=False)  # type: ignore[arg-type]  # a stub service
    waiting = asyncio.ensure_future(reading)
    await asyncio.sleep(0.1)
    assert not waiting.done()  # committed but unconfirmed: the long poll waits for the standby
    service.confirmed_sequence = 3
    service.acks.record("standby-1", 3, 0.0)
    page = await asyncio.wait_for(waiting, 2)
    assert [e["sequence"] for e in page.events] == [2, 3]


class TestConsumers:
    async def test_a_consumer_resumes_from_its_durable_cursor_at_least_once(self, events_api: Api) -> None:
        api = events_api
        status, created = await api.call("admin_write", "PUT", "/admin/v1/consumers/bi", {"description": "warehouse"})
        assert status == 201 and created == {
            "name": "bi",
            "description": "warehouse",
            "acked_sequence": 0,
            "lag_entries": 0,
        }
        await api.player("p1", deposit=10)
        _, first, _ = await get_events(api, "?consumer=bi")
        assert [e["sequence"] for e in first] == [1, 2]
        _, again, _ = await get_events(api, "?consumer=bi")  # the consumer crashed before it acked: redelivered
        assert [e["sequence"] for e in again] == [1, 2]
        status, acked = await call_events(api, "PUT", "/v1/consumers/bi/cursor", {"sequence": 2})
        assert status == 200 and acked == {"name": "bi", "acked_sequence": 2, "lag_entries": 0}
        status, late = await call_events(api, "PUT", "/v1/consumers/bi/cursor", {"sequence": 1})  # a late ack
        assert status == 200 and late["acked_sequence"] == 2
        await api.post("cashier", "/v1/deposits", {"id": "d2", "player_id": "p1", "currency": "EUR", "amount_minor": 3})
        _, rest, _ = await get_events(api, "?consumer=bi")
        assert [e["id"] for e in rest] == ["d2"]
        status, listing = await api.get("admin_read", "/admin/v1/consumers")
        assert listing == {
            "consumers": [{"name": "bi", "description": "warehouse", "acked_sequence": 2, "lag_entries": 1}],
            "acknowledged_sequence": 3,
        }
        _, metrics = await api.get("admin_read", "/metrics")
        assert 'ledger_event_consumer_lag_entries{consumer="bi"} 1.0' in metrics
        status, updated = await api.call("admin_write", "PUT", "/admin/v1/consumers/bi", {"description": "dw"})
        assert status == 200 and updated["acked_sequence"] == 2  # an update keeps the cursor
        status, reset = await api.call("admin_write", "PUT", "/admin/v1/consumers/bi", {"start_after": 0})
        assert status == 200 and reset["acked_sequence"] == 0 and reset["lag_entries"] == 3

    async def test_only_a_consumers_owner_acknowledges_it_and_nobody_a_webhook_consumer(self, events_api: Api) -> None:
        """Any `events` credential could move any consumer's cursor: the CRM's token could ack the
        AML consumer's events it never read, or push a webhook consumer's cursor past undelivered
        pages."""
        api = events_api
        await api.player("p1", deposit=10)
        owned = {"owner": "compliance"}  # another credential than this test's `warehouse`
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/aml", owned))[0] == 201
        status, body = await call_events(api, "PUT", "/v1/consumers/aml/cursor", {"sequence": 2})
        assert status == 403 and body["code"] == "forbidden"
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/aml", {"owner": "warehouse"}))[0] == 200
        status, body = await call_events(api, "PUT", "/v1/consumers/aml/cursor", {"sequence": 2})
        assert status == 200 and body["acked_sequence"] == 2
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/aml", {"owner": ""}))[0] == 200
        status, listing = await api.get("admin_read", "/admin/v1/consumers")
        assert "owner" not in listing["consumers"][0]  # "" removes it: any events credential again

        hook = {"webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "s" * 16, "start_after": 0}
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/crm", hook))[0] == 201
        status, body = await call_events(api, "PUT", "/v1/consumers/crm/cursor", {"sequence": 2})
        assert status == 403 and body["code"] == "forbidden"

    async def test_bad_acks_unknown_consumers_the_limit_and_deletion(self, events_api: Api) -> None:
        api = events_api
        await api.player("p1")
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/a", {}))[0] == 201
        status, body = await call_events(api, "PUT", "/v1/consumers/a/cursor", {"sequence": 2})
        assert status == 400 and body["field"] == "sequence"  # beyond the acknowledged head (1)
        for bad in ({}, {"sequence": -1}, {"sequence": "1"}, {"sequence": 1, "extra": True}):
            status, body = await call_events(api, "PUT", "/v1/consumers/a/cursor", bad)
            assert status == 400 and body["code"] == "validation_error", bad
        status, body = await call_events(api, "PUT", "/v1/consumers/zz/cursor", {"sequence": 1})
        assert status == 404 and body["code"] == "not_found"
        status, body = await api.call("admin_write", "PUT", "/admin/v1/consumers/b", {"start_after": 9})
        assert status == 400 and body["field"] == "start_after"
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/b", {}))[0] == 201
        status, body = await api.call("admin_write", "PUT", "/admin/v1/consumers/c", {})
        assert status == 409 and body["code"] == "consumer_limit_reached"  # event_consumers_max = 2
        status, deleted = await api.call("admin_write", "DELETE", "/admin/v1/consumers/b")
        assert status == 200 and deleted == {"name": "b", "deleted": True}
        assert (await api.call("admin_write", "DELETE", "/admin/v1/consumers/b"))[0] == 404
        _, metrics = await api.get("admin_read", "/metrics")
        assert 'consumer="a"' in metrics and 'consumer="b"' not in metrics
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/c", {}))[0] == 201
        assert (await api.call("admin_read", "PUT", "/admin/v1/consumers/d", {}))[0] == 403


def test_an_edge_refuses_a_credential_of_the_events_role(tmp_path: Path) -> None:
    from edge import config as edge_config

    path = tmp_path / "edge.toml"
    path.write_text(
        '[edge]\nid = "eu"\ncrdt_client_id = 1\nledger_url = "http://127.0.0.1:1"\n'
        f'ledger_token_file = "{tmp_path}/t"\npeer_token_file = "{tmp_path}/t"\n'
        '[[tokens]]\nname = "warehouse"\nrole = "events"\nsha256 = "' + "ab" * 32 + '"\n'
    )
    (tmp_path / "t").write_text("secret-token-0123456789")
    with pytest.raises(ConfigError, match="edge tokens admit only the roles"):
        edge_config.load(path)
