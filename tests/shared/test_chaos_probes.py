"""The chaos run's probes of a healed cluster catch what the lying participants leave behind:
a phantom jackpot forged by a byzantine peer, a display inflated by a forged slot, and a cluster
that no longer serves writes (a primary fenced by a lying epoch). Fake ledger and edges on
127.0.0.1; and the `--faults` selection."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web

from harness import chaos
from harness.byzantine import LIES, dialers_of, peer_credential
from harness.nemesis import DEFAULT_FAULTS, HELD_BACK, KINDS, parse_faults
from harness.verify import _check_displays

TOKENS = {"edge": "e", "game_server": "g", "admin_read": "r", "admin_write": "w", "peer": "p"}


def fake_ledger(jackpots: dict[str, dict[str, Any]]) -> web.Application:
    async def jackpot(request: web.Request) -> web.Response:
        jid = request.match_info["jid"]
        if jid not in jackpots:
            return web.json_response({"code": "not_found"}, status=404)
        return web.json_response(jackpots[jid])

    app = web.Application()
    app.router.add_get("/v1/jackpots/{jid}", jackpot)
    return app


def fake_edge(displays: list[dict[str, Any]], bet_status: int = 201) -> web.Application:
    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"jackpots": displays})

    async def one(request: web.Request) -> web.Response:
        found = [d for d in displays if d["jackpot_id"] == request.match_info["jid"]]
        return web.json_response(found[0]) if found else web.json_response({}, status=404)

    async def bet(request: web.Request) -> web.Response:
        return web.json_response(
            {"code": "not_primary"} if bet_status >= 400 else {"transaction": {}}, status=bet_status
        )

    app = web.Application()
    app.router.add_get("/v1/jackpots", listing)
    app.router.add_get("/v1/jackpots/{jid}", one)
    app.router.add_post("/v1/bets", bet)
    return app


MEGA = {"jackpot_id": "mega", "pool_minor": 100_500, "epoch": 1, "display_minor": 100_500}


async def info_for(aiohttp_server: Any, edges: list[web.Application]) -> dict[str, Any]:
    ledger = await aiohttp_server(fake_ledger({"mega": MEGA}))
    servers = [await aiohttp_server(app) for app in edges]
    return {
        "ledger": {"url": str(ledger.make_url("")).rstrip("/")},
        "tokens": TOKENS,
        "edges": [{"id": f"e{i}", "url": str(s.make_url("")).rstrip("/")} for i, s in enumerate(servers)],
    }


async def test_a_jackpot_forged_by_a_byzantine_peer_is_a_phantom(aiohttp_server: Any) -> None:
    forged = {**MEGA, "jackpot_id": "FAKE-JACKPOT"}
    info = await info_for(aiohttp_server, [fake_edge([MEGA]), fake_edge([MEGA, forged])])
    check = await chaos.check_no_phantom_jackpots(info)
    assert not check.ok and "e1 shows jackpot 'FAKE-JACKPOT', unknown to the ledger" in check.detail
    honest = await info_for(aiohttp_server, [fake_edge([MEGA])])
    assert (await chaos.check_no_phantom_jackpots(honest)).ok


async def test_a_display_inflated_by_a_forged_slot_fails_the_display_check(aiohttp_server: Any) -> None:
    forged = {**MEGA, "display_minor": MEGA["display_minor"] + 1_000_000}
    info = await info_for(aiohttp_server, [fake_edge([MEGA]), fake_edge([forged])])
    async with aiohttp.ClientSession() as http:
        check = await _check_displays(http, info, ["mega"], [], {}, {})
    assert not check.ok and "e1 mega: shows 1100500@1, ledger 100500@1" in check.detail


class FakeCluster:
    edge_ids = ("eu", "us")

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls

    def url(self, name: str) -> str:
        return self.urls[name]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": "Bearer g"}


async def test_a_cluster_that_no_longer_serves_writes_fails_liveness(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chaos, "LIVENESS_S", 1.0)
    ok, fenced = await aiohttp_server(fake_edge([], 201)), await aiohttp_server(fake_edge([], 503))
    cluster = FakeCluster({"eu": str(ok.make_url("")).rstrip("/"), "us": str(fenced.make_url("")).rstrip("/")})
    async with aiohttp.ClientSession() as http:
        check = await chaos.check_writes_served(http, cluster, "p001")  # type: ignore[arg-type]  # a fake cluster with only the members the probe reads
        assert not check.ok and "through ['us'] (last status {'eu': 201, 'us': 503})" in check.detail
        refusing = await aiohttp_server(fake_edge([], 422))  # judged: insufficient funds is an answer
        cluster.urls["us"] = str(refusing.make_url("")).rstrip("/")
        assert (await chaos.check_writes_served(http, cluster, "p001")).ok  # type: ignore[arg-type]  # a fake cluster with only the members the probe reads


def test_fault_kinds_are_chosen_one_by_one_and_the_held_back_ones_are_not_default() -> None:
    assert parse_faults("default") == DEFAULT_FAULTS and not set(HELD_BACK) & set(DEFAULT_FAULTS)
    assert set(HELD_BACK) <= set(KINDS) and parse_faults("all") == KINDS
    assert parse_faults("none,rejoin_diverged,byz_forge_slot") == ("rejoin_diverged", "byz_forge_slot")
    assert "kill_edge" not in parse_faults("default,-kill_edge") and "rejoin_diverged" in parse_faults(
        "default,rejoin_diverged"
    )
    assert {f"byz_{lie}" for lie in LIES} <= set(KINDS)
    with pytest.raises(ValueError, match="unknown fault kind 'nope'"):
        parse_faults("default,nope")


def test_the_byzantine_peer_poses_as_an_edge_the_target_accepts_and_takes_its_credential_in_one_place() -> None:
    class C:
        edge_ids = ("eu", "us", "apac")
        tokens: ClassVar[dict[str, str]] = {"peer": "shared-peer-token", "peer-eu": "eu-token", "peer-us": "us-token"}

        def peer_token(self, edge_id: str) -> str:
            return self.tokens[f"peer-{edge_id}"]

    assert dialers_of(C(), "us") == ["eu", "apac"] and dialers_of(C(), "apac") == []  # type: ignore[arg-type]  # a stand-in config with only the members read
    # The impersonated edge's own credential, never the legacy shared one (which no edge accepts).
    assert peer_credential(C(), "eu") == "eu-token" and peer_credential(C(), "us") == "us-token"  # type: ignore[arg-type]  # a stand-in config with only the members read


def test_the_nemesis_deals_every_enabled_kind_once_before_any_twice() -> None:
    import random

    from harness.nemesis import Nemesis

    kinds = ("failover_kill", "lie_epoch_edges", "byz_oversized", "partition")
    nemesis = Nemesis(None, random.Random(5), kinds)  # type: ignore[arg-type]  # no cluster: only the dealing order is tested
    first, second = [nemesis.next_kind() for _ in kinds], [nemesis.next_kind() for _ in kinds]
    assert sorted(first) == sorted(second) == sorted(kinds)
    again = Nemesis(None, random.Random(5), kinds)  # type: ignore[arg-type]  # no cluster: only the dealing order is tested
    assert [again.next_kind() for _ in kinds] == first  # seeded: the same order


def test_an_accepted_impersonation_fails_the_check() -> None:
    accepted = ["us accepted a hello as eu holding apac's credential"]
    check = chaos.check_impersonation(accepted, impersonations_tried=2)
    assert not check.ok and check.detail == accepted[0]
    assert chaos.check_impersonation([], impersonations_tried=2).ok


async def test_an_edge_that_cannot_read_a_poisoned_display_fails_the_display_check_without_a_crash(
    aiohttp_server: Any,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"code": "internal"}, status=500)

    poisoned = web.Application()
    poisoned.router.add_get("/v1/jackpots/{jid}", broken)
    info = await info_for(aiohttp_server, [fake_edge([MEGA]), poisoned])
    async with aiohttp.ClientSession() as http:
        check = await _check_displays(http, info, ["mega"], [], {}, {})
    assert not check.ok and check.detail == "e1 mega: answered 500 internal"


async def test_a_stopped_nemesis_lets_the_fault_under_way_end_and_deals_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled half-way, a failover left the harness healing around a primary the copies had
    left behind: once the load ends, the fault under way runs to its end and no new one starts."""
    import asyncio
    import random
    import time

    from harness import nemesis as nemesis_module
    from harness.nemesis import Nemesis

    monkeypatch.setattr(nemesis_module, "FAULT_GAP_S", (0.01, 0.02))
    nemesis = Nemesis(None, random.Random(3), ("failover_kill",))  # type: ignore[arg-type]  # inject is replaced
    started, ended = asyncio.Event(), []

    async def inject(kind: str, hold: float) -> str:
        started.set()
        await asyncio.sleep(0.3)
        ended.append(kind)
        return "done"

    monkeypatch.setattr(nemesis, "inject", inject)
    run = asyncio.create_task(nemesis.run(time.monotonic() + 60))
    await asyncio.wait_for(started.wait(), 5)
    nemesis.stop()
    await asyncio.wait_for(run, 5)
    assert ended == ["failover_kill"] and len(nemesis.log) == 1 and nemesis.log[0].endswith("(done)")


