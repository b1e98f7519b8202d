"""Anchored audit: signed checkpoints of the journal head, their routes, and `croupier ledger
verify --checkpoints` catching a journal rewritten and re-hashed by someone with database access."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from shared.config import ConfigError
from shared.errors import Unavailable

from core_ledger import checkpoints as cps
from core_ledger import config as ledger_config_module
from core_ledger.app import create_app
from core_ledger.audit_http import encode_cursor
from core_ledger.checkpoint_jobs import Checkpoints
from core_ledger.domain.journal import chain_hash
from core_ledger.metrics import LedgerMetrics
from core_ledger.store import MemoryStore
from core_ledger.store.sqlite_entries import entry_text
from tests.support.clock import FakeClock
from tests.support.ledger import Api, ledger_config

REPO = Path(__file__).resolve().parents[2]


def croupier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "checkpoint.key"
    path.parent.mkdir()
    cps.write_new_key(path)
    return path


@pytest.fixture
async def signing_api(aiohttp_client: Any, tmp_path: Path, key_file: Path) -> Api:
    config = ledger_config(
        tmp_path / "data", checkpoint_key_file=key_file, checkpoint_interval_s=3600, page_limit_max=50
    )
    return Api(await aiohttp_client(create_app(config, clock=FakeClock())))


class TestSigning:
    def test_a_checkpoint_verifies_with_its_key_only_and_only_as_signed(self, tmp_path: Path) -> None:
        private, other = cps.Ed25519PrivateKey.generate(), cps.Ed25519PrivateKey.generate()
        cp = cps.sign(private, sequence=7, hash_="ab" * 32, epoch=2, time="2026-11-23T10:00:00+00:00")
        assert cps.signature_ok(private.public_key(), cp)
        assert cp["key_id"] == cps.key_id(private.public_key()) and len(cp["key_id"]) == 16
        assert not cps.signature_ok(other.public_key(), cp)
        for field, value in (("sequence", 8), ("hash", "cd" * 32), ("epoch", 3), ("time", "x"), ("signature", "!")):
            assert not cps.signature_ok(private.public_key(), {**cp, field: value}), field
        judged = cps.check([cp], private.public_key(), {7: "ab" * 32})
        assert judged.ok and judged.report()["first_bad_checkpoint_sequence"] is None
        assert cps.check([cp], private.public_key(), {7: "ee" * 32}).hash_mismatch == [7]
        assert cps.check([cp], private.public_key(), {}).missing == [7]

    def test_keygen_never_overwrites_and_writes_a_private_file(self, tmp_path: Path) -> None:
        done = croupier("ledger", "keygen", "--out", str(tmp_path / "k"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        report = orjson.loads(done.stdout)
        assert (tmp_path / "k").stat().st_mode & 0o077 == 0
        assert cps.key_id(cps.load_public_key(Path(report["public_key"]))) == report["key_id"]
        again = croupier("ledger", "keygen", "--out", str(tmp_path / "k"), cwd=tmp_path)
        assert again.returncode != 0 and "never overwritten" in again.stderr

    def test_a_key_file_others_may_read_is_refused_by_the_config(self, tmp_path: Path, key_file: Path) -> None:
        path = tmp_path / "ledger.toml"
        path.write_text(f'[ledger]\ndata_dir = "d"\ncheckpoint_key_file = "{key_file}"\n')
        assert ledger_config_module.load(path).checkpoint_key_file == key_file
        key_file.chmod(0o640)
        with pytest.raises(ConfigError, match=r"checkpoint_key_file.*readable or writable by others"):
            ledger_config_module.load(path)
        key_file.chmod(0o600)
        key_file.write_text("not a key")
        with pytest.raises(ConfigError, match=r"checkpoint_key_file.*not an unencrypted PEM"):
            ledger_config_module.load(path)


class TestRoutes:
    async def test_checkpoints_are_signed_listed_paged_and_exported(self, signing_api: Api, key_file: Path) -> None:
        api = signing_api
        await api.player("p1", deposit=100)
        status, first = await api.post("admin_write", "/admin/v1/audit/checkpoints")
        assert status == 201 and first["checkpoint"]["sequence"] == 2, first
        status, again = await api.post("admin_write", "/admin/v1/audit/checkpoints")  # nothing new: not signed again
        assert status == 201 and again["checkpoint"] == first["checkpoint"]
        await api.player("p2", deposit=5)
        status, second = await api.post("admin_write", "/admin/v1/audit/checkpoints")
        assert second["checkpoint"]["sequence"] == 4
        public = cps.load_public_key(key_file.with_name(key_file.name + ".pub"))
        status, page = await api.get("admin_read", "/admin/v1/audit/checkpoints?limit=1")
        assert status == 200 and page["has_more"] and page["key_id"] == cps.key_id(public)
        assert [c["sequence"] for c in page["checkpoints"]] == [2]
        assert cps.signature_ok(cps.load_public_key_pem(page["public_key"]), page["checkpoints"][0])
        async with api.client.get(
            "/admin/v1/audit/checkpoints?limit=1", headers={"Authorization": "Bearer token-of-admin_read-0123456789"}
        ) as resp:
            assert 'rel="next"' in resp.headers["Link"] and page["next_cursor"] in resp.headers["Link"]
        status, rest = await api.get("admin_read", f"/admin/v1/audit/checkpoints?limit=1&cursor={page['next_cursor']}")
        assert [c["sequence"] for c in rest["checkpoints"]] == [4] and not rest["has_more"]
        assert rest["next_cursor"] is None
        status, text = await api.get("admin_read", "/admin/v1/audit/checkpoints/export")
        exported = [orjson.loads(line) for line in text.splitlines()]
        assert [c["sequence"] for c in exported] == [2, 4]
        assert cps.check(exported, public, {2: exported[0]["hash"], 4: exported[1]["hash"]}).ok
        _, metrics = await api.get("admin_read", "/metrics")
        assert 'ledger_checkpoints_total{outcome="signed"} 2.0' in metrics
        assert "ledger_checkpoint_last_sequence 4.0" in metrics
        assert "ledger_checkpoint_interval_seconds 3600.0" in metrics

    async def test_bad_cursors_roles_and_a_ledger_without_a_key_are_refused(self, signing_api: Api, api: Api) -> None:
        too_big = encode_cursor(2**63)  # beyond any sequence (a store would overflow on it)
        for bad in ("zz", "Y3A6eA", "bm9wZTox", too_big):  # not base64 of ours; "cp:x"; "nope:1"
            status, body = await signing_api.get("admin_read", f"/admin/v1/audit/checkpoints?cursor={bad}")
            assert status == 400 and body["code"] == "validation_error" and body["field"] == "cursor", bad
        for role in ("edge", "cashier", "replica"):
            status, _ = await signing_api.get(role, "/admin/v1/audit/checkpoints")
            assert status == 403
        status, _ = await signing_api.post("admin_read", "/admin/v1/audit/checkpoints")
        assert status == 403
        status, body = await api.post("admin_write", "/admin/v1/audit/checkpoints")  # the plain fixture: no key
        assert status == 409 and body["code"] == "checkpoints_not_configured"
        _, metrics = await api.get("admin_read", "/metrics")
        assert "ledger_checkpoint_interval_seconds 0.0" in metrics


def rewrite_and_rehash(db: Path, sequence: int, new_amount: int) -> None:
    """What an attacker with write access to the database does: change one entry's amounts (still
    balanced) and recompute every hash from there on, so the chain verifies again."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER journal_no_update")
        rows = conn.execute(
            "SELECT sequence, entry FROM journal WHERE sequence >= ? ORDER BY sequence", (sequence - 1,)
        ).fetchall()
        rows = [(seq, entry_text(stored)) for seq, stored in rows]  # deflated at rest
        prev_hash = orjson.loads(rows[0][1])["hash"] if rows[0][0] == sequence - 1 else "0" * 64
        for seq, text in rows:
            if seq < sequence:
                continue
            entry = orjson.loads(text)
            if seq == sequence:
                for posting in entry["postings"]:
                    posting["amount_minor"] = new_amount if posting["amount_minor"] > 0 else -new_amount
            entry.pop("hash")
            entry["prev_hash"] = prev_hash
            entry["hash"] = prev_hash = chain_hash(prev_hash, entry)
            conn.execute(
                "UPDATE journal SET entry = ? WHERE sequence = ?",
                (orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode(), seq),
            )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev_hash,))
        conn.commit()
    finally:
        conn.close()


