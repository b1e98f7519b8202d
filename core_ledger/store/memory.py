"""In-memory backend: the reference implementation of the contract, and fast tests.

Rows are copied in and out (via JSON) so callers never share mutable documents with the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from core_ledger.domain.commands import require
from core_ledger.domain.state import ADDITIVE, ENTRIES, TABLES, Doc, Key
from core_ledger.store.base import Head, JournalRow, Rows, Store, SummaryPage


def _copy(doc: Doc) -> Doc:
    return orjson.loads(orjson.dumps(doc))


class MemoryStore(Store):
    def __init__(self) -> None:
        self._tables: dict[str, dict[Key, Doc]] = {t: {} for t in TABLES}
        self._journal: list[JournalRow] = []
        self._head = Head()
        self._fenced_by = 0
        self._checkpoints: dict[int, Doc] = {}  # by sequence
        self._consumers: dict[str, tuple[Doc, int]] = {}  # settings and cursor, by name

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def head(self) -> Head:
        return self._head

    async def load(self, wanted: dict[str, Sequence[Key]]) -> dict[str, dict[Key, Doc]]:
        out = {}
        for table, keys in wanted.items():
            if table == ENTRIES:
                out[table] = {
                    k: orjson.loads(self._journal[k[0] - 1].text) for k in keys if 0 < k[0] <= len(self._journal)
                }
            else:
                out[table] = {k: _copy(self._tables[table][k]) for k in keys if k in self._tables[table]}
        return out

    async def count_keys(self, table: str) -> int | None:
        require(table in TABLES, f"{table} is a derived table")
        return len(self._tables[table])

    async def key_page(self, table: str, after: Key | None, limit: int) -> list[Key]:
        require(table in TABLES, f"{table} is a derived table")
        keys = sorted(self._tables[table])
        return [k for k in keys if after is None or k > after][:limit]

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        require(
            [j.sequence for j in journal] == list(range(self._head.sequence + 1, head.sequence + 1)),
            "a commit continues the journal without a gap",
        )
        self._journal.extend(journal)
        for table, items in rows.items():
            stored = self._tables[table]
            for key, doc in items:
                if table in ADDITIVE and key in stored:  # sums: the doc holds deltas
                    stored[key] = {name: stored[key].get(name, 0) + value for name, value in doc.items()}
                else:
                    stored[key] = _copy(doc)
        self._head = head

    async def get(self, table: str, key: Key) -> tuple[Doc | None, int]:
        doc = self._tables[table].get(key)
        return (None if doc is None else _copy(doc)), self._head.sequence

    async def select(
        self,
        table: str,
        equals: dict[str, Any],
        *,
        limit: int,
        doc_equals: dict[str, Any] | None = None,
        doc_positive: tuple[str, ...] = (),
        after: Any = None,
    ) -> tuple[list[tuple[Key, Doc]], int]:
        columns = TABLES[table]
        out = []
        for key in sorted(self._tables[table]):
            named = dict(zip(columns, key, strict=True))
            doc = self._tables[table][key]
            if any(named[c] != v for c, v in equals.items()):
                continue
            if doc_equals and any(doc.get(c) != v for c, v in doc_equals.items()):
                continue
            if any(doc.get(c, 0) <= 0 for c in doc_positive):
                continue
            if after is not None and not key[-1] > after:
                continue
            out.append((key, _copy(doc)))
            if len(out) >= limit:
                break
        return out, self._head.sequence

    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        return [(j.sequence, j.text) for j in self._journal[after_sequence : after_sequence + limit]]

    async def journal_of(self, tx_id: str, limit: int) -> list[str]:
        return [j.text for j in self._journal if j.tx_id == tx_id][:limit]

    async def dump(self, table: str) -> dict[Key, Doc]:
        return {k: _copy(v) for k, v in self._tables[table].items()}

    async def replace_derived(self, tables: dict[str, dict[Key, Doc]]) -> None:
        self._tables = {t: {k: _copy(v) for k, v in tables.get(t, {}).items()} for t in TABLES}

    async def fence(self, epoch: int) -> None:
        self._fenced_by = max(self._fenced_by, epoch)

    async def fenced_by(self) -> int:
        return self._fenced_by

    async def unfence(self, epoch: int) -> int:
        if self._fenced_by <= epoch:
            self._fenced_by = 0
        return self._fenced_by

    async def backup(self, path: Path) -> Head:
        """The journal alone is a complete backup: every other table is rebuilt from it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        head, text = self._head, "".join(j.text + "\n" for j in self._journal)
        await asyncio.to_thread(path.write_text, text)  # the snapshot is taken before the thread starts
        return head

    async def add_checkpoint(self, checkpoint: dict[str, Any]) -> bool:
        store = self._checkpoints
        if checkpoint["sequence"] in store:
            return False
        store[checkpoint["sequence"]] = _copy(checkpoint)
        return True

    async def checkpoints(self, after_sequence: int, limit: int) -> list[dict[str, Any]]:
        store = self._checkpoints
        return [_copy(store[s]) for s in sorted(store) if s > after_sequence][:limit]

    async def latest_checkpoint(self) -> dict[str, Any] | None:
        store = self._checkpoints
        return _copy(store[max(store)]) if store else None

    async def put_consumer(self, name: str, doc: dict[str, Any], *, cursor: int | None) -> tuple[dict[str, Any], int]:
        store = self._consumers
        previous = store.get(name)
        kept = cursor if cursor is not None else (previous[1] if previous else 0)
        store[name] = (_copy(doc), kept)
        return _copy(doc), kept

    async def advance_consumer(self, name: str, sequence: int) -> int | None:
        store = self._consumers
        if name not in store:
            return None
        doc, cursor = store[name]
        store[name] = (doc, max(cursor, sequence))
        return store[name][1]

    async def consumers(self) -> dict[str, tuple[dict[str, Any], int]]:
        store = self._consumers
        return {name: (_copy(doc), cursor) for name, (doc, cursor) in sorted(store.items())}

    async def delete_consumer(self, name: str) -> bool:
        store = self._consumers
        return store.pop(name, None) is not None

    async def page(
        self,
        table: str,
        *,
        after: Key | None,
        limit: int,
        key_prefix: str | None = None,
        doc_equals: dict[str, Any] | None = None,
    ) -> tuple[list[tuple[Key, Doc]], int]:
        out = []
        for key in sorted(self._tables[table]):
            doc = self._tables[table][key]
            if after is not None and not key > after:
                continue
            if key_prefix is not None and not str(key[0]).startswith(key_prefix):
                continue
            if doc_equals and any(doc.get(c) != v for c, v in doc_equals.items()):
                continue
            out.append((key, _copy(doc)))
            if len(out) >= limit:
                break
        return out, self._head.sequence

    async def summaries(
        self,
        equals: dict[str, str],
        *,
        after_sequence: int,
        limit: int,
        time_from: str | None = None,
        time_until: str | None = None,
    ) -> SummaryPage:
        out: list[tuple[int, Doc]] = []
        rows = self._tables["tx_summaries"]
        for (sequence,) in sorted(rows):
            doc = rows[(sequence,)]
            if sequence <= after_sequence or any(doc.get(k) != v for k, v in equals.items()):
                continue
            if (time_from is not None and doc["committed_at"] < time_from) or (
                time_until is not None and doc["committed_at"] >= time_until
            ):
                continue
            out.append((sequence, _copy(doc)))
            if len(out) >= limit:
                break
        return out, self._head.sequence

    async def report_sums(
        self,
        table: str,
        *,
        day_from: str,
        day_to: str,
        equals: dict[str, str],
        group_by: Sequence[str],
        members: Sequence[str],
        limit: int,
    ) -> tuple[list[tuple[Key, dict[str, int]]], int]:
        require(table in ADDITIVE and set(group_by) <= set(TABLES[table]), f"{group_by} of {table}")
        columns = TABLES[table]
        sums: dict[Key, dict[str, int]] = {}
        for key, doc in self._tables[table].items():
            named = dict(zip(columns, key, strict=True))
            if day_from <= named["day"] <= day_to and all(named[c] == v for c, v in equals.items()):
                into = sums.setdefault(tuple(named[g] for g in group_by), dict.fromkeys(members, 0))
                for m in members:
                    into[m] += doc.get(m, 0)
        return [(k, sums[k]) for k in sorted(sums)][:limit], self._head.sequence

    async def accounts_by_prefix(self, prefixes: Sequence[str], limit: int) -> tuple[dict[str, Doc], int]:
        out: dict[str, Doc] = {}
        for prefix in prefixes:
            found = sorted(k[0] for k in self._tables["accounts"] if k[0].startswith(prefix))[:limit]
            out.update({name: _copy(self._tables["accounts"][(name,)]) for name in found})
        return out, self._head.sequence

    async def history_at(self, account: str, sequence: int) -> Doc | None:
        found = [k for k in self._tables["history"] if k[0] == account and k[1] <= sequence]
        if not found:
            return None
        key = max(found)
        return {**_copy(self._tables["history"][key]), "sequence": key[1]}

    async def sequence_at(self, moment: str) -> int:
        best: tuple[str, int] | None = None
        for (sequence,), doc in self._tables["tx_summaries"].items():
            if doc["committed_at"] <= moment and (best is None or (doc["committed_at"], sequence) > best):
                best = (doc["committed_at"], sequence)
        return best[1] if best else 0
