"""Peers are hostile until checked: a websocket client holding one edge's peer credential tries the
reproduced attacks against real edges in process (fake ledger), and every one is refused, logged
and counted while honest traffic goes on."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any

import pytest
from pycrdt import Doc, Map

from shared.web import REGISTRY_KEY

from edge.app_keys import HEALTH, HUB, SERVICE
from edge.crdt import admission, protocol
from edge.sync import SENT_KEPT_MAX, _Link
from tests.support.hostile_peer import Hostile
from tests.support.polling import eventually


def metric(server: Any, name: str, **labels: str) -> float:
    return server.app[REGISTRY_KEY].get_sample_value(name, labels) or 0.0


def jackpot_slot(epoch: int, p: int, ts: float = 1.0, **kw: Any) -> dict[str, Any]:
    return {"epoch": epoch, "p": p, "n": 0, "seed": 1000, "currency": "EUR", "ts": ts, **kw}


async def get(http, url):
    async with http.get(url) as r:
        return r.status, await r.json()


async def rejected(server, peer: str, reason: str) -> float:
    return metric(server, "edge_sync_rejected_updates_total", peer=peer, reason=reason)


async def test_the_jackpot_rewrite_and_the_fake_jackpot_are_refused_and_counted(edges, http):
    e = await edges("apac", "eu")  # eu lists apac as a peer; apac itself is the test
    await e.stop("apac")
    eu, server = e.url("eu"), e.servers["eu"]
    await get(http, eu + "/v1/jackpots/mega")  # eu learns mega (epoch 1) from the ledger
    apac = Hostile("apac")
    assert await apac.connect(eu) == "eu"
    try:
        await apac.write("jackpot/mega", "zzz", jackpot_slot(1_000_000, 99_999_999))  # the reproduction
        await apac.write("jackpot/mega", "eu", jackpot_slot(1, 99_999_999))  # another edge's slot
        await apac.write("jackpot/FAKE-JACKPOT", "apac", jackpot_slot(1, 10**12))  # a jackpot the ledger lacks
        await apac.write("jackpot/mega", "apac", jackpot_slot(1_000_000, 5))  # an epoch the ledger never had
        await apac.write("nonsense/x", "apac", {"a": 1})
        await apac.write("jackpot/mega", "apac", jackpot_slot(1, 7, ts=2.0))  # honest: shown

        async def honest_one_shown():
            status, body = await get(http, eu + "/v1/jackpots")
            return status == 200 and [(j["jackpot_id"], j["epoch"], j["by_edge"]) for j in body["jackpots"]] == [
                ("mega", 1, {"apac": 7, "eu": 0})
            ]

        await eventually(honest_one_shown, timeout_s=5)
        assert await rejected(server, "apac", "foreign_author") == 2
        assert await rejected(server, "apac", "unknown_jackpot") == 1
        assert await rejected(server, "apac", "epoch_ahead") == 1
        assert await rejected(server, "apac", "unknown_doc") == 1
        assert (await get(http, eu + "/v1/jackpots/mega"))[1]["display_minor"] == 1000 + 7
    finally:
        await apac.close()


async def test_a_credential_claims_only_its_own_edge_and_cannot_take_over_a_real_link(edges, http):
    e = await edges("apac", "eu", "us")
    us, server = e.url("us"), e.servers["us"]

    async def linked():
        return sorted(server.app[HUB].links) == ["apac", "eu"]

    await eventually(linked)
    intruder = Hostile("apac")  # apac's credential, claiming eu
    try:
        assert await intruder.connect(us, claim="eu") is None
    finally:
        await intruder.close()
    assert metric(server, "edge_sync_refused_links_total", reason="claimed_other_edge") == 1
    assert await linked()
    body = (await get(http, us + "/readyz"))[1]
    assert body["peers_connected"] == ["apac", "eu"]


async def test_malformed_values_are_refused_and_never_break_reads_or_background_tasks(edges, http):
    e = await edges("apac", "eu")
    await e.stop("apac")
    eu, server = e.url("eu"), e.servers["eu"]
    await get(http, eu + "/v1/jackpots/mega")
    apac = Hostile("apac")
    assert await apac.connect(eu) == "eu"
    try:
        await apac.write("jackpot/mega", "apac", {**jackpot_slot(1, 1), "epoch": "x"})  # the reproduction
        await apac.write("session/p1/g1", "apac", {"state": "{}", "updated_at": "t", "ts": "abc"})  # the other
        await apac.write("session/p1/g1", "apac", {"state": "{}", "updated_at": "t", "ts": 1e18})  # LWW forever
        await apac.write("session/p1/g2", "apac", {"state": '{"ok": 1}', "updated_at": "t", "ts": 5.0})

        async def session_shown():
            status, body = await get(http, eu + "/v1/players/p1/session")
            return status == 200 and list(body["games"]) == ["g2"]

        await eventually(session_shown, timeout_s=5)
        assert await rejected(server, "apac", "invalid_value") == 2
        assert await rejected(server, "apac", "ts_ahead") == 1  # refused all the same, under its own reason
        assert (await get(http, eu + "/v1/jackpots"))[0] == 200
    finally:
        await apac.close()
    # A bad value already on disk (from before admission existed) is skipped by reads and counted.
    state = server.app[SERVICE].state
    state.write("jackpot/mega", lambda d: d.get("slots", type=Map).__setitem__("apac", {"epoch": "x"}))
    status, body = await get(http, eu + "/v1/jackpots")
    assert status == 200 and body["jackpots"][0]["by_edge"] == {"eu": 0}
    assert metric(server, "edge_crdt_invalid_slots_total", doc="jackpot") >= 1
    # A jackpot the ledger does not know, stored before admission existed, leaves the list once
    # the reconciler's sweep asked the ledger about it.
    await state.doc("jackpot/FAKE-JACKPOT")
    state.write("jackpot/FAKE-JACKPOT", lambda d: d.get("slots", type=Map).__setitem__("apac", jackpot_slot(1, 10**12)))

    async def fake_gone():
        return [j["jackpot_id"] for j in (await get(http, eu + "/v1/jackpots"))[1]["jackpots"]] == ["mega"]

    await eventually(fake_gone, timeout_s=5)
    # ... and the reconciler keeps running over the bad values: the sweep still repairs eu's own slot.
    state.write("jackpot/mega", lambda d: d.get("slots", type=Map).__setitem__("eu", jackpot_slot(1, 555)))

    async def repaired():
        return (await get(http, eu + "/v1/jackpots/mega"))[1]["by_edge"] == {"eu": 0}

    await eventually(repaired, timeout_s=5)


async def test_a_background_task_that_keeps_failing_is_counted_turns_readyz_red_and_recovers(edges, http):
    e = await edges("eu")
    eu, server = e.url("eu"), e.servers["eu"]
    reconciler = server.app[SERVICE].reconciler
    real = reconciler.reconcile
    broken = {"on": True}

    async def flaky(name):
        if broken["on"]:
            raise ValueError("a bug")
        await real(name)

    reconciler.reconcile = flaky
    reconciler.mark_dirty(["jackpot/mega"])
    server.app[SERVICE].reconciler.mark_dirty(["jackpot/mega"])

    async def red():
        reconciler.mark_dirty(["jackpot/mega"])
        status, body = await get(http, eu + "/readyz")
        return status == 503 and body["background_failing"] == ["reconcile"]

    await eventually(red, timeout_s=8)
    assert metric(server, "edge_background_failures_total", task="reconcile") >= 5
    assert metric(server, "edge_background_task_failing", task="reconcile") == 1
    broken["on"] = False

    async def green():
        return (await get(http, eu + "/readyz"))[0] == 200

    await eventually(green, timeout_s=5)
    assert server.app[HEALTH].failing() == []


async def test_a_dialer_survives_a_bug_in_its_link(edges, http):
    e = await edges("eu", "us")
    hub = e.servers["eu"].app[HUB]  # eu dials us
    real, calls = hub._run, {"n": 0}

    async def buggy(peer, ws, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise KeyError("a bug")
        await real(peer, ws, *args, **kwargs)

    await e.stop("us")
    hub._run = buggy
    await e.start("us")

    async def relinked():
        return "us" in hub.links

    await eventually(relinked, timeout_s=8)
    assert metric(e.servers["eu"], "edge_background_failures_total", task="sync-dial-us") == 2


async def test_oversized_updates_are_refused_by_document_and_peer_quotas(edges, http, tmp_path):
    eu, server, apac = await _small_quotas_and_a_hostile_apac(edges)
    state = '{"x": "' + "y" * 1500 + '"}'
    small = '{"x": "' + "y" * 700 + '"}'
    try:
        await apac.write("session/p1/big", "apac", {"state": state, "updated_at": "t", "ts": 1.0})
        for i in range(8):
            await apac.write(f"session/p1/g{i}", "apac", {"state": small, "updated_at": "t", "ts": 1.0})

        async def counted():
            return await rejected(server, "apac", "peer_quota") >= 1

        await eventually(counted, timeout_s=5)
        assert await rejected(server, "apac", "doc_quota") == 1
        games = (await get(http, eu + "/v1/players/p1/session"))[1]["games"]
        assert "big" not in games and 1 <= len(games) <= 6
    finally:
        await apac.close()


async def test_the_900kb_flood_reaches_neither_the_database_nor_other_edges(edges, http):
    e = await edges("apac", "eu")
    await e.stop("apac")
    eu, server = e.url("eu"), e.servers["eu"]
    apac = Hostile("apac")
    assert await apac.connect(eu) == "eu"
    blob = '{"x": "' + "y" * 900_000 + '"}'
    try:
        for i in range(15):
            await apac.write(f"session/p{i}/g", "apac", {"state": blob, "updated_at": "t", "ts": 1.0})

        async def all_refused():  # by admission, then (the refused ones drained apac's quota) untried
            return await rejected(server, "apac", "invalid_value") + await rejected(server, "apac", "peer_quota") == 15

        await eventually(all_refused, timeout_s=10)
        assert await rejected(server, "apac", "invalid_value") >= 1
    finally:
        await apac.close()
    await server.app[SERVICE].state.store.barrier(5)
    with sqlite3.connect(e.root / "eu" / "edge.db") as db:
        stored = db.execute("SELECT coalesce(sum(length(data)), 0) FROM updates").fetchone()[0]
    assert stored < 10_000


async def test_a_restart_that_lost_its_last_write_still_converges_with_peers(edges, http):
    """Item 12: peers hold a write the restarted edge lost; its next write must not reuse that
    write's (client id, clock), or the replicas would diverge for good."""
    e = await edges("eu", "us")

    async def put(edge, v):
        async with http.put(e.url(edge) + "/v1/players/p1/session/g", json={"state": {"v": v}}) as r:
            assert r.status == 200

    async def shows(edge, v):
        status, body = await get(http, e.url(edge) + "/v1/players/p1/session")
        return status == 200 and body["games"].get("g", {}).get("state") == {"v": v}

    await put("eu", 1)
    await put("eu", 2)
    await eventually(lambda: shows("us", 2))
    await e.stop("eu")
    with sqlite3.connect(e.root / "eu" / "edge.db") as db:  # the last write never reached eu's disk
        last = db.execute("SELECT max(id) FROM updates WHERE doc = 'session/p1/g'").fetchone()[0]
        db.execute("DELETE FROM updates WHERE id = ?", (last,))
        db.execute("UPDATE docs SET n = n - 1 WHERE name = 'session/p1/g'")
    await e.start("eu")
    await put("eu", 3)
    await eventually(lambda: shows("us", 3))
    await eventually(lambda: shows("eu", 3))


