"""The index of rounds by age (`round_openings`) is written only when what it shows changes: when
a bet opens a round and when the round's status changes, not for every entry played in it."""

from __future__ import annotations

from typing import Any

from core_ledger.domain import Command
from tests.support.domain_world import World, base_world, bet, rollback, win


def _index_writes(world: World, cmd: Command) -> list[dict[str, Any]]:
    world.state.take_dirty()
    world.run(cmd)
    return [doc for _, doc in world.state.take_dirty().get("round_openings", [])]


def test_a_round_is_indexed_when_it_opens_and_when_its_status_changes() -> None:
    world = base_world()
    opened = _index_writes(world, bet("b1", "p1", 10))
    assert [(d["round_id"], d["status"]) for d in opened] == [("r1", "open")]
    assert _index_writes(world, bet("b2", "p1", 5)) == []  # the row shows nothing new
    assert _index_writes(world, rollback("rb1", "p1", "b1")) == []  # still a stake in it: open
    assert [d["status"] for d in _index_writes(world, rollback("rb2", "p1", "b2"))] == ["refunded"]
    assert [d["status"] for d in _index_writes(world, bet("b3", "p1", 7))] == ["open"]  # open again

    assert [d["status"] for d in _index_writes(world, bet("b4", "p1", 10, round_id="r2"))] == ["open"]
    assert _index_writes(world, win("w1", "p1", 3, round_id="r2")) == []
    assert [d["status"] for d in _index_writes(world, win("w2", "p1", 4, round_id="r2", close=True))] == ["closed"]

    # What the index holds is what writing it on every entry held.
    rows = world.state.rows("round_openings")
    assert sorted((d["round_id"], d["status"], d["game_id"], d["currency"]) for d in rows.values()) == [
        ("r1", "open", "g1", "EUR"),
        ("r2", "closed", "g1", "EUR"),
    ]
