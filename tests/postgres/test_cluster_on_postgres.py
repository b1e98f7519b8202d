"""`Cluster(backend="postgres")` (what `croupier up --backend postgres` and the demo run): the ledger
runs on a durable local PostgreSQL started in the cluster's directory, bets through an edge land in
its journal, `cluster.json` says which backend without the password, and stop stops the server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from harness.cluster import Cluster, seed

pytestmark = pytest.mark.slow


async def test_a_cluster_runs_on_a_local_durable_postgres_and_stops_it(short_dir: Path) -> None:
    cluster = Cluster(short_dir / "c", edge_ids=("eu",), backend="postgres", log_level="warning")
    try:
        await cluster.start()
        await seed(cluster, players=2)
        async with aiohttp.ClientSession(headers=cluster.headers("game_server")) as http:
            body = {
                "id": "b1",
                "player_id": "p001",
                "currency": "EUR",
                "amount_minor": 100,
                "round_id": "r1",
                "game_id": "slots-1",
            }
            async with http.post(cluster.url("eu") + "/v1/bets", json=body) as r:
                assert r.status == 201, await r.text()
        info = json.loads(cluster.write_info().read_text())
        dsn_file = Path(info["postgres"]["dsn_file"])
        dsn = (await asyncio.to_thread(dsn_file.read_text)).strip()
        password = cluster.database.password
        assert info["backend"] == "postgres" and password not in json.dumps(info)
        assert os.stat(dsn_file).st_mode & 0o077 == 0
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SHOW fsync") == "on"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            assert await conn.fetchval("SELECT count(*) FROM ledger.journal WHERE tx_id LIKE '%b1'") == 1
        finally:
            await conn.close()
        data_dir = cluster.database.data_dir
    finally:
        await cluster.stop()
    assert not (data_dir / "postmaster.pid").exists()


@pytest.mark.parametrize(
    "args, complaint", [(["--backend", "mysql"], "sqlite or postgres"), (["--ha"], "--ha needs --backend postgres")]
)
def test_up_and_demo_refuse_a_backend_they_cannot_start(tmp_path: Path, args: list[str], complaint: str) -> None:
    from typer.testing import CliRunner

    from croupier.cli import app

    for command in (["up", "--dir", str(tmp_path / "c")], ["demo", "--dir", str(tmp_path / "d")]):
        result = CliRunner().invoke(app, [*command, *args])
        assert result.exit_code == 2 and complaint in result.output, result.output
        assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # nothing started


@pytest.mark.parametrize(
    "args, complaint",
    [(["--pair"], "--pair needs --backend postgres"), (["--backend", "postgres", "--pair", "--standby"], "pick one")],
)
def test_up_refuses_a_pair_it_cannot_start(tmp_path: Path, args: list[str], complaint: str) -> None:
    from typer.testing import CliRunner

    from croupier.cli import app

    result = CliRunner().invoke(app, ["up", "--dir", str(tmp_path / "c"), *args])
    assert result.exit_code == 2 and complaint in result.output, result.output
    assert not (tmp_path / "c").exists()  # nothing started