async def test_a_peer_that_drops_its_link_is_no_background_failure_but_a_bug_in_a_link_is(edges, http):
    """A link lost to the network (the peer or a partition drops it mid-link) is routine: the peer
    redials. Counting it as a failed task turned /readyz red after a few partitions, for good."""
    e = await edges("eu", "us")
    us, server = e.url("us"), e.servers["us"]
    await e.stop("eu")  # the hostile peer holds eu's credential; us accepts links from eu
    hub = server.app[HUB]
    real, failure = hub._run, {"error": ConnectionResetError("Cannot write to closing transport")}

    async def dropped(peer, ws, authorization=None, level=1):
        if failure["error"] is not None:
            raise failure["error"]
        await real(peer, ws, authorization, level)

    hub._run = dropped
    unready_after = server.app[HEALTH]._unready_after
    for _ in range(unready_after + 1):
        peer = Hostile("eu")
        try:
            await peer.connect(us)
        finally:
            await peer.close()
    assert metric(server, "edge_background_failures_total", task="sync-accept") == 0
    assert (await get(http, us + "/readyz"))[0] == 200

    failure["error"] = KeyError("a bug")  # a bug in a link is still counted
    for _ in range(unready_after):
        peer = Hostile("eu")
        try:
            await peer.connect(us)
        finally:
            await peer.close()

    async def counted():
        return metric(server, "edge_background_failures_total", task="sync-accept") == unready_after

    await eventually(counted, timeout_s=5)


