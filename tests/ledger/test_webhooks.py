"""Webhook delivery of the event stream to a local receiver on 127.0.0.1: signed bodies, retries
with backoff after failures, every event accepted once per sequence, dead letters and their replay."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from core_ledger.app import create_app
from core_ledger.events_http import CONSUMERS, WEBHOOKS
from core_ledger.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, backoff_s, signature
from tests.support.clock import FakeClock
from tests.support.ledger import Api, ledger_config

SECRET = "webhook-secret-0123456789abcdef"
WAIT_S = 15.0  # bound of every wait below


@dataclass
class Receiver:
    """Answers 500 to the first `fail_first` deliveries (or to all while `failing`), checks every
    signature and timestamp, and records the sequences of the deliveries it accepted."""

    fail_first: int = 0
    failing: bool = False
    calls: int = 0
    accepted: list[int] = field(default_factory=list)
    bad_signatures: int = 0
    hold: asyncio.Event | None = None  # when set, each delivery waits for it (a slow receiver)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set by each delivery on arrival

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        body = await request.read()
        stamp = request.headers[TIMESTAMP_HEADER]
        if (
            not hmac.compare_digest(request.headers[SIGNATURE_HEADER], signature(SECRET, stamp, body))
            or abs(time.time() - int(stamp)) > 300
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.calls += 1
        if self.failing or self.calls <= self.fail_first:
            return web.Response(status=500)
        self.accepted += [e["sequence"] for e in orjson.loads(body)["events"]]
        return web.Response(status=204)


async def serve(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def until(predicate: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await predicate():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def hook_api(aiohttp_client: Any, tmp_path: Path) -> Api:
    config = ledger_config(
        tmp_path / "data",
        webhook_backoff_base_s=0.05,
        webhook_backoff_max_s=0.2,
        webhook_attempts_max=3,
        webhook_timeout_s=2,
        webhook_hosts=("127.0.0.1",),
    )
    return Api(await aiohttp_client(create_app(config, clock=FakeClock())))


def test_backoff_has_full_jitter_and_a_ceiling() -> None:
    assert backoff_s(1, 1.0, 300.0, lambda: 1.0) == 1.0 and backoff_s(4, 1.0, 300.0, lambda: 1.0) == 8.0
    assert backoff_s(30, 1.0, 300.0, lambda: 1.0) == 300.0 and backoff_s(5, 1.0, 300.0, lambda: 0.0) == 0.0


async def test_every_event_arrives_once_per_sequence_despite_failures(hook_api: Api) -> None:
    api, receiver = hook_api, Receiver(fail_first=2)
    server = await serve(receiver)
    try:
        status, body = await api.call(
            "admin_write",
            "PUT",
            "/admin/v1/consumers/crm",
            {"webhook_url": str(server.make_url("/hook")), "webhook_secret": SECRET},
        )
        assert status == 201 and body["webhook_secret_set"] and "webhook_secret" not in body
        await api.player("p1", deposit=10)
        await api.player("p2", deposit=20)
        for i in range(3):
            await api.post(
                "cashier", "/v1/deposits", {"id": f"more-{i}", "player_id": "p1", "currency": "EUR", "amount_minor": 1}
            )

        async def all_in_and_acked() -> bool:
            # The receiver has the event before the ledger records its ack: wait for both.
            _, listing = await api.get("admin_read", "/admin/v1/consumers")
            acked = [c["acked_sequence"] for c in listing["consumers"]]
            return sorted(receiver.accepted) == list(range(1, 8)) and acked == [7]

        await until(all_in_and_acked)
        assert len(receiver.accepted) == len(set(receiver.accepted))  # once per sequence
        assert receiver.calls >= 3 and receiver.bad_signatures == 0  # two refused, then delivered
        _, listing = await api.get("admin_read", "/admin/v1/consumers")
        [crm] = listing["consumers"]
        assert crm["acked_sequence"] == 7 and crm["lag_entries"] == 0 and "webhook_secret" not in crm
        _, metrics = await api.get("admin_read", "/metrics")
        assert 'ledger_webhook_deliveries_total{outcome="failed"} 2.0' in metrics
        assert 'ledger_webhook_dead_letters{consumer="crm"} 0.0' in metrics
    finally:
        await server.close()


async def test_a_page_that_keeps_failing_is_dead_lettered_and_replayed(hook_api: Api) -> None:
    api, receiver = hook_api, Receiver(failing=True)
    server = await serve(receiver)
    try:
        await api.player("p1")
        await api.call(
            "admin_write",
            "PUT",
            "/admin/v1/consumers/aml",
            {"webhook_url": str(server.make_url("/hook")), "webhook_secret": SECRET},
        )

        async def dead_lettered() -> bool:
            # The letter is kept before the stream's ack moves past it: wait for both.
            _, listing = await api.get("admin_read", "/admin/v1/consumers")
            consumer = listing["consumers"][0]
            return bool(consumer.get("dead_letters")) and consumer["acked_sequence"] >= 1

        await until(dead_lettered)
        _, listing = await api.get("admin_read", "/admin/v1/consumers")
        [aml] = listing["consumers"]
        [letter] = aml["dead_letters"]
        assert (letter["letter_id"], letter["attempts"], aml["acked_sequence"]) == ("1-1", 3, 1)  # the stream moved on
        _, metrics = await api.get("admin_read", "/metrics")
        assert 'ledger_webhook_dead_letters{consumer="aml"} 1.0' in metrics
        status, replay = await api.post("admin_write", "/admin/v1/consumers/aml/dead-letters/1-1/replay")
        assert status == 200 and not replay["delivered"] and "500" in replay["error"]
        receiver.failing = False
        status, replay = await api.post("admin_write", "/admin/v1/consumers/aml/dead-letters/1-1/replay")
        assert status == 200 and replay == {"name": "aml", "letter_id": "1-1", "delivered": True, "events": 1}
        assert receiver.accepted == [1]
        _, listing = await api.get("admin_read", "/admin/v1/consumers")
        assert listing["consumers"][0]["dead_letters"] == []
        status, body = await api.post("admin_write", "/admin/v1/consumers/aml/dead-letters/1-1/replay")
        assert status == 404 and body["field"] == "letter_id"
    finally:
        await server.close()


async def test_bad_webhook_settings_are_refused(hook_api: Api) -> None:
    for body, field_name in (
        ({"webhook_url": "http://127.0.0.1:1/x"}, "webhook_secret"),
        ({"webhook_url": "ftp://x", "webhook_secret": SECRET}, "webhook_url"),
        ({"webhook_url": "http://127.0.0.1:1/x", "webhook_secret": "short"}, "webhook_secret"),
        ({"webhook_url": "http://example.com/x", "webhook_secret": SECRET}, "webhook_url"),
        ({"webhook_url": "http://localhost/x", "webhook_secret": SECRET}, "webhook_url"),
        ({"webhook_url": "http://[/x", "webhook_secret": SECRET}, "webhook_url"),
    ):
        status, answer = await hook_api.call("admin_write", "PUT", "/admin/v1/consumers/c", body)
        assert status == 400 and answer["code"] == "validation_error" and answer["field"] == field_name, body
    _, listing = await hook_api.get("admin_read", "/admin/v1/consumers")
    assert listing["consumers"] == []  # nothing was created


def test_webhook_hosts_are_an_allowlist_of_bare_host_names(tmp_path: Path) -> None:
    from shared.config import ConfigError

    from core_ledger import config

    path = tmp_path / "ledger.toml"
    path.write_text('[ledger]\ndata_dir = "d"\n')
    assert config.load(path).webhook_hosts == ()  # by default no webhook may be configured
    path.write_text('[ledger]\ndata_dir = "d"\nwebhook_hosts = ["Hooks.Example.com", "[::1]", "10.0.0.5"]\n')
    assert config.load(path).webhook_hosts == ("hooks.example.com", "::1", "10.0.0.5")
    for bad in ('"http://x/"', '"a b"', '""', "1"):
        path.write_text(f'[ledger]\ndata_dir = "d"\nwebhook_hosts = [{bad}]\n')
        with pytest.raises(ConfigError, match="webhook_hosts"):
            config.load(path)


async def test_a_redirect_is_never_followed_and_a_delisted_host_gets_nothing(hook_api: Api) -> None:
    """aiohttp follows redirects by default: a listed receiver answering 307 had the signed page
    POSTed to an address nobody listed, whose 2xx acknowledged it. And a host removed from
    `webhook_hosts` went on receiving pages set before."""
    api, internal_calls = hook_api, []

    async def internal(request: web.Request) -> web.Response:
        internal_calls.append(await request.read())
        return web.Response(status=204)

    inside = web.Application()
    inside.router.add_post("/internal", internal)
    internal_server = TestServer(inside, host="127.0.0.2", port=0)  # loopback, not on the list
    await internal_server.start_server()

    async def redirecting(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(internal_server.make_url("/internal")))

    outside = web.Application()
    outside.router.add_post("/hook", redirecting)
    receiver = TestServer(outside, host="127.0.0.1", port=0)
    await receiver.start_server()
    try:
        url = str(receiver.make_url("/hook"))
        status, _ = await api.call(
            "admin_write", "PUT", "/admin/v1/consumers/crm", {"webhook_url": url, "webhook_secret": SECRET}
        )
        assert status == 201
        await api.player("p1", deposit=10)

        async def dead_lettered() -> bool:
            _, listing = await api.get("admin_read", "/admin/v1/consumers")
            return bool(listing["consumers"][0].get("dead_letters"))

        await until(dead_lettered)
        _, listing = await api.get("admin_read", "/admin/v1/consumers")
        assert listing["consumers"][0]["dead_letters"][0]["last_error"] == "status 307"
        assert internal_calls == []

        webhooks = api.client.app[WEBHOOKS]
        webhooks.settings = dataclasses.replace(webhooks.settings, hosts=())  # the operator de-listed it
        assert await webhooks.post("crm", {"webhook_url": url, "webhook_secret": SECRET}, []) is not None
    finally:
        await receiver.close()
        await internal_server.close()
    assert internal_calls == []


async def test_a_replay_waiting_on_its_receiver_does_not_undo_what_changed_meanwhile(hook_api: Api) -> None:
    """The replay wrote back the whole record it had read before its POST: a secret rotated, or a
    consumer deleted, while the receiver took its time was undone (the old secret signed again;
    the deleted consumer came back with its cursor at 0 and the whole history went out again)."""
    api, receiver = hook_api, Receiver(failing=True)
    server = await serve(receiver)
    try:
        await api.player("p1")
        url = str(server.make_url("/hook"))
        await api.call("admin_write", "PUT", "/admin/v1/consumers/aml", {"webhook_url": url, "webhook_secret": SECRET})

        async def dead_lettered() -> bool:
            _, listing = await api.get("admin_read", "/admin/v1/consumers")
            consumer = listing["consumers"][0]
            return bool(consumer.get("dead_letters")) and consumer["acked_sequence"] >= 1

        await until(dead_lettered)
        receiver.failing, receiver.hold = False, asyncio.Event()  # it takes the page, slowly
        replaying = asyncio.create_task(api.post("admin_write", "/admin/v1/consumers/aml/dead-letters/1-1/replay"))
        await asyncio.sleep(0.2)
        rotated = "rotated-secret-0123456789abcdef"
        assert (await api.call("admin_write", "PUT", "/admin/v1/consumers/aml", {"webhook_secret": rotated}))[0] == 200
        receiver.hold.set()
        status, replay = await asyncio.wait_for(replaying, WAIT_S)
        assert status == 200 and replay["delivered"], replay
        stored = api.client.app[CONSUMERS].known["aml"][0]
        assert stored["webhook_secret"] == rotated and stored["dead_letters"] == []
    finally:
        await server.close()


async def test_a_webhook_urls_token_never_reaches_the_logs(hook_api: Api) -> None:
    url = "http://hook-user:pa55@127.0.0.1:9/hook/t0ken-in-path?key=t0ken-in-query"
    with capture_logs() as logs:
        status, _ = await hook_api.call(
            "admin_write", "PUT", "/admin/v1/consumers/crm", {"webhook_url": url, "webhook_secret": SECRET}
        )
    assert status == 201
    [saved] = [e for e in logs if e["event"] == "event_consumer_saved"]
    assert saved["webhook_host"] == "127.0.0.1"
    assert not any("t0ken" in str(e) or "pa55" in str(e) for e in logs)


async def test_a_cursor_reset_while_a_page_is_delivered_replays_from_the_reset(hook_api: Api) -> None:
    """An operator reset the cursor to replay everything while the receiver held a page: the
    delivery's ack moved the cursor past the reset, and the replay never came."""
    api, receiver = hook_api, Receiver()
    server = await serve(receiver)
    try:
        await api.player("p1", deposit=10)  # 1 and 2
        url = str(server.make_url("/hook"))
        await api.call("admin_write", "PUT", "/admin/v1/consumers/crm", {"webhook_url": url, "webhook_secret": SECRET})

        async def first_page_acked() -> bool:
            return api.client.app[CONSUMERS].known["crm"][1] == 2

        await until(first_page_acked)
        receiver.hold, receiver.arrived = asyncio.Event(), asyncio.Event()  # the next page waits at the receiver
        await api.post("cashier", "/v1/deposits", {"id": "d3", "player_id": "p1", "currency": "EUR", "amount_minor": 1})
        await asyncio.wait_for(receiver.arrived.wait(), WAIT_S)  # the delivery of 3 is at the receiver, held
        status, reset = await api.call("admin_write", "PUT", "/admin/v1/consumers/crm", {"start_after": 0})
        assert status == 200 and reset["acked_sequence"] == 0
        receiver.hold.set()

        async def replayed() -> bool:
            return receiver.accepted.count(1) == 2 and api.client.app[CONSUMERS].known["crm"][1] == 3

        await until(replayed)
        assert receiver.accepted == [1, 2, 3, 1, 2, 3]
    finally:
        await server.close()


