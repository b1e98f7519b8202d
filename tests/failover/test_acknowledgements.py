"""Synchronous-standby acknowledgements are proven, not claimed: a poll counts only when its
`after_hash` is the primary's own hash at `after_sequence`. An old primary whose tail diverged
rejoins as a standby: the new primary refuses it (409 `replica_diverged`), never counts it, and it
stops tailing loudly (readyz red, metric), again after a restart; `compare` says it diverged."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE, STANDBY
from core_ledger.compare import compare_stores
from core_ledger.domain import GENESIS_HASH
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import SqliteStore
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config, standby_of
from tests.support.polling import wait_for

SYNC = {"synchronous_standby": True, "standby_ack_timeout_s": 0.5}


async def test_only_a_proven_position_acknowledges(aiohttp_client: Any, tmp_path: Path) -> None:
    app = create_app(ledger_config(tmp_path / "p", **SYNC), clock=FakeClock())
    api = Api(await aiohttp_client(app))
    status, problem = await api.post("admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]})
    assert status == 503 and problem["code"] == "standby_unavailable"
    head = app[SERVICE].head

    status, page = await api.get("replica", "/v1/journal?after_sequence=1")  # a plain read: served, no ack
    assert status == 200 and page == ""
    status, page = await api.get("replica", "/v1/journal?after_sequence=0")
    assert status == 200 and len(page.splitlines()) == 1
    assert (await api.get("admin_read", "/admin/v1/replication"))[1]["standbys"] == []

    status, problem = await api.get("replica", "/v1/journal?after_sequence=1&after_hash=" + "ab" * 32)
    assert status == 409 and problem["code"] == "replica_diverged" and problem["sequence"] == 1
    status, problem = await api.get("replica", "/v1/journal?after_sequence=7&after_hash=" + head.hash)
    assert status == 409 and problem["code"] == "replica_diverged"  # a position this ledger never stored
    status, problem = await api.get("replica", "/v1/journal?after_sequence=1&after_hash=XYZ")
    assert status == 400 and problem["code"] == "validation_error" and problem["field"] == "after_hash"
    assert (await api.get("admin_read", "/admin/v1/replication"))[1]["standbys"] == []
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_standby_divergences_total 2.0" in metrics

    assert (await api.get("replica", f"/v1/journal?after_sequence=0&after_hash={GENESIS_HASH}"))[0] == 200
    assert (await api.get("replica", f"/v1/journal?after_sequence=1&after_hash={head.hash}"))[0] == 200
    _, repl = await api.get("admin_read", "/admin/v1/replication")
    assert [(s["name"], s["acked_sequence"]) for s in repl["standbys"]] == [("replica-1", 1)]
    status, body = await api.post("admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]})
    assert status == 200 and body["replayed"] is True  # now a standby proved it holds entry 1


async def test_a_diverged_old_primary_never_acknowledges_the_new_primarys_writes(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    old_app = create_app(ledger_config(tmp_path / "a"), clock=clock)
    old_server = await aiohttp_server(old_app)
    old = Api(await aiohttp_client(old_server))
    settings = StandbySettings(str(old_server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.05)
    new_app = create_app(ledger_config(tmp_path / "b", **SYNC), clock=clock, standby=settings)
    new_server = await aiohttp_server(new_app)
    new = Api(await aiohttp_client(new_server))
    await old.player(deposit=1000)
    await wait_for(lambda: new_app[SERVICE].head == old_app[SERVICE].head)
    shared = old_app[SERVICE].head.sequence
    assert (await new.post("admin_write", "/admin/v1/promote"))[0] == 200
    for i in range(2):  # the old primary, not told yet: a tail the new one never had
        assert (await old.post("edge", "/v1/bets", bet(f"old-{i}", 10)))[0] == 201
    await old.client.close()

    rejoined = standby_of(new_server, tmp_path / "a", clock)  # the old primary rejoins as a standby
    rejoined_api = Api(await aiohttp_client(rejoined))
    tailer = rejoined[STANDBY]
    await wait_for(lambda: tailer.primary_epoch is not None or not tailer.running, 10)  # it has polled
    for i in range(2):  # nobody holds these but the new primary: they must not be acknowledged
        status, problem = await new.post("edge", "/v1/bets", bet(f"new-{i}", 10))
        assert status == 503 and problem["code"] == "standby_unavailable", (status, problem)
    assert tailer.state == "diverged" and tailer.diverged_at == shared + 2
    assert rejoined[SERVICE].head.sequence == shared + 2
    status, ready = await rejoined_api.get("", "/readyz")
    assert status == 503 and ready["tailer"] == "diverged"
    _, repl = await rejoined_api.get("admin_read", "/admin/v1/replication")
    assert repl["primary"]["state"] == "diverged" and repl["primary"]["diverged_at_sequence"] == shared + 2
    _, metrics = await rejoined_api.get("admin_read", "/metrics")
    assert 'ledger_replica_halted{reason="diverged"} 1.0' in metrics
    _, repl = await new.get("admin_read", "/admin/v1/replication")
    assert repl["standbys"] == []
    await rejoined_api.client.close()

    again = standby_of(new_server, tmp_path / "a", clock)  # restarted: it still refuses to tail
    again_api = Api(await aiohttp_client(again))
    await wait_for(lambda: again[STANDBY].state == "diverged", 10)
    assert again[SERVICE].head.sequence == shared + 2 and (await again_api.get("", "/readyz"))[0] == 503
    await again_api.client.close()
    await new.client.close()

    stores = SqliteStore(tmp_path / "a" / "ledger.db"), SqliteStore(tmp_path / "b" / "ledger.db")
    for store in stores:
        await store.open()
    try:
        report = await compare_stores(*stores, names=("old", "new"))
    finally:
        for store in stores:
            await store.close()
    assert report["winner"] == "new" and report["diverged"] is True and report["divergence_sequence"] == shared + 1
    assert report["verdict"].startswith("old DIVERGED from new") and "rebuild" in report["verdict"]

    old_db, new_db = str(tmp_path / "a" / "ledger.db"), str(tmp_path / "b" / "ledger.db")
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "croupier", "ledger", "compare", old_db, new_db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and orjson.loads(out.stdout)["diverged"] is True
    assert f"{old_db} DIVERGED from {new_db} at sequence {shared + 1}" in out.stderr