async def test_one_shot_sync_tasks_a_peer_breaks_are_no_failure_and_a_success_ends_a_streak(edges, http):
    """A hint or close written to a link that is closing fails with a connection error: routine.
    Those were counted against "sync" for the process's whole life (nothing cleared it), so five
    of them over days turned /readyz red until a restart."""
    e = await edges("eu", "us")
    us, server = e.url("us"), e.servers["us"]
    hub, health = server.app[HUB], server.app[HEALTH]

    async def closing_transport() -> None:
        raise ConnectionResetError("Cannot write to closing transport")

    async def bug() -> None:
        raise KeyError("a bug")

    async def fine() -> None:
        return None

    for _ in range(health._unready_after + 1):
        hub._spawn(closing_transport(), "sync-hint")
    await eventually(lambda: _settled(hub), timeout_s=5)
    assert metric(server, "edge_background_failures_total", task="sync") == 0
    assert (await get(http, us + "/readyz"))[0] == 200

    for _ in range(health._unready_after):  # a bug in a one-shot task, again and again: counted, red
        hub._spawn(bug(), "sync-hint")
    await eventually(lambda: _settled(hub), timeout_s=5)
    assert metric(server, "edge_background_failures_total", task="sync") == health._unready_after
    assert (await get(http, us + "/readyz"))[0] == 503
    hub._spawn(fine(), "sync-hint")  # and one that succeeds ends the streak
    await eventually(lambda: _settled(hub), timeout_s=5)
    assert (await get(http, us + "/readyz"))[0] == 200