async def test_a_dead_letter_replay_sends_its_own_events_only(hook_api: Api) -> None:
    """A letter whose page ended in refusals was replayed with the events after it too: the read
    goes past refusals until it finds an event, and found one beyond the letter."""
    api, receiver = hook_api, Receiver(failing=True)
    server = await serve(receiver)
    try:
        await api.player("p1")  # 1
        withdrawal = {"id": "w", "player_id": "p1", "currency": "EUR", "amount_minor": 5}
        assert (await api.post("cashier", "/v1/withdrawals", withdrawal))[0] == 422  # 2, a refusal
        url = str(server.make_url("/hook"))
        await api.call("admin_write", "PUT", "/admin/v1/consumers/aml", {"webhook_url": url, "webhook_secret": SECRET})

        async def dead_lettered() -> bool:
            _, listing = await api.get("admin_read", "/admin/v1/consumers")
            consumer = listing["consumers"][0]
            return [d["letter_id"] for d in consumer.get("dead_letters", [])] == ["1-2"]

        await until(dead_lettered)
        deposit = {"id": "d3", "player_id": "p1", "currency": "EUR", "amount_minor": 1}
        assert (await api.post("cashier", "/v1/deposits", deposit))[0] == 201  # 3, after the letter
        receiver.failing = False
        status, replay = await api.post("admin_write", "/admin/v1/consumers/aml/dead-letters/1-2/replay")
        assert status == 200 and replay["delivered"] and replay["events"] == 1, replay
    finally:
        await server.close()
