"""Backups in the portable format and restores from them: consistent under load, verified, equal to
the source at their sequence, point-in-time, tampering refused with the sequence named, scheduled
and pruned, counted in metrics, SQLite and PostgreSQL on both sides."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from shared.config import ConfigError

from core_ledger import backup_format
from core_ledger import cli as ledger_cli
from core_ledger import config as ledger_config_module
from core_ledger.app import create_app
from core_ledger.app_keys import BACKUPS, SERVICE
from core_ledger.backup_format import (
    JOURNAL,
    BackupInvalid,
    RestoreTargetNotEmpty,
    completed_backups,
    restore_backup,
    restore_into_sqlite,
    table_file,
    verify_backup,
    write_backup,
)
from core_ledger.domain import State, evolve
from core_ledger.domain.state import TABLES
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import SqliteStore, StorageError, Store
from core_ledger.store.postgres import PostgresStore
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet, ledger_config
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

PLAYERS = ("p1", "p2", "p3")
BETS_PER_PLAYER = 15
SCHEDULE_WAIT_S = 10.0
CLI_TIMEOUT_S = 60.0


async def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    """`croupier ledger ...` in its own process (it runs its own event loop); exit code and last JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "croupier",
        "ledger",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    return proc.returncode or 0, (json.loads(lines[-1]) if lines else {"stderr": err.decode()})


async def _journal(store: Store, up_to: int | None = None) -> list[str]:
    rows = await store.journal(0, 1_000_000)
    return [text for seq, text in rows if up_to is None or seq <= up_to]


async def _tables(store: Store) -> dict[str, Any]:
    return {t: await store.dump(t) for t in TABLES}


def _gauge(metrics: str, name: str) -> float:
    return float(metrics.split(f"\n{name} ")[1].split()[0])


def _fold(journal: list[str]) -> dict[str, Any]:
    state = State(complete=True)
    for text in journal:
        evolve(state, orjson.loads(text))
    return {t: state.rows(t) for t in TABLES}