class _Copies:
    """The two ledger copies as the heal sees them: fake /readyz answers on 127.0.0.1."""

    def __init__(self, urls: dict[str, str | None]) -> None:
        self.primary = "ledger"
        self.urls = urls
        self.services = {
            name: type("S", (), {"running": url is not None, "args": ("--standby-of",)})() for name, url in urls.items()
        }

    @property
    def standby_name(self) -> str:
        return "ledger-standby" if self.primary == "ledger" else "ledger"

    def url(self, name: str) -> str:
        return str(self.urls[name])

    def adopt_primary(self, name: str) -> None:
        self.primary = name


async def _readyz_of(aiohttp_server: Any, body: dict[str, Any]) -> str:
    async def readyz(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("nominal", "other", "moved"),
    [
        (None, {"role": "primary", "epoch": 7, "fenced": False}, True),  # the nominal primary is down
        ({"role": "primary", "epoch": 6, "fenced": True}, {"role": "primary", "epoch": 7, "fenced": False}, True),
        ({"role": "primary", "epoch": 7, "fenced": False}, {"role": "primary", "epoch": 6, "fenced": False}, False),
        (None, {"role": "standby", "epoch": 6, "fenced": False}, False),
        ("unreadable", {"role": "primary", "epoch": 7, "fenced": False}, False),  # running, no answer
        (None, {"role": "primary", "epoch": 7, "fenced": True}, False),
    ],
)
async def test_the_heal_follows_the_copy_that_is_primary_in_fact(
    aiohttp_server: Any, nominal: dict[str, Any] | str | None, other: dict[str, Any], moved: bool
) -> None:
    if isinstance(nominal, dict):
        nominal_url: str | None = await _readyz_of(aiohttp_server, nominal)
    else:  # down (None), or running with nothing answering: the discard port, where nothing listens
        nominal_url = None if nominal is None else "http://127.0.0.1:9"
    urls = {"ledger": nominal_url, "ledger-standby": await _readyz_of(aiohttp_server, other)}
    copies = _Copies(urls)
    await chaos._follow_the_primary_in_fact(copies)  # type: ignore[arg-type]  # a stand-in with only the members read
    assert copies.primary == ("ledger-standby" if moved else "ledger")
