"""Pure domain: canonical JSON, the hash chain, its verifier, and decide's refusal to touch state."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import orjson
import pytest

from core_ledger.domain import (
    ADMIN_SCOPE,
    Answer,
    ChainCheck,
    Command,
    CommittedAnswer,
    Context,
    InvariantBroken,
    Refusal,
    RefusalCode,
    RejectedAnswer,
    Replay,
    State,
    decide,
    entry_text,
    evolve,
    seal,
)
from core_ledger.domain.journal import GENESIS_HASH, canonical_json, chain_hash, postings_balanced
from core_ledger.domain.state import ENTRIES

CTX = Context(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))


def test_canonical_json_sorts_keys_without_spaces_in_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, "é"], "c": None}}) == '{"a":{"c":null,"d":[1,"é"]},"b":1}'.encode()


def test_hash_is_sha256_of_prev_hash_bytes_and_canonical_entry() -> None:
    import hashlib

    body = {"sequence": 1, "x": "y"}
    assert chain_hash(GENESIS_HASH, body) == hashlib.sha256(bytes(32) + b'{"sequence":1,"x":"y"}').hexdigest()


def test_postings_must_balance_per_currency() -> None:
    assert postings_balanced(
        [
            {"account": "a", "amount_minor": 5, "currency": "EUR"},
            {"account": "b", "amount_minor": -5, "currency": "EUR"},
        ]
    )
    assert not postings_balanced(
        [
            {"account": "a", "amount_minor": 5, "currency": "EUR"},
            {"account": "b", "amount_minor": -5, "currency": "USD"},
        ]
    )
    assert not postings_balanced([{"account": "a", "amount_minor": 0.0, "currency": "EUR"}])
    # A bool is an int to Python, never an amount (True - True balances, and is still refused).
    assert not postings_balanced(
        [
            {"account": "a", "amount_minor": True, "currency": "EUR"},
            {"account": "b", "amount_minor": -1, "currency": "EUR"},
        ]
    )
    assert postings_balanced([])
    with pytest.raises(InvariantBroken):
        seal(
            {"type": "x"},
            [{"account": "a", "amount_minor": 1, "currency": "EUR"}],
            sequence=1,
            epoch=1,
            prev_hash=GENESIS_HASH,
        )


def chain(n: int) -> list[tuple[int, str]]:
    rows, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        entry = seal({"type": "t", "i": i}, [], sequence=i, epoch=1, prev_hash=prev)
        rows.append((i, entry_text(entry)))
        prev = entry["hash"]
    return rows


@pytest.mark.parametrize("broken", [1, 3, 5])
def test_chain_check_names_the_first_bad_sequence(broken: int) -> None:
    rows = chain(5)
    entry = orjson.loads(rows[broken - 1][1])
    entry["transaction"]["i"] = 99
    rows[broken - 1] = (broken, orjson.dumps(entry).decode())
    check = ChainCheck()
    check.feed(rows)
    assert check.report()["first_bad_sequence"] == broken and check.entries_checked == broken - 1


def test_chain_check_refuses_gaps_floats_and_garbage() -> None:
    rows = chain(3)
    assert ChainCheck().feed([rows[0], rows[2]]) is False
    float_entry = orjson.loads(rows[0][1])
    float_entry["transaction"]["i"] = 1.0
    assert ChainCheck().feed([(1, orjson.dumps(float_entry).decode())]) is False
    assert ChainCheck().feed([(1, "{not json")]) is False
    good = ChainCheck()
    assert good.feed(rows) and good.report()["head_hash"] == orjson.loads(rows[2][1])["hash"]


def test_decide_is_pure_and_evolve_applies_the_draft() -> None:
    state = State(complete=True)
    create = Command("player_create", {"player_id": "p", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "player:p"))
    evolve(state, seal(decide(state, create, CTX).transaction, [], sequence=1, epoch=1, prev_hash=GENESIS_HASH))
    deposit = Command("deposit", {"id": "d", "player_id": "p", "currency": "EUR", "amount_minor": 7}, "c", ("c", "d"))
    before = copy.deepcopy(state.tables)
    draft = decide(state, deposit, CTX)
    assert state.tables == before
    assert draft.transaction["outcome"] == "committed" and postings_balanced(draft.postings)
    answer = evolve(state, seal(draft.transaction, draft.postings, sequence=2, epoch=1, prev_hash="11" * 32))
    assert isinstance(answer, CommittedAnswer) and answer.body["balance"]["balance_minor"] == 7
    assert state.get("accounts", ("player:p:EUR",)) == {"balance_minor": 7, "version": 1}
    assert state.get("accounts", ("cashier:EUR",)) == {"balance_minor": -7, "version": 1}


def _apply(state: State, cmd: Command, sequence: int) -> Answer:
    draft = decide(state, cmd, CTX)
    assert not isinstance(draft, Replay)
    entry = seal(draft.transaction, draft.postings, sequence=sequence, epoch=1, prev_hash=GENESIS_HASH)
    state.fill(ENTRIES, (sequence,), entry)  # what the writer loads from the journal to replay
    return evolve(state, entry)


def test_a_committed_bet_keeps_no_idem_row_yet_binds_its_id() -> None:
    state = State(complete=True)
    _apply(state, Command("player_create", {"player_id": "p", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "p")), 1)
    _apply(
        state,
        Command("deposit", {"id": "d", "player_id": "p", "currency": "EUR", "amount_minor": 150}, "c", ("c", "d")),
        2,
    )
    bet = {"id": "b", "player_id": "p", "currency": "EUR", "amount_minor": 100, "round_id": "r", "game_id": "g"}
    first = _apply(state, Command("bet", bet, "e", ("e", "b"), "e"), 3)
    assert isinstance(first, CommittedAnswer) and state.get("idem", ("e", "b")) is None
    assert state.get("bets", ("e", "b"))["sequence"] == 3
    replay = decide(state, Command("bet", bet, "e", ("e", "b"), "e"), CTX)
    assert isinstance(replay, Replay) and replay.answer == first
    with pytest.raises(Refusal) as reused:
        decide(state, Command("rollback", {"id": "b", "bet_id": "x", "player_id": "p"}, "e", ("e", "b"), "e"), CTX)
    assert reused.value.code == RefusalCode.IDEMPOTENCY_KEY_REUSED and reused.value.field == "type"
    refused = _apply(state, Command("bet", {**bet, "id": "b2"}, "e", ("e", "b2"), "e"), 4)  # 50 left: refused
    assert refused == RejectedAnswer("insufficient_funds", refused.detail, 4, "b2")
    assert state.get("idem", ("e", "b2")) == {"type": "bet", "sequence": 4}


def _legacy(state: State, cmd: Command, sequence: int, **tx_changes: object) -> Answer:
    """Fold `cmd` as the code before round scoping journaled it: no round scope in its result."""
    draft = decide(state, cmd, CTX)
    assert not isinstance(draft, Replay) and draft.transaction["outcome"] == "committed"
    draft.transaction["result"].pop("round_client_id", None)
    draft.transaction.update(tx_changes)
    entry = seal(draft.transaction, draft.postings, sequence=sequence, epoch=1, prev_hash=GENESIS_HASH)
    state.fill(ENTRIES, (sequence,), entry)
    return evolve(state, entry)


def test_entries_from_before_round_scoping_fold_as_they_did_and_their_rounds_stay_playable() -> None:
    state = State(complete=True)
    _apply(state, Command("player_create", {"player_id": "p", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "p")), 1)
    _apply(
        state,
        Command("deposit", {"id": "d", "player_id": "p", "currency": "EUR", "amount_minor": 1000}, "c", ("c", "d")),
        2,
    )
    bet = {"player_id": "p", "currency": "EUR", "amount_minor": 100, "game_id": "g"}
    _legacy(state, Command("bet", {**bet, "id": "a7", "round_id": "7"}, "e", ("gs-a", "a7"), "e"), 3)
    _legacy(state, Command("bet", {**bet, "id": "a9", "round_id": "9"}, "e", ("gs-a", "a9"), "e"), 4)
    # Before scoping, client B could close A's round "7": that entry still folds, onto the same row.
    win = {"player_id": "p", "currency": "EUR", "amount_minor": 0, "close_round": True}
    _legacy(state, Command("win", {**win, "id": "bw", "round_id": "7"}, "e", ("gs-a", "bw"), "e"), 5, client_id="gs-b")
    assert state.rows("client_rounds") == {}
    assert state.get("rounds", ("p", "7"))["status"] == "closed"
    assert state.get("rounds", ("p", "9"))["bets_minor"] == 100
    assert "round_client_id" not in state.get("bets", ("gs-a", "a9"))  # the same bet row as before
    # The open unscoped round "9" stays A's (A bet in it); B cannot play or close it.
    with pytest.raises(Refusal, match="has no bet") as unknown:
        decide(state, Command("win", {**win, "id": "bw9", "round_id": "9"}, "e", ("gs-b", "bw9"), "e"), CTX)
    assert unknown.value.code == RefusalCode.NOT_FOUND
    won = _apply(
        state, Command("win", {**win, "id": "aw9", "round_id": "9", "amount_minor": 30}, "e", ("gs-a", "aw9"), "e"), 6
    )
    assert isinstance(won, CommittedAnswer) and state.get("rounds", ("p", "9"))["status"] == "closed"
    # B's bet in a round "9" opens B's own round.
    _apply(state, Command("bet", {**bet, "id": "b9", "round_id": "9"}, "e", ("gs-b", "b9"), "e"), 7)
    assert state.get("client_rounds", ("p", "9", "gs-b"))["bets_minor"] == 100
    assert state.get("bets", ("gs-b", "b9"))["round_client_id"] == "gs-b"


def test_state_get_tells_a_missing_row_from_one_never_loaded() -> None:
    """The overlay (incomplete) answers a loaded row, None for a row storage does not hold, and
    refuses a row never loaded (a planning bug); a complete state answers None for a missing row.
    An unknown table is a KeyError in both (a typo, not a missing row)."""
    overlay = State(complete=False)
    overlay.fill("accounts", ("player:p1:EUR",), {"balance_minor": 5, "version": 1})
    overlay.fill("accounts", ("player:p2:EUR",), None)
    assert overlay.get("accounts", ("player:p1:EUR",)) == {"balance_minor": 5, "version": 1}
    assert overlay.get("accounts", ("player:p2:EUR",)) is None
    with pytest.raises(InvariantBroken, match="was not loaded before use"):
        overlay.get("accounts", ("player:p3:EUR",))
    complete = State(complete=True)
    assert complete.get("accounts", ("player:p3:EUR",)) is None
    for state in (overlay, complete):
        with pytest.raises(KeyError):
            state.get("no_such_table", ("x",))
