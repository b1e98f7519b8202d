"""The edge's index of documents by parent (a player's games, the jackpots) stays small per
document: an edge holds the sessions of a million players, most with one or a few games."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry

from edge.metrics import EdgeMetrics
from edge.persist import DocumentStore
from edge.state import CHILDREN_LIST_MAX, EdgeState


def _state(tmp_path: Path) -> EdgeState:
    return EdgeState("eu", 7, 16, DocumentStore(tmp_path / "edge.db", 7), EdgeMetrics(CollectorRegistry()), time.time)


def test_children_are_listed_sorted_once_each_below_and_past_the_list_bound(tmp_path: Path) -> None:
    state = _state(tmp_path)
    games = [f"g{i}" for i in range(CHILDREN_LIST_MAX * 2, 0, -1)]
    for i, game in enumerate(games + games):  # every name twice
        state._index(f"session/p1/{game}")
        if i == CHILDREN_LIST_MAX // 2:  # still a list
            assert state.children("session/p1") == sorted(games[: i + 1])
    state._index("session/p2/g1")
    assert state.children("session/p1") == sorted(games)
    assert state.children("session/p2") == ["g1"]
    assert state.children("session/p3") == []


def test_indexing_a_players_one_game_costs_little_memory(tmp_path: Path) -> None:
    state = _state(tmp_path)
    names = [f"session/p{i}/g{i % 7}" for i in range(5000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in names:
            state._index(name)
        per_doc = (tracemalloc.get_traced_memory()[0] - before) / len(names)
    finally:
        tracemalloc.stop()
    assert per_doc < 200, per_doc  # with a one-element set and a fresh child string each: about 350
