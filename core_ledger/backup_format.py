"""The portable backup format: write one from any store, verify one, restore one into any store.

A backup is a directory, the same for SQLite and PostgreSQL sources::

    ledger-20261129T041500123456Z/
        manifest.json          format and schema versions, epoch, head (sequence, hash), created_at,
                               source backend, and the sha256, size and line count of every file
        journal.ndjson         every journal entry up to the head, one per line, its canonical text
        tables/<table>.ndjson  every derived row, {"key": [...], "doc": {...}} one per line, by key

Consistency: the source store first writes its own online copy (`Store.backup`: SQLite's backup
API, or one PostgreSQL REPEATABLE READ snapshot) into the unfinished backup directory; the files
are exported from that copy, so every file holds the state at one journal sequence. The copy is
then deleted, the files fsynced, and the whole backup verified as `verify_backup` would verify it
(checksums, chain check, head) before it is renamed to its final name: a directory without the
`.partial` suffix is a complete, verified backup.

Restore never trusts the derived tables of a backup: it verifies the checksums and the chain, then
replays the journal (up to `until_sequence` for point-in-time recovery) into an empty store with the
live fold (`fold`: `evolve` without the answer), page by page, committing each page's entries with
the rows they changed. The backup's tables are only compared with the replayed ones afterwards
(reported, not used).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.migrations import latest

from core_ledger import checkpoints
from core_ledger.domain import ENTRY_FORMAT, ChainCheck, State, fold
from core_ledger.domain.journal import EPOCH_MAX, GENESIS_HASH
from core_ledger.domain.state import LATER_TABLES, TABLES
from core_ledger.overlay import Overlay
from core_ledger.store import SqliteStore, Store
from core_ledger.store.base import UNFINISHED_RESTORE_FENCE, Head, JournalRow
from core_ledger.store.sqlite import MIGRATIONS, derived_behind, doc_sql, fsync_path, mkdir_durable
from core_ledger.store.sqlite_entries import entry_text

FORMAT = "croupier-ledger-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.ndjson"
PARTIAL = ".partial"
PREFIX = "ledger-"
SNAPSHOT = "snapshot.db"  # the source's own consistent copy, deleted once exported
REPLAY_PAGE = 1000  # journal entries per restore commit
HASH_CHUNK = 1 << 20


class BackupInvalid(Exception):
    """A backup that must not be restored (corrupt, tampered, truncated or of an unknown format).
    `first_bad_sequence` names the first journal entry that fails the chain check, when one does."""

    def __init__(self, detail: str, *, first_bad_sequence: int | None = None, file: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.first_bad_sequence = first_bad_sequence
        self.file = file

    def report(self) -> dict[str, Any]:
        return {"ok": False, "error": self.detail, "first_bad_sequence": self.first_bad_sequence, "file": self.file}


class RestoreTargetNotEmpty(Exception):
    """The restore target already holds a journal: restore only ever fills an empty store."""


class Anchors(NamedTuple):
    """Signed checkpoints kept off the ledger host (`GET /admin/v1/audit/checkpoints/export`) and
    the public key they verify with. The chain and the checksums of a backup have no key: whoever
    can write the backup can rewrite an entry and re-hash everything after it. Checkpoints cannot
    be forged without the ledger's private key."""

    public_key: Ed25519PublicKey
    checkpoints: list[dict[str, Any]]

    def at_or_below(self, sequence: int) -> list[dict[str, Any]]:
        """The checkpoints a journal ending at `sequence` must match (a malformed one included,
        to be refused); later ones sign history after it, which it cannot hold."""
        return [
            cp for cp in self.checkpoints if not (isinstance(cp.get("sequence"), int) and cp["sequence"] > sequence)
        ]


def table_file(table: str) -> str:
    return f"tables/{table}.ndjson"