async def _opened(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


async def _load(api: Api) -> None:
    """Bets of several players at once, with an idempotent replay among them."""

    async def player(pid: str) -> None:
        for i in range(BETS_PER_PLAYER):
            status, body = await api.post("edge", "/v1/bets", bet(f"{pid}-b{i}", 10, player=pid, round_id=f"r{i % 3}"))
            assert status == 201, body
        assert (await api.post("edge", "/v1/bets", bet(f"{pid}-b0", 10, player=pid, round_id="r0")))[0] == 200

    await asyncio.gather(*(player(p) for p in PLAYERS))


@pytest.fixture
async def loaded(api: Api) -> Api:
    for pid in PLAYERS:
        await api.player(pid, deposit=10_000)
    return api


async def test_backup_under_load_restores_to_the_source_at_its_sequence(
    loaded: Api, tmp_path: Path, clock: FakeClock
) -> None:
    load = asyncio.create_task(_load(loaded))
    await asyncio.sleep(0.02)
    status, during = await loaded.post("admin_write", "/admin/v1/backups")
    await load
    assert status == 201, during
    source = loaded.client.app[SERVICE].store
    n = during["head_sequence"]
    assert n >= 3 and during["path"].startswith(str(tmp_path / "backups"))
    verify_backup(Path(during["path"]))

    # Taken while bets committed: exactly the source's journal up to its head, and the tables of that head.
    restored = await restore_into_sqlite(Path(during["path"]), tmp_path / "r1")
    assert restored["head_sequence"] == n and restored["derived_tables_differ"] == []
    copy = await _opened(Path(restored["path"]))
    try:
        assert await _journal(copy) == await _journal(source, n)
        assert await _tables(copy) == _fold(await _journal(source, n))
    finally:
        await copy.close()

    # At rest: the restored copy equals the source table for table (balances, rounds, idempotency
    # records, history) and its chain and head are the source's.
    status, after = await loaded.post("admin_write", "/admin/v1/backups")
    assert status == 201 and after["head_sequence"] == (await source.head()).sequence > n
    restored = await restore_into_sqlite(Path(after["path"]), tmp_path / "r2")
    copy = await _opened(Path(restored["path"]))
    try:
        assert await _tables(copy) == await _tables(source)
        assert await _journal(copy) == await _journal(source)
        assert await copy.head() == await source.head()
        account = ("player:p1:EUR",)
        assert (await copy.get("accounts", account))[0] == (await source.get("accounts", account))[0]
    finally:
        await copy.close()
    status, metrics = await loaded.get("admin_read", "/metrics")
    assert 'ledger_backups_total{outcome="ok"} 2.0' in metrics
    assert _gauge(metrics, "ledger_backup_last_success_timestamp_seconds") == clock().timestamp()


async def test_point_in_time_restore_gives_head_n(loaded: Api, tmp_path: Path) -> None:
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    source = loaded.client.app[SERVICE].store
    n = taken["head_sequence"] // 2
    report = await restore_into_sqlite(Path(taken["path"]), tmp_path / "pitr", until_sequence=n)
    assert report["head_sequence"] == n and "derived_tables_differ" not in report
    copy = await _opened(Path(report["path"]))
    try:
        assert (await copy.head()).sequence == n
        assert await _journal(copy) == await _journal(source, n)
        assert await _tables(copy) == _fold(await _journal(source, n))
    finally:
        await copy.close()
    with pytest.raises(BackupInvalid, match="not within"):
        await restore_into_sqlite(Path(taken["path"]), tmp_path / "beyond", until_sequence=taken["head_sequence"] + 1)


def _flip(path: Path, line_no: int, old: bytes, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    assert old in lines[line_no]
    lines[line_no] = lines[line_no].replace(old, new, 1)
    path.write_bytes(b"\n".join(lines))


async def test_a_flipped_byte_is_refused_naming_its_sequence(loaded: Api, tmp_path: Path) -> None:
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    backup = Path(taken["path"])
    _flip(backup / JOURNAL, 9, b'"amount_minor":10', b'"amount_minor":90')  # sequence 10: a bet of 10
    with pytest.raises(BackupInvalid) as refused:
        await restore_into_sqlite(backup, tmp_path / "r")
    assert refused.value.first_bad_sequence == 10
    assert not (tmp_path / "r" / "ledger.db").exists()

    # Through the CLI: exit 1, the sequence in the JSON, the refusal counted in the textfile.
    textfile = tmp_path / "restore.prom"
    code, report = await _cli("restore", str(backup), "--to", str(tmp_path / "r"), "--metrics-textfile", str(textfile))
    assert code == 1
    assert report["restored"] is False and report["first_bad_sequence"] == 10
    assert 'ledger_restores_total{outcome="failed"} 1.0' in textfile.read_text()


async def test_a_tampered_table_file_or_manifest_is_refused(loaded: Api, tmp_path: Path) -> None:
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    backup = Path(taken["path"])
    accounts = backup / table_file("accounts")
    original = accounts.read_bytes()
    accounts.write_bytes(original.replace(b'"balance_minor":', b'"balance_minor":1', 1))
    with pytest.raises(BackupInvalid, match="checksum") as refused:
        verify_backup(backup)
    assert refused.value.file == table_file("accounts")
    accounts.write_bytes(original)
    manifest = orjson.loads((backup / "manifest.json").read_bytes())
    (backup / "manifest.json").write_bytes(orjson.dumps({**manifest, "head_sequence": manifest["head_sequence"] - 1}))
    with pytest.raises(BackupInvalid, match="manifest's head"):
        verify_backup(backup)
    for epoch in (0, 2**63):  # below its journal's last entry (a restored copy a lower epoch), or past the integers
        (backup / "manifest.json").write_bytes(orjson.dumps({**manifest, "epoch": epoch}))
        with pytest.raises(BackupInvalid, match="manifest's epoch"):
            verify_backup(backup)
    (backup / "manifest.json").unlink()
    with pytest.raises(BackupInvalid, match=r"manifest\.json"):
        verify_backup(backup)


async def test_a_table_file_that_does_not_parse_refuses_the_restore_before_anything_is_written(
    loaded: Api, tmp_path: Path
) -> None:
    """The tables are only compared with the replay, but they were parsed after it: a backup whose
    table file did not parse (with a checksum to match) failed after the whole journal was
    written, which leaves a PostgreSQL target half-restored."""
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    backup = Path(taken["path"])
    accounts = backup / table_file("accounts")
    data = b"not a row\n" + accounts.read_bytes()
    accounts.write_bytes(data)
    manifest = orjson.loads((backup / "manifest.json").read_bytes())
    manifest["files"][table_file("accounts")].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (backup / "manifest.json").write_bytes(orjson.dumps(manifest))
    target = await _opened(tmp_path / "target.db")
    try:
        with pytest.raises(BackupInvalid) as refused:
            await restore_backup(backup, target)
        assert refused.value.file == table_file("accounts")
        assert (await target.head()).sequence == 0 and await target.journal(0, 1) == []
    finally:
        await target.close()


async def test_restore_only_fills_an_empty_target(loaded: Api, tmp_path: Path) -> None:
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    await restore_into_sqlite(Path(taken["path"]), tmp_path / "r")
    with pytest.raises(RestoreTargetNotEmpty):
        await restore_into_sqlite(Path(taken["path"]), tmp_path / "r")
    store = await _opened(tmp_path / "r" / "ledger.db")
    try:
        with pytest.raises(RestoreTargetNotEmpty):
            await restore_backup(Path(taken["path"]), store)
    finally:
        await store.close()


async def test_backup_dir_must_be_configured_and_off_the_data_dir(aiohttp_client: Any, tmp_path: Path) -> None:
    api = Api(await aiohttp_client(create_app(ledger_config(tmp_path / "data"), clock=FakeClock())))
    status, body = await api.post("admin_write", "/admin/v1/backups")
    assert status == 409 and body["code"] == "backup_not_configured"
    inside = Api(
        await aiohttp_client(
            create_app(ledger_config(tmp_path / "d2", backup_dir=tmp_path / "d2" / "backups"), clock=FakeClock())
        )
    )
    status, body = await inside.post("admin_write", "/admin/v1/backups")
    assert status == 409 and body["code"] == "backup_not_configured"
    assert not (tmp_path / "d2" / "backups").exists()
    toml = tmp_path / "ledger.toml"
    toml.write_text('[ledger]\ndata_dir = "data"\nbackup_dir = "data/backups"\n')
    with pytest.raises(ConfigError, match="inside data_dir"):
        ledger_config_module.load(toml)
    toml.write_text('[ledger]\ndata_dir = "data"\nbackup_interval_s = 60\n')
    with pytest.raises(ConfigError, match=r"needs ledger\.backup_dir"):
        ledger_config_module.load(toml)
    toml.write_text('[ledger]\ndata_dir = "data"\nbackup_dir = "b"\nbackup_interval_s = 0.5\n')
    with pytest.raises(ConfigError, match=r"backup_interval_s must be 0 \(off\) or in \[1, "):
        ledger_config_module.load(toml)  # below a second: refused, not kept silently
    toml.write_text('[ledger]\ndata_dir = "data"\nbackup_dir = "b"\nbackup_interval_s = 60\nbackup_keep = 3\n')
    cfg = ledger_config_module.load(toml)
    assert (cfg.backup_dir, cfg.backup_interval_s, cfg.backup_keep) == (tmp_path / "b", 60.0, 3)


async def test_scheduled_backups_run_and_keep_the_newest(aiohttp_client: Any, tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = ledger_config(tmp_path / "data", backup_dir=tmp_path / "backups", backup_interval_s=1.0, backup_keep=2)
    api = Api(await aiohttp_client(create_app(cfg, clock=clock)))
    await api.player(deposit=100)
    deadline = asyncio.get_running_loop().time() + SCHEDULE_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        _, metrics = await api.get("admin_read", "/metrics")
        if 'ledger_backups_total{outcome="ok"} 3.0' in metrics:
            break
        clock.advance(60)
        await asyncio.sleep(0.2)
    else:
        pytest.fail("three scheduled backups were not taken in time")
    kept = completed_backups(tmp_path / "backups")
    assert len(kept) == 2
    assert all(verify_backup(path)["head_sequence"] == 2 for path in kept)


async def test_cli_backup_from_a_running_database_then_restore(loaded: Api, tmp_path: Path, app_config: Any) -> None:
    await _load(loaded)
    toml = tmp_path / "ledger.toml"
    toml.write_text(f'[ledger]\ndata_dir = "{app_config.data_dir}"\nbackup_dir = "cli-backups"\n')
    code, manifest = await _cli("backup", "--config", str(toml))  # into the config's backup_dir
    assert code == 0, manifest
    assert Path(manifest["path"]).parent == tmp_path / "cli-backups"
    head = await loaded.client.app[SERVICE].store.head()
    assert (manifest["head_sequence"], manifest["head_hash"]) == (head.sequence, head.hash)
    code, report = await _cli("restore", manifest["path"], "--to", str(tmp_path / "r"), "--until-sequence", "5")
    assert code == 0, report
    assert report["head_sequence"] == 5 and (tmp_path / "r" / "ledger.db").is_file()


async def test_postgres_source_and_target(aiohttp_client: Any, pg_server: PgServer, tmp_path: Path) -> None:
    source = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
    cfg = replace(ledger_config(tmp_path / "data"), backup_dir=tmp_path / "backups", backend="postgres")
    api = Api(await aiohttp_client(create_app(cfg, store=source, clock=FakeClock())))
    for pid in PLAYERS:
        await api.player(pid, deposit=10_000)
    load = asyncio.create_task(_load(api))
    await asyncio.sleep(0.02)
    status, during = await api.post("admin_write", "/admin/v1/backups")
    await load
    assert status == 201 and during["source_backend"] == "postgres"
    n = during["head_sequence"]
    target = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
    await target.open()
    try:
        report = await restore_backup(Path(during["path"]), target)
        assert report["head_sequence"] == n and report["derived_tables_differ"] == []
        assert await _journal(target) == await _journal(source, n)
        assert await _tables(target) == _fold(await _journal(source, n))
        with pytest.raises(RestoreTargetNotEmpty):
            await restore_backup(Path(during["path"]), target)
    finally:
        await target.close()
    # Full circle: a backup of the restored PostgreSQL copy restores into SQLite, equal again.
    target = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
    await target.open()
    try:
        await restore_backup(Path(during["path"]), target)
        again = await write_backup(target, tmp_path / "again", backend="postgres", clock=FakeClock())
    finally:
        await target.close()
    report = await restore_into_sqlite(Path(again["path"]), tmp_path / "sqlite")
    copy = await _opened(Path(report["path"]))
    try:
        assert await _tables(copy) == _fold(await _journal(source, n))
        assert (await copy.head()).hash == during["head_hash"]
    finally:
        await copy.close()


async def test_a_failed_backup_is_a_500_counted_and_the_schedule_keeps_retrying(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "backups"
    not_a_dir.write_text("a file where the backup directory should be")
    cfg = ledger_config(tmp_path / "data", backup_dir=not_a_dir, backup_interval_s=1.0)
    app = create_app(cfg, clock=FakeClock())
    app[BACKUPS].health.base_delay_s = app[BACKUPS].health.max_delay_s = 0.05  # retry fast in the test
    api = Api(await aiohttp_client(app))
    status, body = await api.post("admin_write", "/admin/v1/backups")
    assert status == 500 and body["code"] == "backup_failed"
    deadline = asyncio.get_running_loop().time() + SCHEDULE_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        _, metrics = await api.get("admin_read", "/metrics")
        if 'ledger_task_failing{task="backup"} 1.0' in metrics:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the scheduled backup's failures were not reported")
    assert 'ledger_backups_total{outcome="ok"} 0.0' in metrics
    assert "ledger_backup_last_success_timestamp_seconds 0.0" in metrics
    failed = float(metrics.split('ledger_backups_total{outcome="failed"} ')[1].split()[0])
    assert failed >= 6  # the route's, then five scheduled attempts at least: the task goes on
    assert (await api.get("", "/readyz"))[0] == 200  # money still flows: the alerts report it, not readiness
    assert not_a_dir.read_text().startswith("a file")


async def test_the_last_success_gauge_starts_at_the_newest_backup_found(
    loaded: Api, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    assert (await loaded.post("admin_write", "/admin/v1/backups"))[0] == 201
    restarted = create_app(ledger_config(tmp_path / "other-data", backup_dir=tmp_path / "backups"), clock=clock)
    api = Api(await aiohttp_client(restarted))
    _, metrics = await api.get("admin_read", "/metrics")
    assert _gauge(metrics, "ledger_backup_last_success_timestamp_seconds") == clock().timestamp()
    empty = Api(
        await aiohttp_client(create_app(ledger_config(tmp_path / "d3", backup_dir=tmp_path / "none-yet"), clock=clock))
    )
    _, metrics = await empty.get("admin_read", "/metrics")
    assert "ledger_backup_last_success_timestamp_seconds 0.0" in metrics
    unconfigured = Api(await aiohttp_client(create_app(ledger_config(tmp_path / "d4"), clock=clock)))
    _, metrics = await unconfigured.get("admin_read", "/metrics")
    assert "ledger_backup_last_success_timestamp_seconds NaN" in metrics


async def test_verify_backup_command_names_the_first_bad_sequence(loaded: Api) -> None:
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    cli = typer.Typer()
    ledger_cli.register(cli)
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["verify-backup", taken["path"]])
    assert result.exit_code == 0 and json.loads(result.stdout)["head_sequence"] == taken["head_sequence"]
    _flip(Path(taken["path"]) / JOURNAL, 20, b'"epoch":1', b'"epoch":2')  # sequence 21
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["verify-backup", taken["path"]])
    assert result.exit_code == 1 and json.loads(result.stdout)["first_bad_sequence"] == 21


async def test_a_backup_older_than_the_transaction_index_restores_and_rebuilds_it(loaded: Api, tmp_path: Path) -> None:
    """A backup taken before `tx_summaries` existed has no file for it: it is still valid, and the
    restore rebuilds the index from the journal."""
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    backup = Path(taken["path"])
    manifest = orjson.loads((backup / "manifest.json").read_bytes())
    del manifest["files"][table_file("tx_summaries")]
    (backup / "manifest.json").write_bytes(orjson.dumps(manifest))
    (backup / table_file("tx_summaries")).unlink()
    assert verify_backup(backup)["ok"] is True
    report = await restore_into_sqlite(backup, tmp_path / "old", until_sequence=None)
    assert report["derived_tables_differ"] == []
    copy = await _opened(Path(report["path"]))
    try:
        summaries, head = await copy.summaries({}, after_sequence=0, limit=10_000)
        assert [s for s, _ in summaries] == list(range(1, head + 1)) and head == taken["head_sequence"]
    finally:
        await copy.close()


async def test_a_restore_that_stops_midway_leaves_a_store_no_ledger_serves(
    loaded: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore into a store it cannot rename into place (PostgreSQL) commits page by page: one
    that failed midway left a shorter journal that looked whole, and a ledger started on it took
    a retried id as new (an acknowledged write applied twice, the rest of the journal lost)."""
    await _load(loaded)
    _, taken = await loaded.post("admin_write", "/admin/v1/backups")
    monkeypatch.setattr(backup_format, "REPLAY_PAGE", 5)
    target = await _opened(tmp_path / "target.db")
    commit, commits = target.commit, 0

    async def commit_until_the_link_is_lost(journal: Any, rows: Any, head: Any) -> None:
        nonlocal commits
        commits += 1
        if commits == 2:
            raise StorageError("commit failed: the connection was lost")
        await commit(journal, rows, head)

    monkeypatch.setattr(target, "commit", commit_until_the_link_is_lost)
    try:
        with pytest.raises(StorageError):
            await restore_backup(Path(taken["path"]), target)
        assert (await target.head()).sequence == 5  # the first page, and nothing says it is all
    finally:
        await target.close()
    service = LedgerService(
        await _opened(tmp_path / "target.db"),
        WriterLimits(),
        clock=lambda: datetime(2026, 12, 1, tzinfo=UTC),
        metrics=LedgerMetrics(CollectorRegistry()),
    )
    with pytest.raises(StorageError, match="restore that stopped midway"):
        await service.start()
    await service.store.close()
    again = await _opened(tmp_path / "target.db")
    try:
        with pytest.raises(RestoreTargetNotEmpty, match="stopped midway"):
            await restore_backup(Path(taken["path"]), again)
    finally:
        await again.close()