async def _settled(hub: Any) -> bool:
    return not hub._tasks._tasks or all(t.get_name().startswith("sync-dial") for t in hub._tasks._tasks)


async def test_a_flood_of_reconcile_hints_displaces_neither_own_marks_nor_the_sweep(edges, http):
    """Hints from a peer once shared the bounded set of this edge's own marks: ten frames of a
    thousand made-up names filled it, and this edge's own marks (an effect that failed after the
    ledger committed) were dropped, and every round went to the peer's names, none to the sweep."""
    e = await edges("eu", "us")
    us, server = e.url("us"), e.servers["us"]
    await e.stop("eu")  # the hostile peer holds eu's credential
    reconciler = server.app[SERVICE].reconciler
    reconciler.limits = dataclasses.replace(reconciler.limits, reconcile_interval_s=3600.0)  # rounds by hand
    peer = Hostile("eu")
    try:
        await peer.connect(us)
        for i in range(10):
            names = [f"bonus/fake-{i}-{n}" for n in range(1000)]
            await peer.send_text({"reconcile": names})
        await peer.write("jackpot/mega", "eu", jackpot_slot(1, 5))  # a document us knows from now on

        async def heard() -> bool:
            return server.app[SERVICE].state.replica.known("jackpot/mega")

        await eventually(heard, timeout_s=5)
        await peer.send_text({"reconcile": ["jackpot/mega"]})
        await eventually(lambda: _hinted(reconciler), timeout_s=5)
    finally:
        await peer.close()
    assert len(reconciler._hinted) == 1, "hints for documents this edge does not know are dropped"
    reconciler.mark_dirty(["bonus/p-own"])  # this edge's own reason to reconcile
    names = reconciler._next_round()
    assert names[0] == "bonus/p-own" and "jackpot/mega" in names
    assert not any(name.startswith("bonus/fake-") for name in names)