class _HashedWriter:
    """A file written line by line, its sha256, size and line count kept as it goes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("wb")
        self._sha = hashlib.sha256()
        self.size = 0
        self.lines = 0

    def line(self, data: bytes) -> None:
        data += b"\n"
        self._file.write(data)
        self._sha.update(data)
        self.size += len(data)
        self.lines += 1

    def close(self) -> dict[str, Any]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"sha256": self._sha.hexdigest(), "bytes": self.size, "lines": self.lines}


def _export_snapshot(snapshot: Path, work: Path, head: Head) -> dict[str, dict[str, Any]]:
    """Write the journal (up to `head`) and every derived table of a SQLite copy as NDJSON files."""
    files: dict[str, dict[str, Any]] = {}
    db = sqlite3.connect(snapshot)
    try:
        journal = _HashedWriter(work / JOURNAL)
        try:
            for _, text in db.execute(
                "SELECT sequence, entry FROM journal WHERE sequence <= ? ORDER BY sequence", (head.sequence,)
            ):
                journal.line(entry_text(text).encode())  # deflated at rest: the canonical text
        finally:
            files[JOURNAL] = journal.close()
        for table, columns in TABLES.items():
            out = _HashedWriter(work / table_file(table))
            try:
                sql = f"SELECT {', '.join(columns)}, {doc_sql(table)} FROM {table} ORDER BY {', '.join(columns)}"
                for row in db.execute(sql):
                    out.line(b'{"key":' + orjson.dumps(list(row[:-1])) + b',"doc":' + str(row[-1]).encode() + b"}")
            finally:
                files[table_file(table)] = out.close()
    finally:
        db.close()
    return files


def _remove_snapshot(work: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        (work / (SNAPSHOT + suffix)).unlink(missing_ok=True)


def _new_name(directory: Path, name: str) -> tuple[Path, Path]:
    """(final, unfinished) paths of a new backup; a suffix keeps two backups of one instant apart."""
    for attempt in range(1000):
        unique = name if attempt == 0 else f"{name}-{attempt:03d}"
        if not (directory / unique).exists():
            return directory / unique, directory / (unique + PARTIAL)
    raise OSError(f"no free backup name for {name} in {directory}")


async def _fold_held_rows(snapshot: Path) -> None:
    """A SQLite copy of a serving ledger may stop its derived rows at a watermark below its head
    (rows the ledger still held in memory, store/held_rows.py): fold its journal's tail into them,
    so the tables exported are those of its head."""
    if not await asyncio.to_thread(derived_behind, snapshot):
        return
    copy = SqliteStore(snapshot, allow_migration=False)
    await copy.open()
    try:
        await Overlay(copy).catch_up()
    finally:
        await copy.close()


async def write_backup(store: Store, directory: Path, *, backend: str, clock: Callable[[], datetime]) -> dict[str, Any]:
    """Write a verified backup of `store` into a new directory under `directory`; its manifest."""
    now = clock()
    mkdir_durable(directory)
    final, work = _new_name(directory, PREFIX + now.strftime("%Y%m%dT%H%M%S%fZ"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        head = await store.backup(work / SNAPSHOT)
        await _fold_held_rows(work / SNAPSHOT)
        files = await asyncio.to_thread(_export_snapshot, work / SNAPSHOT, work, head)
        _remove_snapshot(work)
        plan = getattr(store, "schema_plan", None)  # what the source store was opened at (memory: none)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema_version": plan.target if plan is not None else latest(MIGRATIONS),
            "journal_entry_format": ENTRY_FORMAT,
            "epoch": head.epoch,
            "head_sequence": head.sequence,
            "head_hash": head.hash,
            "created_at": now.isoformat(),
            "source_backend": backend,
            "files": files,
        }
        manifest_path = work / MANIFEST
        manifest_path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        with manifest_path.open("rb") as f:
            os.fsync(f.fileno())
        fsync_path(work / "tables")
        fsync_path(work)
        await asyncio.to_thread(verify_backup, work)  # what restore will check, before it is final
        os.replace(work, final)
        fsync_path(directory)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {**manifest, "path": str(final)}


def read_manifest(backup: Path) -> dict[str, Any]:
    try:
        manifest = orjson.loads((backup / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BackupInvalid(f"{backup} has no {MANIFEST}: not a (complete) backup", file=MANIFEST) from None
    except orjson.JSONDecodeError:
        raise BackupInvalid(f"{backup / MANIFEST} is not JSON", file=MANIFEST) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupInvalid(f"{backup} is not a {FORMAT}", file=MANIFEST)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupInvalid(
            f"backup format version {manifest.get('format_version')!r} is not "
            f"{FORMAT_VERSION}, the one this ledger reads",
            file=MANIFEST,
        )
    try:
        head = Head(int(manifest["head_sequence"]), str(manifest["head_hash"]), int(manifest["epoch"]))
        files = manifest["files"]
        # A backup written before a later table existed lacks its file (the restore rebuilds it).
        expected = {JOURNAL, *map(table_file, TABLES)}
        assert isinstance(files, dict) and expected - set(map(table_file, LATER_TABLES)) <= set(files) <= expected
        assert all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values())
    except (KeyError, ValueError, TypeError, AssertionError):
        raise BackupInvalid(f"{backup / MANIFEST} lacks a head or a file list", file=MANIFEST) from None
    manifest["head"] = head
    return manifest


def _journal_rows(backup: Path) -> Iterator[tuple[int, str]]:
    """(sequence, stored text) of each journal line; the sequence is read from the line (a line
    that does not parse gets the next expected sequence, so the chain check names it)."""
    expected = 1
    with (backup / JOURNAL).open("rb") as f:
        for raw in f:
            text = raw.rstrip(b"\n").decode("utf-8", errors="replace")
            try:
                sequence = orjson.loads(text)["sequence"]
                if not isinstance(sequence, int):
                    sequence = expected
            except (orjson.JSONDecodeError, KeyError, TypeError):
                sequence = expected
            yield sequence, text
            expected = sequence + 1


def _check_chain(backup: Path, head: Head, hash_at: dict[int, str] | None = None) -> dict[str, Any]:
    """The chain check of the journal up to the manifest's `head`; fills `hash_at` (sequences
    asked for: the hash the journal holds at each)."""
    check = ChainCheck()
    for row in _journal_rows(backup):
        if not check.feed([row]):
            break
        if hash_at is not None and row[0] in hash_at:
            hash_at[row[0]] = orjson.loads(row[1])["hash"]  # the chain check read it as an entry
    if not check.ok:
        raise BackupInvalid(
            f"the journal of {backup} breaks at sequence {check.first_bad_sequence}",
            first_bad_sequence=check.first_bad_sequence,
            file=JOURNAL,
        )
    if (check.head_sequence, check.head_hash) != (head.sequence, head.hash):
        bad = min(check.head_sequence, head.sequence) + 1
        raise BackupInvalid(
            f"the journal of {backup} ends at {check.head_sequence} ({check.head_hash}), not at "
            f"the manifest's head {head.sequence} ({head.hash})",
            first_bad_sequence=bad,
            file=JOURNAL,
        )
    if not (check.head_epoch or 0) <= head.epoch <= EPOCH_MAX:  # a promotion raises it, nothing lowers it
        raise BackupInvalid(
            f"the manifest's epoch {head.epoch} is below its journal's last ({check.head_epoch}) or out of range",
            file=MANIFEST,
        )
    return check.report()


def _sha256(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def verify_backup(backup: Path, anchors: Anchors | None = None) -> dict[str, Any]:
    """Check a backup completely: manifest, the journal's chain up to the manifest's head (naming
    the first bad sequence), then every file's sha256 and size; with `anchors`, that every signed
    checkpoint up to the head is the ledger's and names the hash the journal holds at its
    sequence. Raises `BackupInvalid`."""
    manifest = read_manifest(backup)
    if not (backup / JOURNAL).is_file():
        raise BackupInvalid(f"{backup} has no {JOURNAL}", file=JOURNAL)
    head: Head = manifest["head"]
    applicable = anchors.at_or_below(head.sequence) if anchors is not None else []
    # "" (matches no checkpoint) until the journal names a hash at the sequence.
    hash_at = {cp["sequence"]: "" for cp in applicable if isinstance(cp.get("sequence"), int)}
    chain = _check_chain(backup, head, hash_at)
    for name, expected in sorted(manifest["files"].items()):
        path = backup / name  # one of the expected names (read_manifest): never outside the backup
        if not path.is_file():
            raise BackupInvalid(f"{backup} lacks {name}", file=name)
        digest, size = _sha256(path)
        if digest != expected["sha256"] or size != expected.get("bytes", size):
            raise BackupInvalid(f"{name} of {backup} does not match its checksum in the manifest", file=name)
    report = {
        "ok": True,
        "path": str(backup),
        "head_sequence": chain["head_sequence"],
        "head_hash": chain["head_hash"],
        "entries_checked": chain["entries_checked"],
        "epoch": manifest["epoch"],
        "files_checked": len(manifest["files"]),
    }
    if anchors is not None:
        report.update(_anchored(backup, anchors, applicable, {**hash_at, 0: GENESIS_HASH}))
    return report


def _anchored(
    backup: Path, anchors: Anchors, applicable: list[dict[str, Any]], hash_at: dict[int, str]
) -> dict[str, Any]:
    """The backup's journal judged by the signed checkpoints up to its head; `BackupInvalid` unless
    at least one applies and every one that does is signed and matches."""
    judged = checkpoints.check(applicable, anchors.public_key, hash_at)
    report = judged.report()
    if not applicable:
        raise BackupInvalid(
            f"no signed checkpoint is at or below the head of {backup}: nothing anchors its journal", file=JOURNAL
        )
    if not judged.ok:
        raise BackupInvalid(
            f"the journal of {backup} does not match the signed checkpoints "
            f"(bad signature: {report['bad_signature']}, other hash: {report['hash_mismatch']})",
            first_bad_sequence=report["first_bad_checkpoint_sequence"],
            file=JOURNAL,
        )
    return {"checkpoints": report, "anchored_sequence": max(cp["sequence"] for cp in applicable)}


def _backup_tables(backup: Path) -> dict[str, dict[Any, Any]]:
    out: dict[str, dict[Any, Any]] = {}
    for table in TABLES:
        if table in LATER_TABLES and not (backup / table_file(table)).exists():
            continue  # a backup from before the table existed: nothing to compare
        rows = out.setdefault(table, {})
        with (backup / table_file(table)).open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    row = orjson.loads(raw)
                    rows[tuple(row["key"])] = row["doc"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    raise BackupInvalid(
                        f"line {number} of {table_file(table)} in {backup} is not a row", file=table_file(table)
                    ) from None
    return out


async def restore_backup(
    backup: Path, target: Store, *, until_sequence: int | None = None, anchors: Anchors | None = None
) -> dict[str, Any]:
    """Verify `backup` (with `anchors`: against signed checkpoints too), then replay its journal
    (up to `until_sequence`) into the empty, open `target` with `fold`. Raises `BackupInvalid` or
    `RestoreTargetNotEmpty`; nothing is written to the target unless the whole backup verifies."""
    verified = await asyncio.to_thread(verify_backup, backup, anchors)
    manifest = read_manifest(backup)
    full: Head = manifest["head"]
    if until_sequence is not None and not 0 <= until_sequence <= full.sequence:
        raise BackupInvalid(
            f"--until-sequence {until_sequence} is not within the backup's journal (0..{full.sequence})"
        )
    last = full.sequence if until_sequence is None else until_sequence
    if (await target.head()).sequence != 0 or await target.journal(0, 1):
        unfinished = await target.fenced_by() == UNFINISHED_RESTORE_FENCE
        raise RestoreTargetNotEmpty(
            "the restore target already holds a journal"
            + (" (a restore into it stopped midway: drop it)" if unfinished else "")
            + ": restore into an empty store"
        )
    # Read before anything is written: a table file that does not parse refuses the backup, not
    # a restore that already wrote the journal (only compared with the replay, never used).
    theirs = await asyncio.to_thread(_backup_tables, backup) if until_sequence is None else {}
    await target.fence(UNFINISHED_RESTORE_FENCE)  # lifted once all of it is written
    state, head, page = State(complete=True), Head(0, GENESIS_HASH, 1), []
    check = ChainCheck()
    for sequence, text in _journal_rows(backup):
        if sequence > last:
            break
        if not check.feed([(sequence, text)]):  # verified above; checked again as it is replayed
            raise BackupInvalid(
                f"the journal of {backup} changed while it was restored, at sequence {check.first_bad_sequence}",
                first_bad_sequence=check.first_bad_sequence,
            )
        entry = orjson.loads(text)
        fold(state, entry)
        page.append(JournalRow(sequence, entry["transaction"]["id"], text))
        head = Head(sequence, entry["hash"], entry["epoch"])
        if len(page) >= REPLAY_PAGE:
            await target.commit(page, state.take_dirty(), head)
            page = []
    if page:
        await target.commit(page, state.take_dirty(), head)
    if head.sequence != last:
        raise BackupInvalid(
            f"the journal of {backup} ends at {head.sequence}, before {last}",
            first_bad_sequence=head.sequence + 1,
            file=JOURNAL,
        )
    if until_sequence is None:
        head = full  # the epoch too: a promotion raises it without a journal entry
        await target.commit([], {}, head)
    await target.unfence(UNFINISHED_RESTORE_FENCE)
    report: dict[str, Any] = {
        "restored": True,
        "backup": str(backup),
        "head_sequence": head.sequence,
        "head_hash": head.hash,
        "epoch": head.epoch,
        "backup_head_sequence": full.sequence,
        "entries_replayed": check.entries_checked,
        "verified": verified["ok"],
    }
    if anchors is not None:
        report["anchored_sequence"] = verified["anchored_sequence"]
    if until_sequence is None:
        report["derived_tables_differ"] = [t for t in TABLES if t in theirs and theirs[t] != state.rows(t)]
    return report


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


async def restore_into_sqlite(
    backup: Path, data_dir: Path, *, until_sequence: int | None = None, anchors: Anchors | None = None
) -> dict[str, Any]:
    """Restore into `data_dir/ledger.db`, which must not exist: built under a temporary name and
    renamed into place only once complete."""
    final = data_dir / "ledger.db"
    if final.exists():
        raise RestoreTargetNotEmpty(f"{final} exists: restore into a new data directory")
    mkdir_durable(data_dir)
    work = data_dir / ("ledger.db" + PARTIAL)
    _remove_db(work)
    store = SqliteStore(work)
    await store.open()
    try:
        report = await restore_backup(backup, store, until_sequence=until_sequence, anchors=anchors)
    except BaseException:
        await store.close()
        _remove_db(work)
        raise
    await store.close()  # the last connection checkpoints the WAL into the file
    os.replace(work, final)
    fsync_path(data_dir)
    return {**report, "path": str(final)}


def completed_backups(directory: Path) -> list[Path]:
    """Finished backups under `directory`, oldest first (names sort by time)."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(PARTIAL) and (p / MANIFEST).is_file()
    )


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest finished backups (unfinished `.partial` ones are left:
    one may be being written; a crash's leftovers are the operator's to delete)."""
    removed = completed_backups(directory)[:-keep] if keep > 0 else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def last_backup_time(directory: Path) -> float | None:
    """When the newest finished backup under `directory` was taken (POSIX seconds), if any."""
    for path in reversed(completed_backups(directory)):
        try:
            return datetime.fromisoformat(read_manifest(path)["created_at"]).timestamp()
        except (BackupInvalid, KeyError, ValueError, TypeError):
            continue
    return None
