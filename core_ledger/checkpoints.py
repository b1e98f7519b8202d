"""Signed checkpoints of the journal's chain head (anchored audit): pure signing and checking.

The sha256 chain has no key: anyone who can write the database can rewrite an entry and re-hash
every entry after it, and plain `verify` passes. A checkpoint is the ledger's Ed25519 signature
over the canonical bytes of {kind, sequence, hash, epoch, time}: once a checkpoint left the
machine (the export, an auditor's copy), no rewrite of history at or before its sequence can
match it without the private key. `check` compares a list of checkpoints with a journal's hashes.

No I/O here but reading key files (`load_private_key`, `load_public_key`); the periodic job is
core_ledger/checkpoint_jobs.py, storage the store's `add_checkpoint`/`checkpoints`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core_ledger.domain.journal import canonical_json

KIND = "croupier.checkpoint.v1"  # signed with the fields: a signature of anything else never verifies
KEY_ID_HEX_CHARS = 16
FIELDS = ("sequence", "hash", "epoch", "time")


class CheckpointKeyError(Exception):
    """A key file is missing, unreadable, not an Ed25519 key, or readable by others."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short name of a public key: the first hex digits of sha256 of its raw 32 bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def signed_bytes(sequence: int, hash_: str, epoch: int, time: str) -> bytes:
    """What a checkpoint's signature covers: canonical JSON (sorted keys, no spaces) of the fields."""
    return canonical_json({"kind": KIND, "sequence": sequence, "hash": hash_, "epoch": epoch, "time": time})


def sign(private: Ed25519PrivateKey, *, sequence: int, hash_: str, epoch: int, time: str) -> dict[str, Any]:
    """A checkpoint document: the fields, the key id and the base64 signature."""
    signature = private.sign(signed_bytes(sequence, hash_, epoch, time))
    return {
        "sequence": sequence,
        "hash": hash_,
        "epoch": epoch,
        "time": time,
        "key_id": key_id(private.public_key()),
        "signature": base64.b64encode(signature).decode(),
    }


def signature_ok(public: Ed25519PublicKey, checkpoint: Mapping[str, Any]) -> bool:
    """True when `checkpoint` is well formed and signed by `public`."""
    try:
        sequence, hash_, epoch, time = (checkpoint[f] for f in FIELDS)
        if not (
            isinstance(sequence, int)
            and isinstance(epoch, int)
            and isinstance(hash_, str)
            and isinstance(time, str)
            and not isinstance(sequence, bool)
            and not isinstance(epoch, bool)
        ):
            return False
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        public.verify(signature, signed_bytes(sequence, hash_, epoch, time))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True


@dataclass
class CheckpointCheck:
    """Checkpoints judged against a journal: each must be signed by the key and name the hash
    the journal holds at its sequence. A checkpoint beyond the journal's end is `missing`: the
    journal lost signed history (or is an older copy)."""

    checked: int = 0
    bad_signature: list[int] = field(default_factory=list)
    hash_mismatch: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not (self.bad_signature or self.hash_mismatch or self.missing)

    def report(self) -> dict[str, Any]:
        bad = [*self.bad_signature, *self.hash_mismatch, *self.missing]
        return {
            "ok": self.ok,
            "checkpoints_checked": self.checked,
            "bad_signature": self.bad_signature,
            "hash_mismatch": self.hash_mismatch,
            "missing_from_journal": self.missing,
            "first_bad_checkpoint_sequence": min(bad) if bad else None,
        }


def check(
    checkpoints: Iterable[Mapping[str, Any]], public: Ed25519PublicKey, hash_at: Mapping[int, str]
) -> CheckpointCheck:
    """Judge `checkpoints` with `public` against `hash_at` (the journal's hash at each checkpointed
    sequence; absent: beyond its end). Sequence 0 (an empty journal) is the genesis hash."""
    result = CheckpointCheck()
    for cp in checkpoints:
        result.checked += 1
        sequence = cp.get("sequence")
        label = sequence if isinstance(sequence, int) else -1
        if not signature_ok(public, cp):
            result.bad_signature.append(label)
        elif label not in hash_at:
            result.missing.append(label)
        elif hash_at[label] != cp["hash"]:
            result.hash_mismatch.append(label)
    return result


def _refuse_shared(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CheckpointKeyError(
            f"{path} is readable or writable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM, PKCS#8, unencrypted); refused when group or others
    may read or write the file."""
    try:
        _refuse_shared(path)
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointKeyError(f"cannot read the checkpoint key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise CheckpointKeyError(f"{path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointKeyError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointKeyError(f"cannot read the public key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise CheckpointKeyError(f"{path} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointKeyError(f"{path} is not an Ed25519 public key")
    return key


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def write_new_key(out: Path) -> tuple[Path, str]:
    """Generate a key pair: the private key into `out` (mode 600, never overwritten), the public
    key into `out` + ".pub". Returns the public key's path and the key id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = out.with_name(out.name + ".pub")
    pub.write_text(public_pem(private.public_key()))
    return pub, key_id(private.public_key())


def load_public_key_pem(pem: str) -> Ed25519PublicKey:
    """A public key from PEM text (as `GET /admin/v1/audit/checkpoints` shows it)."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointKeyError("not an Ed25519 public key")
    return key
