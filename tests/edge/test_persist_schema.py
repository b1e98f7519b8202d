"""Schema versions of the edge store (edge.db): recorded, adopted, migrated, refused.

The version-1 fixture is built from migration 1's own statements without a version recorded:
exactly what an edge written before versions existed holds.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.migrations import Migration, SchemaBehind, SchemaTooNew

from edge.persist import MIGRATIONS, DocumentStore

V2 = Migration(2, "test only: a table that version 1 lacks", ("CREATE TABLE added_in_v2 (x integer)",))


def v1_fixture(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(";\n".join(MIGRATIONS[0].statements) + ";")
        db.execute("INSERT INTO effects (key, seq, delta) VALUES ('jackpot/mega', 7, '{\"amount_minor\":1}')")
        db.execute("INSERT INTO watermarks (key, seq) VALUES ('jackpot/mega', 5)")
        db.commit()
    finally:
        db.close()


def pragma_version(path: Path, set_to: int | None = None) -> int:
    db = sqlite3.connect(path)
    try:
        if set_to is not None:
            db.execute(f"PRAGMA user_version = {set_to}")
            db.commit()
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


async def test_a_new_store_records_the_latest_version(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path / "edge.db", client_id=1, allow_migration=False)
    await store.open()
    await store.close()
    assert pragma_version(tmp_path / "edge.db") == len(MIGRATIONS) == 1


async def test_v1_is_adopted_in_place_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    v1_fixture(path)
    with pytest.raises(SchemaBehind, match=r"version 0, behind this code's 2.*croupier edge migrate --config"):
        await DocumentStore(path, client_id=1, allow_migration=False, migrations=(*MIGRATIONS, V2)).open()
    assert pragma_version(path) == 0
    store = DocumentStore(path, client_id=1, allow_migration=False)  # adopting version 1 needs no permission
    loaded = await store.open()
    await store.close()
    assert [(e.key, e.sequence) for e in loaded.effects] == [("jackpot/mega", 7)]
    assert loaded.watermarks == {"jackpot/mega": 5}
    assert pragma_version(path) == 1


async def test_v1_migrates_to_a_test_v2_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    v1_fixture(path)
    pragma_version(path, set_to=1)
    store = DocumentStore(path, client_id=1, migrations=(*MIGRATIONS, V2))
    loaded = await store.open()
    await store.close()
    assert loaded.watermarks == {"jackpot/mega": 5} and pragma_version(path) == 2
    with pytest.raises(SchemaTooNew, match="schema version 2, newer than this code's 1") as refused:
        await DocumentStore(path, client_id=1).open()
    assert (refused.value.stored, refused.value.code) == (2, 1)
    assert pragma_version(path) == 2


CONFIG = """
[edge]
id = "eu"
port = 1
data_dir = "./eu"
ledger_url = "http://127.0.0.1:1"
ledger_token_file = "edge.token"
peer_token_file = "peer.token"
migrate_on_start = {migrate}
"""


def croupier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def edge_dir(tmp_path: Path, *, migrate: bool) -> Path:
    (tmp_path / "edge.token").write_text("ledger-secret")
    (tmp_path / "peer.token").write_text("peer-secret")
    (tmp_path / "eu").mkdir()
    v1_fixture(tmp_path / "eu" / "edge.db")
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG.replace("{migrate}", str(migrate).lower()))
    return config


def test_migrate_adopts_an_unversioned_store_and_reports_it(tmp_path: Path) -> None:
    config = edge_dir(tmp_path, migrate=False)
    done = croupier("edge", "migrate", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)  # the report alone: the log line goes to the log (stderr here)
    assert (report["from_version"], report["to_version"]) == (0, 1) and '"schema_migrated"' in done.stderr
    assert pragma_version(tmp_path / "eu" / "edge.db") == 1


def test_serve_refuses_a_newer_store_with_a_message(tmp_path: Path) -> None:
    config = edge_dir(tmp_path, migrate=True)
    pragma_version(tmp_path / "eu" / "edge.db", set_to=4)
    refused = croupier("edge", "serve", "--config", str(config), cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "schema version 4, newer than this code's 1" in refused.stderr
    assert pragma_version(tmp_path / "eu" / "edge.db") == 4


async def test_the_running_edge_exports_its_store_schema_version(edges: Any, http: Any) -> None:
    e = await edges("eu")
    async with http.get(e.url("eu") + "/metrics", headers={"Authorization": "Bearer metrics-token"}) as r:
        assert f"edge_store_schema_version {float(len(MIGRATIONS))}" in await r.text()


def test_migrate_on_start_is_read_from_the_config(tmp_path: Path) -> None:
    from shared.config import ConfigError

    from edge import config as edge_config

    assert edge_config.load(edge_dir(tmp_path, migrate=False)).migrate_on_start is False
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG.replace("migrate_on_start = {migrate}\n", ""))
    assert edge_config.load(path).migrate_on_start is True
    path.write_text(CONFIG.replace("{migrate}", "1"))
    with pytest.raises(ConfigError, match="migrate_on_start"):
        edge_config.load(path)


def test_migrate_while_the_store_is_busy_fails_with_a_message(tmp_path: Path) -> None:
    config = edge_dir(tmp_path, migrate=True)
    holder = sqlite3.connect(tmp_path / "eu" / "edge.db", isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")  # a running edge's writer mid-commit
        refused = croupier("edge", "migrate", "--config", str(config), cwd=tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "locked" in refused.stderr
    assert pragma_version(tmp_path / "eu" / "edge.db") == 0