async def _hinted(reconciler: Any) -> bool:
    return "jackpot/mega" in reconciler._hinted


async def test_a_peer_cannot_write_under_this_edges_own_client_id(edges, http):
    """A pycrdt client id names its edge, so an item under this edge's own id passed the author
    check when it wrote this edge's own slot: a forged display value or session, which peers
    would keep and this edge's next real write at that clock would lose to."""
    e = await edges("eu", "us")
    us, server = e.url("us"), e.servers["us"]
    await e.stop("eu")
    replica = server.app[SERVICE].state.replica
    before = metric(server, "edge_sync_rejected_updates_total", peer="eu", reason="foreign_author")
    peer = Hostile("eu")
    try:
        await peer.connect(us)
        forged = Doc(client_id=replica.client_id)  # us's own client id, at a clock us never reached
        state = forged.get_state()
        forged.get("slots", type=Map)["us"] = jackpot_slot(1, 10**9)
        await peer.send([("jackpot/mega", protocol.update_message(forged.get_update(state)))])

        async def refused() -> bool:
            after = metric(server, "edge_sync_rejected_updates_total", peer="eu", reason="foreign_author")
            return after == before + 1

        await eventually(refused, timeout_s=5)
    finally:
        await peer.close()
    doc = replica.live("jackpot/mega")
    assert doc is None or "us" not in doc.get("slots", type=Map) or doc.get("slots", type=Map)["us"]["p"] != 10**9


async def test_a_link_remembers_a_bounded_number_of_pushes_for_a_peer_that_sends_no_frame(edges):
    """A peer that answers pings (aiohttp does that itself) but sends no frame never moves the
    link's `last_heard`, so nothing it was sent was ever forgotten: memory grew with every push."""
    e = await edges("eu", "us")
    hub = e.servers["us"].app[HUB]
    link = _Link("eu", None, 16)
    for i in range(SENT_KEPT_MAX + 10):
        link.sent.append((time.monotonic(), [f"session/p{i}/slots"]))
        hub._forget_sent(link)
    assert len(link.sent) == SENT_KEPT_MAX
    assert {f"session/p{i}/slots" for i in range(10)} <= set(hub.rounds["eu"]._must)  # advertised again


async def test_updates_admission_refuses_drain_the_peers_own_quota_and_then_get_no_trial(edges):
    """Only admitted bytes were charged: a flood of updates admission refuses (here, writes into
    another edge's slot) cost this edge a trial each, about 0.1 ms of its loop, without limit."""
    _, server, apac = await _small_quotas_and_a_hostile_apac(edges)
    trials = {"n": 0}
    real_admit = admission.admit

    def counting(*args: Any, **kwargs: Any) -> Any:
        trials["n"] += 1
        return real_admit(*args, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(admission, "admit", counting)
            for i in range(60):  # ~200 bytes each, into eu's slot: foreign_author, every one
                await apac.write(f"session/p{i}/g", "eu", {"state": "x" * 100, "updated_at": "t", "ts": 1.0})

            async def quota_refused() -> bool:
                return await rejected(server, "apac", "peer_quota") >= 30

            await eventually(quota_refused, timeout_s=5)
        assert await rejected(server, "apac", "foreign_author") < 30 and trials["n"] < 30
    finally:
        await apac.close()


async def _small_quotas_and_a_hostile_apac(edges: Any) -> tuple[str, Any, Hostile]:
    """eu with small sync quotas (1 KiB per document, 1 KiB/s and a 4 KiB burst per peer), and a
    hostile peer holding apac's credential, connected to it: eu's URL, its server and the peer."""
    e = await edges("apac", "eu")
    await e.stop("apac")
    await e.stop("eu")
    limits = dataclasses.replace(
        e.config("eu").limits, sync_doc_bytes_max=1024, sync_peer_bytes_per_s=1024, sync_peer_bytes_burst=4096
    )
    await e.start("eu", limits=limits)
    eu, server = e.url("eu"), e.servers["eu"]
    apac = Hostile("apac")
    assert await apac.connect(eu) == "eu"
    return eu, server, apac
