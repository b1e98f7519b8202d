"""A standby holding less than its primary acknowledged refuses promotion (409 standby_behind):
promoting a copy rebuilt from nothing before it caught up would lose acknowledged money. The
primary announces what it acknowledged on every journal page; `force=true` overrides, knowingly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from core_ledger.app import create_app
from core_ledger.app_keys import FENCING, SERVICE, STANDBY
from core_ledger.fencing import PeerView, Survey
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import StorageError
from harness.cluster import free_port
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config, standby_of
from tests.support.polling import wait_for


async def test_a_fresh_standby_behind_the_acknowledged_head_refuses_promotion_unless_forced(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    primary_app = create_app(ledger_config(tmp_path / "p", synchronous_standby=True), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    first = standby_of(primary_server, tmp_path / "s1", clock)
    first_api = Api(await aiohttp_client(first))
    await primary.player(deposit=10_000)
    for i in range(10):
        status, _ = await primary.post("edge", "/v1/bets", bet(f"b{i}", 10, round_id=f"r{i}"))
        assert status == 201  # each confirmed by the first standby before it was answered
    acknowledged = primary_app[SERVICE].head.sequence

    # The first standby's copy is lost; a new one starts from nothing, one entry per page.
    settings = StandbySettings(
        str(primary_server.make_url("")).rstrip("/"),
        TOKENS["replica"],
        page_limit=1,
        poll_interval_s=0.05,
        long_poll_ms=0,
    )
    fresh_app = create_app(ledger_config(tmp_path / "s2"), clock=clock, standby=settings)
    fresh_app[SERVICE].apply_fault_delay = lambda: 0.2  # a slow copy: it cannot catch up before it stops
    fresh = Api(await aiohttp_client(fresh_app))
    await wait_for(lambda: fresh_app[STANDBY].primary_acked >= acknowledged)
    await fresh_app[STANDBY].stop()  # it has not caught up, and its primary is gone
    held = fresh_app[SERVICE].head.sequence
    assert held < acknowledged

    status, problem = await fresh.post("admin_write", "/admin/v1/promote", None)
    assert status == 409 and problem["code"] == "standby_behind", problem
    assert fresh_app[SERVICE].role == "standby"
    status, problem = await fresh.post("admin_write", "/admin/v1/promote?force=maybe", None)
    assert status == 400 and problem["field"] == "force"

    # Refused, it went on tailing; with its primary gone it cannot catch up: only force promotes it.
    await primary_server.close()
    status, body = await fresh.post("admin_write", "/admin/v1/promote?force=true", None)
    assert status == 200 and held <= body["head"]["sequence"] < acknowledged, body
    # The copy that holds everything acknowledged is promoted without force.
    status, body = await first_api.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["head"]["sequence"] == acknowledged, body
    assert first[SERVICE].role == "primary"


async def test_a_promoted_primary_counts_what_it_inherited_as_acknowledged(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """After a failover the new primary's standbys have confirmed nothing yet, but everything it
    holds may have been acknowledged by the old primary: a copy rebuilt from nothing behind it
    must refuse promotion until it holds all of that."""
    clock = FakeClock()
    old_app = create_app(ledger_config(tmp_path / "p", synchronous_standby=True), clock=clock)
    old_server = await aiohttp_server(old_app)
    old = Api(await aiohttp_client(old_server))
    settings = StandbySettings(str(old_server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.05)
    new_app = create_app(ledger_config(tmp_path / "s1", synchronous_standby=True), clock=clock, standby=settings)
    new_server = await aiohttp_server(new_app)
    new = Api(await aiohttp_client(new_server))
    await old.player(deposit=10_000)
    for i in range(10):
        status, _ = await old.post("edge", "/v1/bets", bet(f"b{i}", 10, round_id=f"r{i}"))
        assert status == 201
    acknowledged = old_app[SERVICE].head.sequence
    await old_server.close()
    status, _ = await new.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and new_app[SERVICE].acknowledged_sequence == acknowledged

    rebuilt_settings = StandbySettings(
        str(new_server.make_url("")).rstrip("/"), TOKENS["replica"], page_limit=1, poll_interval_s=0.05, long_poll_ms=0
    )
    rebuilt_app = create_app(ledger_config(tmp_path / "s2"), clock=clock, standby=rebuilt_settings)
    rebuilt_app[SERVICE].apply_fault_delay = lambda: 0.2  # slow: it cannot catch up before it stops
    rebuilt = Api(await aiohttp_client(rebuilt_app))
    await wait_for(lambda: rebuilt_app[STANDBY].primary_acked >= acknowledged)
    await new_server.close()
    status, problem = await rebuilt.post("admin_write", "/admin/v1/promote", None)
    assert status == 409 and problem["code"] == "standby_behind", problem


async def test_a_promote_refused_while_another_promotes_never_restarts_the_tailer(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A forced promotion and an unforced one at the same moment, on a standby behind its primary:
    the refused one used to restart the tailer while the forced one promoted, and the tailer then
    applied the old primary's next page over the promotion, so the new primary wrote at the old
    epoch. Now a promote request waits for the one under way and answers the promoted head."""
    clock = FakeClock()
    primary_app = create_app(ledger_config(tmp_path / "p"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    await primary.player(deposit=10_000)
    for i in range(6):
        await primary.post("edge", "/v1/bets", bet(f"b{i}", 10, round_id=f"r{i}"))
    settings = StandbySettings(
        str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], page_limit=1, poll_interval_s=0.02
    )
    standby_app = create_app(ledger_config(tmp_path / "s"), clock=clock, standby=settings)
    standby = Api(await aiohttp_client(standby_app))
    service, tailer = standby_app[SERVICE], standby_app[STANDBY]
    service.apply_fault_delay = lambda: 0.1  # a slow copy: behind for the whole test
    await wait_for(lambda: tailer.primary_acked > service.head.sequence > 0)

    promoting, release = asyncio.Event(), asyncio.Event()
    promote = service.promote

    async def slow_promote(above: int = 0) -> Any:
        promoting.set()
        await release.wait()
        return await promote(above)

    service.promote = slow_promote  # type: ignore[method-assign]  # holds the forced promotion open
    forced = asyncio.ensure_future(standby.post("admin_write", "/admin/v1/promote?force=true", None))
    await asyncio.wait_for(promoting.wait(), 5)
    unforced = asyncio.ensure_future(standby.post("admin_write", "/admin/v1/promote", None))
    # Until the unforced request either restarted the tailer (the race) or waits for the promotion
    # under way (the lock's queue of waiters, private to asyncio.Lock: nothing public tells it).
    await wait_for(lambda: tailer.running or bool(tailer.promotion._waiters))
    assert not tailer.running, "the tailer was restarted while a promotion was under way"
    release.set()
    (status, body), (again, same) = await asyncio.gather(forced, unforced)
    assert status == 200 and body["epoch"] == 2, body
    assert again == 200 and same["epoch"] == body["epoch"], same  # promoting a primary is a no-op
    status, written = await standby.post("edge", "/v1/bets", bet("after", 1, round_id="rn"))
    assert status == 201 and written["transaction"]["epoch"] == 2, written
    await tailer.stop()


async def _standbys(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock, **primary: Any
) -> tuple[Any, Api, dict[str, Any]]:
    """A primary (its server and an Api) and the servers of two standbys of it, "a" and "b", each
    naming the primary and the other in `peers`, both caught up with a funded player."""
    primary_server = await aiohttp_server(create_app(ledger_config(tmp_path / "p", **primary), clock=clock))
    primary_url = str(primary_server.make_url("")).rstrip("/")
    ports = {name: free_port() for name in ("a", "b")}
    apps: dict[str, Any] = {}
    for name, other in (("a", "b"), ("b", "a")):
        peers = (primary_url, f"http://127.0.0.1:{ports[other]}")
        apps[name] = await aiohttp_server(
            standby_of(primary_server, tmp_path / name, clock, peers=peers), port=ports[name]
        )
    primary = Api(await aiohttp_client(primary_server))
    await primary.player(deposit=10_000)
    head = primary_server.app[SERVICE].head
    await wait_for(lambda: apps["a"].app[SERVICE].head == head and apps["b"].app[SERVICE].head == head)
    return primary_server, primary, apps


async def _standby_beside_a_liar(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, epoch: int
) -> tuple[web.Application, Api]:
    """A standby whose one peer is a liar announcing itself a standby of `epoch`, and whose
    primary is gone (nothing else objects to a promotion)."""

    async def readyz(request: web.Request) -> web.Response:
        body = {"role": "standby", "epoch": epoch, "fenced": False, "head_sequence": 0, "head_hash": "ab" * 32}
        return web.json_response(body, headers={"X-Ledger-Epoch": str(epoch)})

    liar = web.Application()
    liar.router.add_get("/readyz", readyz)
    liar_server = await aiohttp_server(liar)
    primary_server = await aiohttp_server(create_app(ledger_config(tmp_path / "p"), clock=FakeClock()))
    standby_app = standby_of(
        primary_server, tmp_path / "s", FakeClock(), peers=(str(liar_server.make_url("")).rstrip("/"),)
    )
    standby = Api(await aiohttp_client(standby_app))
    await primary_server.close()
    return standby_app, standby


async def test_a_promotion_is_refused_while_the_old_primary_still_takes_writes(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    a = Api(await aiohttp_client(apps["a"]))
    status, problem = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 409 and problem["code"] == "peer_is_primary", problem
    assert apps["a"].app[SERVICE].role == "standby" and apps["a"].app[STANDBY].running  # it goes on tailing
    status, body = await a.post("admin_write", "/admin/v1/promote?force=true", None)
    assert status == 200 and body["epoch"] == 2, body
    await primary_server.close()


async def test_two_standbys_promoted_one_after_the_other_never_share_an_epoch(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Both used to take epoch 2, and neither fenced the other: a peer proves only an epoch above
    its own. The second promotion is refused while the first is primary; forced, it takes an
    epoch above the first's, which the first learns at its next peer check."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()  # the old primary is gone
    a, b = Api(await aiohttp_client(apps["a"])), Api(await aiohttp_client(apps["b"]))
    status, body = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["epoch"] == 2, body
    status, problem = await b.post("admin_write", "/admin/v1/promote", None)
    assert status == 409 and problem["code"] == "peer_is_primary", problem
    status, body = await b.post("admin_write", "/admin/v1/promote?force=true", None)
    assert status == 200 and body["epoch"] == 3, body
    await apps["a"].app[FENCING].survey()  # the periodic peer check
    assert apps["a"].app[SERVICE].fenced


async def test_a_standby_that_holds_less_than_the_other_is_not_promoted(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A synchronous primary counts the confirmation of either standby. B fell behind, A confirmed
    a bet that was answered, then the primary died: B only knew the acknowledged position of its
    last page, so promoting it lost the bet. Its peer A announces the longer chain."""
    primary_server, primary, apps = await _standbys(
        aiohttp_server, aiohttp_client, tmp_path, FakeClock(), synchronous_standby=True
    )
    await apps["b"].app[STANDBY].stop()  # a slow link: behind from here on
    status, _ = await primary.post("edge", "/v1/bets", bet("acked", 500))
    assert status == 201  # confirmed by A
    await primary_server.close()
    b = Api(await aiohttp_client(apps["b"]))
    status, problem = await b.post("admin_write", "/admin/v1/promote", None)
    assert status == 409 and problem["code"] == "standby_behind", problem
    assert [p["head_sequence"] for p in problem["peers"]] == [apps["a"].app[SERVICE].head.sequence]
    a, held = Api(await aiohttp_client(apps["a"])), apps["a"].app[SERVICE].head.sequence
    status, body = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["head"]["sequence"] == held, body
    await apps["b"].app[STANDBY].stop()


async def test_a_promotion_is_journaled_with_who_forced_it_and_what_the_peers_announced(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A promotion changed which copy is right and left only a log line: a dispute about money
    lost in a forced failover could not be traced to who forced it."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    a = Api(await aiohttp_client(apps["a"]))
    status, body = await a.post("admin_write", "/admin/v1/promote?force=true", None)  # the old primary is alive
    assert status == 200, body
    status, text = await a.get("admin_read", f"/admin/v1/journal/export?from_sequence={body['head']['sequence'] + 1}")
    assert status == 200, text
    [entry] = [orjson.loads(line) for line in text.splitlines()]
    tx = entry["transaction"]
    assert (tx["type"], tx["principal"], entry["epoch"], entry["postings"]) == ("promote", "admin-write-1", 2, [])
    assert tx["request"]["force"] is True and tx["request"]["epoch"] == 2
    assert {(p["role"], p["epoch"]) for p in tx["request"]["peers"]} == {("primary", 1), ("standby", 1)}
    await primary_server.close()


async def test_a_peer_announcing_an_epoch_no_ledger_can_hold_is_unreadable_and_moves_no_epoch(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A promotion takes an epoch above every one its peers announce: a lying peer announcing 19
    digits would have pushed the new epoch past what edges send back and stores hold."""
    standby_app, standby = await _standby_beside_a_liar(aiohttp_server, aiohttp_client, tmp_path, 10**18)
    status, body = await standby.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["epoch"] == 2, body
    assert standby_app[SERVICE].metrics.peers_unreadable._value.get() == 1


async def test_two_standbys_promoted_at_the_same_moment_never_both_become_primary(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Each promotion read its peers, saw the other still a standby, and took epoch 2: two
    primaries at one epoch, neither of which a peer check ever fences (a peer proves only an
    epoch above its own). A promotion now announces itself before it reads its peers, so of two
    at once at most one goes through."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()  # the old primary is gone; two operators (or tools) promote at once
    a, b = Api(await aiohttp_client(apps["a"])), Api(await aiohttp_client(apps["b"]))
    answers = await asyncio.gather(
        a.post("admin_write", "/admin/v1/promote", None), b.post("admin_write", "/admin/v1/promote", None)
    )
    promoted = [name for name, (status, _) in zip("ab", answers, strict=True) if status == 200]
    assert len(promoted) <= 1, answers
    refused = {problem["code"] for status, problem in answers if status != 200}
    assert refused <= {"peer_promoting", "peer_is_primary"}, answers
    assert [apps[n].app[SERVICE].role for n in "ab"].count("primary") == len(promoted)
    if not promoted:  # both saw the other under way: either is promoted once alone
        status, body = await a.post("admin_write", "/admin/v1/promote", None)
        assert status == 200 and body["epoch"] == 2, body
        promoted = ["a"]
    other = Api(await aiohttp_client(apps["b" if promoted == ["a"] else "a"]))
    status, problem = await other.post("admin_write", "/admin/v1/promote", None)
    assert status == 409 and problem["code"] == "peer_is_primary", problem


async def test_a_standby_announces_a_promotion_under_way_to_its_peers(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()
    a, b = Api(await aiohttp_client(apps["a"])), Api(await aiohttp_client(apps["b"]))
    status, body = await a.get("", "/readyz")
    assert body["promoting"] is False, body
    async with apps["a"].app[STANDBY].promotion:  # what a promote request holds while it reads its peers
        status, body = await a.get("", "/readyz")
        assert body["promoting"] is True, body
        status, problem = await b.post("admin_write", "/admin/v1/promote", None)
        assert status == 409 and problem["code"] == "peer_promoting", problem
        assert [p["promoting"] for p in problem["peers"]] == [True]
        assert apps["b"].app[SERVICE].role == "standby" and apps["b"].app[STANDBY].running  # it goes on tailing
    status, body = await b.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["epoch"] == 2, body


async def test_a_peer_announcing_the_largest_epoch_cannot_push_a_promotion_past_it(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A lying peer announcing the largest epoch there is (18 nines) made the promotion take one
    more: 19 digits, which no edge reads back and no entry of which verifies. It is refused, even
    forced, and the standby goes on tailing."""
    standby_app, standby = await _standby_beside_a_liar(aiohttp_server, aiohttp_client, tmp_path, 10**18 - 1)
    for query in ("", "?force=true"):
        status, problem = await standby.post("admin_write", f"/admin/v1/promote{query}", None)
        assert status == 409 and problem["code"] == "epoch_exhausted", problem
        assert standby_app[SERVICE].role == "standby" and standby_app[STANDBY].running
    assert standby_app[SERVICE].epoch == 1


async def test_two_primaries_at_one_epoch_are_counted_by_both_peer_checks(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Standbys that cannot read each other are both promoted to the same epoch; neither is fenced
    (a peer proves only an epoch above one's own). Once they read each other again, both count
    the other (`ledger_peers_primary_at_own_epoch`, alert CroupierLedgerTwinPrimaries)."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()
    a, b = Api(await aiohttp_client(apps["a"])), Api(await aiohttp_client(apps["b"]))
    status, body = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["epoch"] == 2, body
    fencing_b = apps["b"].app[FENCING]
    real_survey = fencing_b.survey

    async def cut_off(*, fresh: bool = False) -> Survey:  # b reads neither the old primary nor a
        return Survey(0.0, tuple(PeerView(url, False, error="ClientConnectorError") for url in fencing_b.peers))

    fencing_b.survey = cut_off
    status, body = await b.post("admin_write", "/admin/v1/promote", None)
    assert status == 200 and body["epoch"] == 2, body
    fencing_b.survey = real_survey
    for name in "ab":
        await apps[name].app[FENCING].survey()  # the periodic peer check, the link back
        service = apps[name].app[SERVICE]
        assert service.role == "primary" and not service.fenced  # nothing proves either wrong
        assert service.metrics.peers_primary_at_own_epoch._value.get() == 1, name
    # A fenced or a standby copy counts nothing: only a primary has a twin.
    await apps["a"].app[SERVICE].fence(3, {"test": "a later primary"})
    await apps["a"].app[FENCING].survey()
    assert apps["a"].app[SERVICE].metrics.peers_primary_at_own_epoch._value.get() == 0


async def test_two_promotions_during_a_peer_check_under_way_never_both_become_primary(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A promotion shared the survey already under way (the periodic check, slow while the dead
    primary's reads time out), whose reads of the other standby predate that one's promotion: both
    took epoch 2 again. A promotion now reads its peers afresh once it announced itself."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()

    async def hang(request: web.Request) -> web.Response:  # the old primary's host: reads time out
        await asyncio.sleep(1.0)
        return web.Response(status=503)

    dead = web.Application()
    dead.router.add_get("/readyz", hang)
    dead_url = str((await aiohttp_server(dead)).make_url("")).rstrip("/")
    for name in "ab":
        fencing = apps[name].app[FENCING]
        fencing.peers = (dead_url, *fencing.peers[1:])  # old primary now hangs instead of refusing
    # The periodic peer check of each standby is under way (it read the other standby at once,
    # and waits on the dead primary) when two operators promote each standby.
    periodic = [asyncio.create_task(apps[n].app[FENCING].survey()) for n in "ab"]
    await asyncio.sleep(0.3)
    a, b = Api(await aiohttp_client(apps["a"])), Api(await aiohttp_client(apps["b"]))
    answers = await asyncio.gather(
        a.post("admin_write", "/admin/v1/promote", None), b.post("admin_write", "/admin/v1/promote", None)
    )
    await asyncio.gather(*periodic)
    roles = [apps[n].app[SERVICE].role for n in "ab"]
    epochs = [apps[n].app[SERVICE].epoch for n in "ab"]
    assert roles.count("primary") <= 1, (answers, roles, epochs)


async def test_a_standby_listing_itself_among_its_peers_can_still_be_promoted(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A peers list shared by every copy names each copy too: a copy reading itself (its own
    `instance` in /readyz) is not its own peer, neither promoting nor a twin primary."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()
    fencing = apps["a"].app[FENCING]
    fencing.peers = (*fencing.peers, str(apps["a"].make_url("")).rstrip("/"))  # every copy, itself included
    a = Api(await aiohttp_client(apps["a"]))
    status, body = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 200, body


async def test_a_primary_listing_itself_among_its_peers_is_not_its_own_twin(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()
    a = Api(await aiohttp_client(apps["a"]))
    status, body = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 200, body
    fencing = apps["a"].app[FENCING]
    fencing.peers = (*fencing.peers, str(apps["a"].make_url("")).rstrip("/"))
    await fencing.survey()
    assert apps["a"].app[SERVICE].metrics.peers_primary_at_own_epoch._value.get() == 0


async def test_a_promotion_the_store_failed_leaves_the_standby_tailing(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """Only a refusal restarted the tailer: a store that failed to record the new epoch left the
    standby stopped, neither promoted nor tailing, until a restart."""
    primary_server, _, apps = await _standbys(aiohttp_server, aiohttp_client, tmp_path, FakeClock())
    await primary_server.close()
    service = apps["a"].app[SERVICE]

    async def failing_promote(above: int = 0) -> Any:
        raise StorageError("the disk refused the new epoch")

    service.promote = failing_promote  # type: ignore[method-assign]  # a store that fails at the promotion
    a = Api(await aiohttp_client(apps["a"]))
    status, problem = await a.post("admin_write", "/admin/v1/promote", None)
    assert status == 503 and problem["code"] == "storage_unavailable", problem
    assert service.role == "standby" and apps["a"].app[STANDBY].running


async def test_a_liar_echoing_this_copys_instance_is_ignored_and_proves_nothing(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """`instance` is public (any peer reads it in /readyz): a liar that copies it is taken for this
    copy and left out. It can hide itself, as an unreadable peer does; it cannot fence a primary
    nor make itself count as a twin."""
    primary_server = await aiohttp_server(create_app(ledger_config(tmp_path / "p"), clock=FakeClock()))
    primary_app = primary_server.app
    fencing = primary_app[FENCING]

    async def readyz(request: web.Request) -> web.Response:
        body = {"role": "primary", "epoch": 7, "fenced": False, "head_sequence": 0, "head_hash": "ab" * 32}
        return web.json_response({**body, "instance": fencing.instance}, headers={"X-Ledger-Epoch": "7"})

    liar = web.Application()
    liar.router.add_get("/readyz", readyz)
    liar_url = str((await aiohttp_server(liar)).make_url("")).rstrip("/")
    fencing.peers = (liar_url,)
    survey = await fencing.survey()
    assert survey.views == () and not primary_app[SERVICE].fenced
    assert primary_app[SERVICE].metrics.peers_primary_at_own_epoch._value.get() == 0