async def test_verify_with_checkpoints_catches_a_rewritten_and_rehashed_journal(
    aiohttp_client: Any, tmp_path: Path, key_file: Path
) -> None:
    config = ledger_config(tmp_path / "data", checkpoint_key_file=key_file, checkpoint_interval_s=3600)
    client = await aiohttp_client(create_app(config, clock=FakeClock()))
    api = Api(client)
    await api.player("p1", deposit=100)
    await api.player("p2", deposit=50)
    assert (await api.post("admin_write", "/admin/v1/audit/checkpoints"))[0] == 201
    _, exported = await api.get("admin_read", "/admin/v1/audit/checkpoints/export")
    await client.close()  # the ledger stops: the offline check reads the file
    anchors = tmp_path / "checkpoints.ndjson"  # kept off the ledger host in production
    anchors.write_text(exported)
    db, pub = tmp_path / "data" / "ledger.db", key_file.with_name(key_file.name + ".pub")

    honest = croupier(
        "ledger", "verify", str(db), "--checkpoints", str(anchors), "--public-key", str(pub), cwd=tmp_path
    )
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert orjson.loads(honest.stdout)["checkpoints"]["checkpoints_checked"] == 1

    rewrite_and_rehash(db, 2, 1_000_000)  # p1's deposit of 100 becomes a million
    plain = croupier("ledger", "verify", str(db), cwd=tmp_path)
    assert plain.returncode == 0 and orjson.loads(plain.stdout)["ok"], plain.stdout  # the chain alone is fooled
    caught = croupier(
        "ledger", "verify", str(db), "--checkpoints", str(anchors), "--public-key", str(pub), cwd=tmp_path
    )
    report = orjson.loads(caught.stdout)
    assert caught.returncode == 1 and not report["ok"] and report["chain_ok"]
    assert report["checkpoints"]["hash_mismatch"] == [4] and report["checkpoints"]["first_bad_checkpoint_sequence"] == 4

    forged = [{**orjson.loads(line), "hash": report["head_hash"]} for line in exported.splitlines()]
    anchors.write_text("".join(orjson.dumps(cp).decode() + "\n" for cp in forged))  # the attacker edits the file too
    refused = croupier(
        "ledger", "verify", str(db), "--checkpoints", str(anchors), "--public-key", str(pub), cwd=tmp_path
    )
    assert refused.returncode == 1 and orjson.loads(refused.stdout)["checkpoints"]["bad_signature"] == [4]
    missing_key = croupier("ledger", "verify", str(db), "--checkpoints", str(anchors), cwd=tmp_path)
    assert missing_key.returncode == 2 and "--public-key" in missing_key.stderr


