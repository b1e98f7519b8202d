"""`croupier ledger verify --checkpoints FILE --public-key FILE`: the chain check of a stopped
ledger (or a backup) plus its signed checkpoints (core_ledger/checkpoints.py), read from a file
kept off the ledger host."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core_ledger.checkpoints import CheckpointKeyError, check, load_public_key
from core_ledger.domain.journal import GENESIS_HASH
from core_ledger.journal_checks import verify_store
from core_ledger.store import Store

BAD_INPUT_EXIT = 2


def read_checkpoints_or_exit(path: Path, public_key: Path) -> tuple[Ed25519PublicKey, list[dict[str, Any]]]:
    """The public key and the checkpoints (one JSON object a line); exit 2 on an unreadable file."""
    try:
        key = load_public_key(public_key)
        listed = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    except (CheckpointKeyError, OSError, orjson.JSONDecodeError) as e:
        sys.stderr.write(f"croupier ledger verify: {e}\n")
        raise typer.Exit(BAD_INPUT_EXIT) from None
    if not all(isinstance(cp, dict) for cp in listed):
        sys.stderr.write(f"croupier ledger verify: {path} holds a line that is not a JSON object\n")
        raise typer.Exit(BAD_INPUT_EXIT)
    return key, listed


def _hash_of(text: str) -> str:
    """The `hash` an entry's text holds; "" (matches no checkpoint) when the text is not an entry."""
    try:
        entry = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ""
    value = entry.get("hash") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else ""


async def verify_with_checkpoints(store: Store, listed: list[dict[str, Any]], key: Ed25519PublicKey) -> dict[str, Any]:
    chain = await verify_store(store)
    hash_at: dict[int, str] = {0: GENESIS_HASH}
    for cp in listed:
        sequence = cp.get("sequence")
        if isinstance(sequence, int) and sequence > 0 and sequence not in hash_at:
            rows = await store.journal(sequence - 1, 1)
            if rows and rows[0][0] == sequence:
                hash_at[sequence] = _hash_of(rows[0][1])
    judged = check(listed, key, hash_at).report()
    return {**chain, "ok": bool(chain["ok"] and judged["ok"]), "chain_ok": chain["ok"], "checkpoints": judged}
