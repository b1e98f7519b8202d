"""The first answer of an entry and its replays are the same bytes: `sorted_keys` (one canonical
encoding and decoding) orders every mapping as the stored journal does, and changes no value."""

from __future__ import annotations

from typing import Any

import orjson

from core_ledger.domain import CommittedAnswer, render
from core_ledger.domain.journal import canonical_json
from core_ledger.domain.render import sorted_keys


def test_sorted_keys_orders_every_mapping_and_keeps_every_value() -> None:
    value = {"z": [{"b": 2**62, "a": None}, 3, "x"], "a": {"d": True, "c": {"f": False, "e": [{}]}}, "m": -7}
    out = sorted_keys(value)
    assert out == value
    assert list(out) == ["a", "m", "z"] and list(out["a"]) == ["c", "d"] and list(out["a"]["c"]) == ["e", "f"]
    assert list(out["z"][0]) == ["a", "b"] and out["z"][0]["b"] == 2**62 and type(out["z"][0]["b"]) is int
    assert sorted_keys("text") == "text" and sorted_keys(5) == 5 and sorted_keys(None) is None


def test_a_first_answer_is_the_bytes_of_its_replay_from_the_journal_text() -> None:
    entry: dict[str, Any] = {
        "sequence": 7,
        "epoch": 2,
        "transaction": {
            "type": "bet",
            "id": "b1",
            "client_id": "gs",
            "via": "edge-1",
            "principal": "edge-1",
            "committed_at": "2026-01-01T00:00:00.000000Z",
            "outcome": "committed",
            "request": {"round_id": "r1", "player_id": "p1", "id": "b1", "game_id": "g", "amount_minor": 100},
            "result": {
                "round_client_id": "gs",
                "jackpot_contributions": [{"jackpot_id": "mega", "epoch": 1, "amount_minor": 1}],
                "balance": {"version": 3, "player_id": "p1", "currency": "EUR", "balance_minor": 900},
                "bonus_wagering": [],
            },
        },
        "postings": [],
    }
    first, replay = render(entry), render(orjson.loads(canonical_json(entry)))
    assert isinstance(first, CommittedAnswer) and isinstance(replay, CommittedAnswer)
    assert orjson.dumps(first.body) == orjson.dumps(replay.body)
    assert list(first.body["balance"]) == ["balance_minor", "currency", "player_id", "version"]
    assert "round_client_id" not in first.body["transaction"]  # journal-only results stay out
    assert first.body["transaction"]["jackpot_contributions"] == [{"amount_minor": 1, "epoch": 1, "jackpot_id": "mega"}]
