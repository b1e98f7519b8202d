"""Journal entries: canonical JSON, the sha256 hash chain, sealing a draft, verifying a chain.

hash = sha256(bytes.fromhex(prev_hash) + canonical_json(entry without "hash")); canonical JSON is
sorted keys, no spaces, UTF-8, integers only. Genesis prev_hash is 64 zeros; sequences start at 1.

Entry format: an entry says how it is to be read in its `format` member (an integer). Entries
written before the member existed have none and are format 1; format 2 is format 1 plus the
member itself. The hash covers whatever the entry holds, `format` included when present, so old
entries keep their hashes and one chain may hold entries of several formats. An
entry of a format this code does not know does not verify: it could not be folded correctly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared.contract.headers import EPOCH_DIGITS_MAX

from core_ledger.domain.commands import Command, InvariantBroken
from core_ledger.domain.records import Entry, Posting, Transaction

GENESIS_HASH = "0" * 64
ENTRY_FORMAT = 2  # what `seal` writes
ENTRY_FORMATS = frozenset({1, 2})  # what verify, rebuild and a standby accept
NESTING_MAX = 16  # entries are shallow; anything deeper is a programming error


def refuse_floats(value: Any, depth: int = 0) -> None:
    """Raises TypeError on a float, ValueError on nesting deeper than journal entries ever are."""
    if depth >= NESTING_MAX:
        raise ValueError("journal values are shallow")
    if isinstance(value, dict):
        for v in value.values():
            refuse_floats(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            refuse_floats(v, depth + 1)
    else:
        if isinstance(value, float):
            raise TypeError("money and journal values are integers, never floats")


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(body)).hexdigest()


def postings_balanced(postings: Iterable[Mapping[str, object]]) -> bool:
    """True when the postings sum to zero in every currency (the double-entry rule)."""
    sums: dict[object, int] = {}
    for p in postings:
        amount = p["amount_minor"]
        if type(amount) is not int:  # an integer, not a bool (nor a float): one test per posting
            return False
        currency = p["currency"]
        sums[currency] = sums.get(currency, 0) + amount
    return not any(sums.values())  # every currency sums to zero


def entry_format(entry: dict[str, Any]) -> int:
    """An entry's format: its `format` member, 1 when it has none (written before formats existed).
    Raises ValueError on a format this code does not know."""
    value = entry.get("format", 1)
    if isinstance(value, bool) or value not in ENTRY_FORMATS:
        raise ValueError(f"journal entry format {value!r} is not one of {sorted(ENTRY_FORMATS)}")
    return int(value)


def seal(transaction: Transaction, postings: list[Posting], *, sequence: int, epoch: int, prev_hash: str) -> Entry:
    """The journal entry for a decided transaction, hashed onto the chain."""
    return sealed(transaction, postings, sequence=sequence, epoch=epoch, prev_hash=prev_hash)[0]


def sealed(
    transaction: Transaction, postings: list[Posting], *, sequence: int, epoch: int, prev_hash: str
) -> tuple[Entry, str]:
    """`seal`, and the entry's stored text (`entry_text`) from the same encoding: the writer's hot
    path encodes each entry once, not once to hash it and again to store it.

    The canonical text of the sealed entry is the hashed body with `"hash":"..."` inserted where
    sorted keys put it: after `epoch` and `format` (integers, so the body starts with exactly
    `_HASHED_PREFIX`), before `postings`."""
    if not postings_balanced(postings):
        raise InvariantBroken(f"postings of a {transaction.get('type')} do not balance: {postings}")
    entry: Entry = {
        "format": ENTRY_FORMAT,
        "sequence": sequence,
        "epoch": epoch,
        "transaction": transaction,
        "postings": postings,
        "prev_hash": prev_hash,
    }
    body = canonical_json(entry)
    digest = hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()
    entry["hash"] = digest
    prefix = _HASHED_PREFIX % (epoch, ENTRY_FORMAT)
    if not body.startswith(prefix):  # not an entry of this shape: encode it whole (never taken today)
        return entry, entry_text(entry)
    return entry, (prefix + b'"hash":"' + digest.encode() + b'",' + body[len(prefix) :]).decode()


_HASHED_PREFIX = b'{"epoch":%d,"format":%d,'
EPOCH_MAX = 10**EPOCH_DIGITS_MAX - 1  # as X-Ledger-Epoch carries it; fits the stores' integers, plus one


def entry_text(entry: Entry | dict[str, Any]) -> str:
    """How an entry is stored and served (one NDJSON line): canonical JSON."""
    return canonical_json(entry).decode()


@dataclass
class ChainCheck:
    """Incremental verification of a journal read in order, page by page."""

    entries_checked: int = 0
    head_sequence: int = 0
    head_hash: str = GENESIS_HASH
    first_bad_sequence: int | None = None
    # The epoch of the last entry checked (None: not known yet). Epochs never go down along the
    # chain (a promotion raises them); one that does, or is no integer of the epochs' range, is bad.
    head_epoch: int | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_sequence is None

    def feed(self, rows: Iterable[tuple[int, str]]) -> bool:
        """Check (sequence, stored text) rows; False once a bad entry was found."""
        for sequence, text in rows:
            if not self.ok:
                return False
            if not self._good(sequence, text):
                self.first_bad_sequence = self.head_sequence + 1
                return False
            self.entries_checked += 1
        return self.ok

    def _good(self, sequence: int, text: str) -> bool:
        expected = self.head_sequence + 1
        if sequence != expected:
            return False
        try:
            entry = orjson.loads(text)
            refuse_floats(entry)
            stored_hash = entry.pop("hash")
            entry_format(entry)
            epoch = entry["epoch"]
            good = (
                entry["sequence"] == sequence
                and entry["prev_hash"] == self.head_hash
                and type(epoch) is int
                and (self.head_epoch or 0) <= epoch <= EPOCH_MAX
                and postings_balanced(entry["postings"])
                and chain_hash(self.head_hash, entry) == stored_hash
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AssertionError, AttributeError):
            return False
        if good:
            self.head_sequence, self.head_hash, self.head_epoch = sequence, stored_hash, epoch
        return good

    def report(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "head_sequence": self.head_sequence,
            "head_hash": self.head_hash,
            "first_bad_sequence": self.first_bad_sequence,
        }


def entry_command(entry: dict[str, Any]) -> Command:
    """The command an entry was decided from: names the rows its fold touches."""
    tx = entry["transaction"]
    key = (tx["client_id"], tx["id"]) if tx["id"] is not None else None
    return Command(tx["type"], tx["request"], tx["principal"], key, tx["via"])