def forge_backup(backup: Path, sequence: int, new_amount: int) -> None:
    """What an attacker with write access to the backups does: rewrite one entry of the journal
    file, re-hash every entry after it, and put the new head and checksum in the manifest."""
    journal, manifest_path = backup / "journal.ndjson", backup / "manifest.json"
    entries = [orjson.loads(line) for line in journal.read_bytes().splitlines()]
    prev_hash = entries[sequence - 2]["hash"] if sequence > 1 else "0" * 64
    for entry in entries[sequence - 1 :]:
        if entry["sequence"] == sequence:
            for posting in entry["postings"]:
                posting["amount_minor"] = new_amount if posting["amount_minor"] > 0 else -new_amount
        entry.pop("hash")
        entry["prev_hash"] = prev_hash
        entry["hash"] = prev_hash = chain_hash(prev_hash, entry)
    data = b"".join(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) + b"\n" for e in entries)
    journal.write_bytes(data)
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["head_hash"] = prev_hash
    manifest["files"]["journal.ndjson"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest_path.write_bytes(orjson.dumps(manifest))


async def test_a_backup_is_judged_by_the_signed_checkpoints_and_a_rehashed_forgery_is_not_restored(
    aiohttp_client: Any, tmp_path: Path, key_file: Path
) -> None:
    """A backup's chain and checksums have no key: a forger who re-hashes the journal and fixes the
    manifest passes `verify-backup`, and `restore` restored the forgery. With the signed
    checkpoints kept off the ledger host, both refuse it."""
    config = ledger_config(
        tmp_path / "data", checkpoint_key_file=key_file, checkpoint_interval_s=3600, backup_dir=tmp_path / "backups"
    )
    client = await aiohttp_client(create_app(config, clock=FakeClock()))
    api = Api(client)
    await api.player("p1", deposit=100)
    await api.player("p2", deposit=50)
    assert (await api.post("admin_write", "/admin/v1/audit/checkpoints"))[0] == 201  # signs sequence 4
    await api.player("p3", deposit=7)  # sequences 5 and 6: in the backup, after the last checkpoint
    _, exported = await api.get("admin_read", "/admin/v1/audit/checkpoints/export")
    status, taken = await api.post("admin_write", "/admin/v1/backups")
    assert status == 201, taken
    await client.close()
    anchors = tmp_path / "checkpoints.ndjson"  # kept off the ledger host in production
    anchors.write_text(exported)
    signed = ("--checkpoints", str(anchors), "--public-key", str(key_file.with_name(key_file.name + ".pub")))
    backup = Path(taken["path"])

    honest = croupier("ledger", "verify-backup", str(backup), *signed, cwd=tmp_path)
    assert honest.returncode == 0, honest.stdout + honest.stderr
    report = orjson.loads(honest.stdout)
    assert (report["head_sequence"], report["anchored_sequence"]) == (6, 4)
    assert report["checkpoints"]["checkpoints_checked"] == 1
    restored = croupier("ledger", "restore", str(backup), "--to", str(tmp_path / "honest"), *signed, cwd=tmp_path)
    assert restored.returncode == 0 and orjson.loads(restored.stdout)["anchored_sequence"] == 4, restored.stdout

    forge_backup(backup, 2, 1_000_000)  # p1's deposit of 100 becomes a million
    plain = croupier("ledger", "verify-backup", str(backup), cwd=tmp_path)
    assert plain.returncode == 0 and orjson.loads(plain.stdout)["ok"], plain.stdout  # the chain alone is fooled
    caught = croupier("ledger", "verify-backup", str(backup), *signed, cwd=tmp_path)
    assert caught.returncode == 1 and orjson.loads(caught.stdout)["first_bad_sequence"] == 4, caught.stdout
    refused = croupier("ledger", "restore", str(backup), "--to", str(tmp_path / "forged"), *signed, cwd=tmp_path)
    assert refused.returncode == 1 and orjson.loads(refused.stdout)["restored"] is False
    assert not (tmp_path / "forged" / "ledger.db").exists()

    anchors.write_text("")  # no checkpoint at or below the head: nothing anchors the backup
    unanchored = croupier("ledger", "verify-backup", str(backup), *signed, cwd=tmp_path)
    assert unanchored.returncode == 1 and "nothing anchors" in orjson.loads(unanchored.stdout)["error"]


class TestJob:
    async def test_the_schedule_signs_new_heads_and_marks_an_idle_head_covered(
        self, aiohttp_client: Any, tmp_path: Path, key_file: Path
    ) -> None:
        config = ledger_config(tmp_path / "data", checkpoint_key_file=key_file, checkpoint_interval_s=1)
        api = Api(await aiohttp_client(create_app(config, clock=FakeClock())))
        await api.player("p1", deposit=1)
        for _ in range(60):  # bounded: 6 s at most
            _, page = await api.get("admin_read", "/admin/v1/audit/checkpoints")
            if page["checkpoints"]:
                break
            await asyncio.sleep(0.1)
        assert [c["sequence"] for c in page["checkpoints"]] == [2]
        _, metrics = await api.get("admin_read", "/metrics")
        stamp = next(
            line
            for line in metrics.splitlines()
            if line.startswith("ledger_checkpoint_last_success_timestamp_seconds ")
        )
        assert abs(float(stamp.split()[1]) - time.time()) < 10
        assert 'ledger_task_failing{task="checkpoint"} 0.0' in metrics

    async def test_a_standby_or_fenced_primary_signs_nothing_and_reports_no_timestamp(self) -> None:
        for role, fenced in (("standby", False), ("primary", True)):
            registry = CollectorRegistry()
            service = SimpleNamespace(role=role, fenced=fenced, store=MemoryStore(), acknowledged_sequence=3, epoch=1)
            job = Checkpoints(
                service,
                cps.Ed25519PrivateKey.generate(),
                60,  # type: ignore[arg-type]  # a stub service
                LedgerMetrics(registry),
                registry,
                FakeClock(),
            )
            job.metrics.last_success_timestamp_seconds.set(1.0)
            with pytest.raises(Unavailable) as refused:
                await job.checkpoint(trigger="test")
            assert refused.value.code == "not_primary"
            assert math.isnan(registry.get_sample_value("ledger_checkpoint_last_success_timestamp_seconds") or 0.0)
            assert await service.store.latest_checkpoint() is None
