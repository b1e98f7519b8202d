"""The money queue every caller of an edge shares: one client's actions may hold at most
`ledger_queue_per_client_max` of it, so a flood from one game server does not turn every other
caller's money into 503s."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shared.contract.answers import BatchResult, TransactionAnswer
from shared.errors import Unavailable

from edge.batcher import Asked, Batcher
from edge.config import Limits
from edge.ledger_failover import LedgerFailover
from edge.metrics import EdgeMetrics
from tests.support.fake_ledger import FakeLedger


async def test_one_client_cannot_fill_the_queue_the_others_share() -> None:
    limits = dataclasses.replace(Limits(), ledger_queue_per_client_max=5, ledger_batches_in_flight_max=1)
    ledger, release = FakeLedger(), asyncio.Event()

    async def post(batch: list[Any]) -> tuple[int, list[BatchResult]]:
        await release.wait()  # the ledger is slow: everything queued waits
        return 0, [ledger._one(a.asked.op, _body(a.asked)) for a in batch]

    tasks: set[asyncio.Task[Any]] = set()
    batcher = _batcher(post, limits, tasks)
    dispatching = asyncio.create_task(batcher.dispatch())

    def bet(client: str, n: int) -> Any:
        asked = Asked("bet", f"{client}-{n}", client, None)
        return batcher.submit(b"{}", 5.0, None, asked)

    try:
        flood = [asyncio.create_task(bet("greedy", n)) for n in range(8)]
        await asyncio.sleep(0.05)
        refused = [t for t in flood if t.done() and isinstance(t.exception(), Unavailable)]
        assert len(refused) == 3  # beyond its 5
        # The edge's own queue, not the ledger: a code of its own (the ledger was never asked).
        assert {t.exception().code for t in refused} == {"edge_overloaded"}  # type: ignore[union-attr]  # refused: done with an Unavailable
        other = asyncio.create_task(bet("modest", 0))  # another client still gets in
        await asyncio.sleep(0.05)
        assert not other.done()
        release.set()
        status, answer = await asyncio.wait_for(other, 5)
        assert status == 201 and isinstance(answer, TransactionAnswer) and answer.transaction.id == "modest-0"
        await asyncio.wait_for(asyncio.gather(*(t for t in flood if t not in refused)), 5)
        assert not batcher._waiting  # every settled action gave its place back
    finally:
        dispatching.cancel()
        for task in (*tasks, dispatching):
            task.cancel()
        await asyncio.gather(dispatching, *tasks, return_exceptions=True)


async def test_actions_whose_callers_gave_up_keep_their_clients_place_until_they_leave_the_queue() -> None:
    """A caller that gave up at its deadline gave its client's place back at once, while its action
    stayed queued until dispatch dropped it: a client that timed out and sent again filled the
    queue every client shares with dead actions, and the others got `edge_overloaded`."""
    limits = dataclasses.replace(
        Limits(), ledger_queue_max=20, ledger_queue_per_client_max=5, ledger_batches_in_flight_max=1
    )
    release = asyncio.Event()

    async def post(batch: list[Any]) -> tuple[int, list[BatchResult]]:  # a slow ledger: its one slot stays taken
        await release.wait()
        raise AssertionError("never answered in this test")

    tasks: set[asyncio.Task[Any]] = set()
    batcher = _batcher(post, limits, tasks)
    dispatching = asyncio.create_task(batcher.dispatch())

    def bet(client: str, n: int) -> Any:
        return batcher.submit(b"{}", 0.05, None, Asked("bet", f"{client}-{n}", client, None))

    try:
        await asyncio.gather(bet("greedy", -1), return_exceptions=True)  # in flight: the only slot
        sent = 0
        for _ in range(6):  # five at a time, they time out, five more...
            outcomes = await asyncio.gather(*(bet("greedy", sent + i) for i in range(5)), return_exceptions=True)
            sent += 5
            assert all(isinstance(o, Unavailable) for o in outcomes)
        assert batcher._queue.qsize() <= 5  # one client's share, dead or alive
        with pytest.raises(Unavailable) as modest:
            await bet("modest", 0)
        assert modest.value.code == "ledger_unavailable"  # its own deadline, not a queue full of another's
    finally:
        release.set()
        dispatching.cancel()
        for task in (*tasks, dispatching):
            task.cancel()
        await asyncio.gather(dispatching, *tasks, return_exceptions=True)


def _batcher(post: Any, limits: Limits, tasks: set[asyncio.Task[Any]]) -> Batcher:
    """A batcher over `post` (the ledger), its spawned sends kept in `tasks` (to cancel at the end)."""
    return Batcher(
        post,
        LedgerFailover(["http://127.0.0.1:1"], limits, time.monotonic),
        limits,
        EdgeMetrics(CollectorRegistry()),
        time.monotonic,
        lambda coro: tasks.add(asyncio.ensure_future(coro)),
    )


def _body(asked: Asked) -> dict[str, Any]:
    return {
        "id": asked.id,
        "client_id": asked.client_id,
        "via": "eu",
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": 5,
        "round_id": f"r-{asked.id}",
        "game_id": "slots",
    }
