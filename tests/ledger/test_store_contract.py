"""One contract suite for every storage backend (memory, SQLite, PostgreSQL): no backend-specific branches.
The `store` fixture (tests/ledger/conftest.py) opens each backend in turn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from core_ledger.domain.commands import InvariantBroken
from core_ledger.domain.journal import GENESIS_HASH, entry_text, seal
from core_ledger.store import Head, JournalRow, StorageError, Store


def rows(n: int, start: int = 1) -> list[JournalRow]:
    return [JournalRow(i, f"tx{i}", f'{{"sequence":{i}}}') for i in range(start, start + n)]


def round_doc(status: str, bets_minor: int) -> dict[str, object]:
    """A round row of the shape the domain writes (`records.RoundRow`)."""
    return {
        "game_id": "g",
        "currency": "EUR",
        "status": status,
        "bets_minor": bets_minor,
        "wins_minor": 0,
        "win_count": 0,
        "opened_sequence": 1,
        "transactions": [],
    }


class TestStoreContract:
    async def test_empty_store_has_genesis_head(self, store: Store) -> None:
        assert await store.head() == Head()
        assert await store.journal(0, 10) == []

    async def test_commit_is_visible_to_loads_reads_and_journal(self, store: Store) -> None:
        head = Head(2, "ab" * 32, 1)
        await store.commit(
            rows(2),
            {
                "accounts": [(("house:EUR",), {"balance_minor": -5, "version": 1})],
                "idem": [(("c", "b1"), {"x": 1}), (("c", "b2"), {"x": 2})],
            },
            head,
        )
        assert await store.head() == head
        assert await store.load({"idem": [("c", "b1"), ("c", "zz")], "accounts": [("house:EUR",)]}) == {
            "idem": {("c", "b1"): {"x": 1}},
            "accounts": {("house:EUR",): {"balance_minor": -5, "version": 1}},
        }
        assert await store.get("idem", ("c", "b2")) == ({"x": 2}, 2)
        assert await store.get("idem", ("c", "nope")) == (None, 2)
        assert [s for s, _ in await store.journal(1, 10)] == [2]
        assert await store.journal_of("tx2", 5) == ['{"sequence":2}']

    async def test_key_pages_list_every_key_once_in_the_order_their_ranges_use(self, store: Store) -> None:
        """What the writer's key filter is filled from: pages after the last key of the previous
        page, together every key of the table once (keys that sort apart by byte and by locale)."""
        clients = ["B", "a", "a b", "a-b", "Z", "é", "e", "ab"]
        keys = [(c, f"bet-{i}") for c in clients for i in (1, 2, 10)]
        await store.commit(rows(1), {"idem": [(k, {"x": 1}) for k in keys]}, Head(1, "ab" * 32, 1))
        assert await store.count_keys("idem") == len(keys)
        assert await store.count_keys("bets") == 0
        listed: list[tuple[object, ...]] = []
        after = None
        for _ in range(len(keys)):  # bounded: at least one key a page
            page = await store.key_page("idem", after, 5)
            if not page:
                break
            assert len(page) <= 5
            listed += page
            after = page[-1]
        assert sorted(listed) == sorted(keys) and len(listed) == len(keys)
        assert listed == sorted(keys)  # byte order, as the ranges compare (not the locale's)
        with pytest.raises(InvariantBroken):
            await store.count_keys("idem; DROP TABLE idem")
        with pytest.raises(InvariantBroken):
            await store.key_page("idem; DROP TABLE idem", None, 5)
        assert await store.count_keys("idem") == len(keys)  # the table is still there, whole

    async def test_upsert_replaces_and_select_filters_orders_and_pages(self, store: Store) -> None:
        docs = [(("p1", f"r{i}"), round_doc("open" if i % 2 else "closed", i)) for i in range(5)]
        await store.commit(rows(1), {"rounds": docs}, Head(1, "00" * 32, 1))
        await store.commit(rows(1, 2), {"rounds": [(("p1", "r0"), round_doc("open", 9))]}, Head(2, "11" * 32, 1))
        got, head = await store.select("rounds", {"player_id": "p1"}, limit=10, doc_equals={"status": "open"})
        assert head == 2 and [k[1] for k, _ in got] == ["r0", "r1", "r3"] and got[0][1] == round_doc("open", 9)
        got, _ = await store.select("rounds", {"player_id": "p1"}, limit=2, after="r1")
        assert [k[1] for k, _ in got] == ["r2", "r3"]
        got, _ = await store.select("rounds", {"round_id": "r4"}, limit=5)
        assert [k for k, _ in got] == [("p1", "r4")]

    async def test_loads_many_keys_beyond_one_query(self, store: Store) -> None:
        keys = [("c", f"id{i}") for i in range(1000)]
        await store.commit(rows(1), {"idem": [(k, {"i": i}) for i, k in enumerate(keys)]}, Head(1, "00" * 32, 1))
        found = await store.load({"idem": [*keys, ("c", "missing")]})
        assert len(found["idem"]) == 1000 and found["idem"][("c", "id999")] == {"i": 999}

    async def test_replace_derived_and_dump(self, store: Store) -> None:
        await store.commit(rows(1), {"players": [(("p1",), {"a": 1})]}, Head(1, "00" * 32, 1))
        await store.replace_derived({"players": {("p2",): {"b": 2}}})
        assert await store.dump("players") == {("p2",): {"b": 2}}
        assert [s for s, _ in await store.journal(0, 5)] == [1]  # the journal is not derived

    async def test_fence_is_durable_only_grows_and_leaves_the_head_alone(self, store: Store) -> None:
        assert await store.fenced_by() == 0
        head = Head(1, "ab" * 32, 1)
        await store.commit(rows(1), {}, head)
        await store.fence(3)
        await store.fence(2)  # a lower epoch seen later does not lower the fence
        await store.commit(rows(1, 2), {}, Head(2, "cd" * 32, 1))  # a commit does not clear it
        assert await store.fenced_by() == 3 and (await store.head()).sequence == 2

    async def test_unfence_clears_a_fence_up_to_its_epoch_and_keeps_a_higher_one(self, store: Store) -> None:
        await store.commit(rows(1), {}, Head(1, "ab" * 32, 1))
        await store.fence(3)
        assert await store.unfence(2) == 3 and await store.fenced_by() == 3  # a higher fence came meanwhile
        assert await store.unfence(3) == 0 and await store.fenced_by() == 0
        assert await store.unfence(3) == 0  # nothing to lift: still none
        await store.fence(5)  # fencing works again after an unfence, and the head was never touched
        assert await store.fenced_by() == 5 and await store.head() == Head(1, "ab" * 32, 1)

    async def test_backup_holds_the_head(self, store: Store, tmp_path: Path) -> None:
        head = Head(3, "cd" * 32, 1)
        await store.commit(rows(3), {}, head)
        assert await store.backup(tmp_path / "b" / "copy") == head
        assert (tmp_path / "b" / "copy").stat().st_size > 0


def sealed(count: int, after: Head) -> tuple[list[JournalRow], Head]:
    """`count` real journal entries chained onto `after` (balanced postings, hashed), and the new head."""
    journal, head = [], after
    for _ in range(count):
        sequence = head.sequence + 1
        entry = seal(
            {"type": "deposit", "id": f"tx{sequence}"},
            [
                {"account": "house:EUR", "currency": "EUR", "amount_minor": -sequence},
                {"account": "player:p1:EUR", "currency": "EUR", "amount_minor": sequence},
            ],
            sequence=sequence,
            epoch=after.epoch or 1,
            prev_hash=head.hash,
        )
        journal.append(JournalRow(sequence, f"tx{sequence}", entry_text(entry)))
        head = Head(sequence, entry["hash"], entry["epoch"])
    return journal, head


class TestCommitExtendsTheHead:
    async def test_each_commit_extends_the_head_and_a_fresh_open_holds_it(self, storage: Callable[[], Store]) -> None:
        store = storage()
        await store.open()
        try:
            head = Head(0, GENESIS_HASH, 1)
            for count in (1, 3, 2):
                journal, new_head = sealed(count, head)
                await store.commit(journal, {}, new_head)
                assert await store.head() == new_head
                assert new_head.sequence == head.sequence + count, "sequence + 1 per entry"
                head = new_head
            stored = [orjson.loads(text) for _, text in await store.journal(0, 100)]
            assert [e["sequence"] for e in stored] == list(range(1, 7))
            assert [e["prev_hash"] for e in stored] == [GENESIS_HASH] + [e["hash"] for e in stored[:-1]]
            assert stored[-1]["hash"] == head.hash
        finally:
            await store.close()
        reopened = storage()
        await reopened.open()
        try:
            assert await reopened.head() == head, "a fresh open holds the head that was committed"
        finally:
            await reopened.close()

    @pytest.mark.parametrize("case", ["gap", "stale", "ahead"])
    async def test_a_commit_that_does_not_extend_the_stored_head_is_refused_and_changes_nothing(
        self, store: Store, case: str
    ) -> None:
        journal, head = sealed(2, Head(0, GENESIS_HASH, 1))
        await store.commit(journal, {"players": [(("p1",), {"n": 1})]}, head)
        more, later = sealed(3, head)
        bad = {
            "gap": (more[:1] + more[2:], later),  # rows 3 and 5 for a head at 5
            "stale": (journal[1:], head),  # row 2 again, as if the stored head were still 1
            "ahead": (more[1:], later),
        }[case]  # rows 4..5 while the stored head is 2
        with pytest.raises((InvariantBroken, StorageError)):
            await store.commit(bad[0], {"players": [(("p1",), {"n": 2})]}, bad[1])
        assert await store.head() == head
        assert [s for s, _ in await store.journal(0, 10)] == [1, 2]
        assert await store.get("players", ("p1",)) == ({"n": 1}, 2)


class TestSideTables:
    """Checkpoints and event consumers: the same contract on every backend."""

    async def test_checkpoints_are_stored_once_per_sequence_and_paged_in_order(self, store: Store) -> None:
        assert await store.latest_checkpoint() is None
        for sequence in (3, 1, 2):
            assert await store.add_checkpoint({"sequence": sequence, "hash": f"{sequence:064x}", "signature": "s"})
        assert not await store.add_checkpoint({"sequence": 2, "hash": "other", "signature": "t"})
        assert [c["sequence"] for c in await store.checkpoints(0, 10)] == [1, 2, 3]
        assert [c["sequence"] for c in await store.checkpoints(1, 1)] == [2]
        assert (await store.checkpoints(1, 1))[0]["hash"] == f"{2:064x}"  # the first one stays
        assert (await store.latest_checkpoint() or {}).get("sequence") == 3

    async def test_consumer_cursors_only_move_forward_unless_reset(self, store: Store) -> None:
        assert await store.advance_consumer("nobody", 5) is None
        assert await store.put_consumer("bi", {"description": "warehouse"}, cursor=None) == (
            {"description": "warehouse"},
            0,
        )
        assert await store.advance_consumer("bi", 7) == 7
        assert await store.advance_consumer("bi", 4) == 7  # a late, older ack does not move it back
        assert await store.put_consumer("bi", {"description": "dw"}, cursor=None) == ({"description": "dw"}, 7)
        assert await store.put_consumer("aml", {}, cursor=3) == ({}, 3)
        assert await store.consumers() == {"aml": ({}, 3), "bi": ({"description": "dw"}, 7)}
        assert await store.put_consumer("bi", {}, cursor=2) == ({}, 2)  # an explicit reset by an operator
        assert await store.delete_consumer("bi") and not await store.delete_consumer("bi")
        assert list(await store.consumers()) == ["aml"]


class TestOperatorQueryReads:
    """The store reads of operator queries (core_ledger/queries.py), on every backend."""

    async def test_page_orders_by_whole_key_after_a_key_with_prefix_and_doc_filters(self, store: Store) -> None:
        rows_ = [
            (("p1", "b", "c2"), {"status": "open"}),
            (("p1", "b", "c1"), {"status": "closed"}),
            (("p1", "a", "c9"), {"status": "open"}),
            (("p2", "a", "c1"), {"status": "open"}),
        ]
        accounts = [
            ((name,), {"balance_minor": i, "version": 1})
            for i, name in enumerate(["house:EUR", "player:p1:EUR", "player:p10:EUR", "playerx", "cashier:EUR"])
        ]
        await store.commit(rows(1), {"client_rounds": rows_, "accounts": accounts}, Head(1, "00" * 32, 1))
        got, head = await store.page("client_rounds", after=None, limit=10)
        assert head == 1 and [k for k, _ in got] == [
            ("p1", "a", "c9"),
            ("p1", "b", "c1"),
            ("p1", "b", "c2"),
            ("p2", "a", "c1"),
        ]
        got, _ = await store.page("client_rounds", after=("p1", "b", "c1"), limit=2)
        assert [k for k, _ in got] == [("p1", "b", "c2"), ("p2", "a", "c1")]
        got, _ = await store.page("client_rounds", after=("p1", "a", "c9"), limit=10, doc_equals={"status": "open"})
        assert [k for k, _ in got] == [("p1", "b", "c2"), ("p2", "a", "c1")]
        got, _ = await store.page("accounts", after=None, limit=10, key_prefix="player:")
        assert [k[0] for k, _ in got] == ["player:p10:EUR", "player:p1:EUR"]  # by code point: "0" < ":"
        got, _ = await store.page("accounts", after=("player:p10:EUR",), limit=10, key_prefix="player:")
        assert [k[0] for k, _ in got] == ["player:p1:EUR"]

    async def test_summaries_filter_by_members_and_time_in_sequence_order(self, store: Store) -> None:
        def posting(kind: str) -> dict[str, object]:
            return {"amount_minor": 0, "balance_minor": 0, "type": kind, "id": None}

        def summary(player: str, kind: str, at: str) -> dict[str, object]:
            return {
                "id": None,
                "type": kind,
                "outcome": "committed",
                "client_id": "gs",
                "via": None,
                "committed_at": at,
                "player_id": player,
                "game_id": "g",
                "round_id": None,
                "currency": "EUR",
            }

        docs = [
            ((1,), summary("p1", "bet", "2026-01-01T00:00:01.000000Z")),
            ((2,), summary("p2", "bet", "2026-01-01T00:00:02.000000Z")),
            ((3,), summary("p1", "win", "2026-01-01T00:00:02.000000Z")),
            ((4,), summary("p1", "bet", "2026-01-01T00:00:04.000000Z")),
        ]
        # As the folds write them: each committed bet and win posts to its player's account.
        history = [
            (("player:p1:EUR" if doc["player_id"] == "p1" else "player:p2:EUR", key[0]), posting(doc["type"]))
            for key, doc in docs
        ]
        accounts = [
            (("player:p1:EUR",), {"balance_minor": 0, "version": 3}),
            (("player:p2:EUR",), {"balance_minor": 0, "version": 1}),
        ]
        await store.commit(
            rows(4), {"accounts": accounts, "history": history, "tx_summaries": docs}, Head(4, "00" * 32, 1)
        )
        got, head = await store.summaries({"player_id": "p1"}, after_sequence=0, limit=10)
        assert head == 4 and [s for s, _ in got] == [1, 3, 4] and got[0][1]["type"] == "bet"
        got, _ = await store.summaries({"player_id": "p1", "type": "bet"}, after_sequence=1, limit=10)
        assert [s for s, _ in got] == [4]
        got, _ = await store.summaries({}, after_sequence=0, limit=2, time_from="2026-01-01T00:00:02.000000Z")
        assert [s for s, _ in got] == [2, 3]
        got, _ = await store.summaries({}, after_sequence=0, limit=9, time_until="2026-01-01T00:00:02.000000Z")
        assert [s for s, _ in got] == [1]
        assert await store.sequence_at("2026-01-01T00:00:03.000000Z") == 3
        assert await store.sequence_at("2026-01-01T00:00:00.000000Z") == 0
        assert await store.sequence_at("2027-01-01T00:00:00.000000Z") == 4

    async def test_history_at_is_the_last_posting_at_or_before_a_sequence(self, store: Store) -> None:
        def posting(balance: int) -> dict[str, object]:
            return {"amount_minor": 10, "balance_minor": balance, "type": "deposit", "id": None}

        history = [(("player:p1:EUR", s), posting(10 * s)) for s in (2, 5, 9)] + [(("player:p2:EUR", 3), posting(1))]
        await store.commit(rows(9), {"history": history}, Head(9, "00" * 32, 1))
        assert await store.history_at("player:p1:EUR", 1) is None
        at = await store.history_at("player:p1:EUR", 8)
        assert at is not None and at["sequence"] == 5 and at["balance_minor"] == 50
        at = await store.history_at("player:p1:EUR", 9)
        assert at is not None and at["sequence"] == 9
        assert await store.history_at("player:p3:EUR", 9) is None
