"""Config parsing (defaults, overrides, errors) and `croupier ledger serve` stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from shared.config import ConfigError

from core_ledger import config
from tests.support.ledger_process import LedgerProcess, auth


def test_config_defaults_relative_data_dir_tokens_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "edge.token").write_text("secret-token\n")
    path = tmp_path / "ledger.toml"
    path.write_text(
        '[ledger]\ndata_dir = "d"\ncommit_batch_max = 64\n'
        '[[tokens]]\nname = "edge-eu"\nrole = "edge"\ntoken_file = "edge.token"\n'
    )
    cfg = config.load(path)
    assert (cfg.host, cfg.port, cfg.group_commit, cfg.commit_batch_max) == ("127.0.0.1", 8700, True, 64)
    assert cfg.db_path == tmp_path / "d" / "ledger.db" and cfg.tokens[0].name == "edge-eu"
    assert "secret-token" not in repr(cfg)
    other = config.load(path, port=9000, group_commit=False, data_dir=tmp_path / "x")
    assert (other.port, other.group_commit, other.data_dir) == (9000, False, tmp_path / "x")


@pytest.mark.parametrize(
    "body",
    [
        "[ledger]\nport = 0\n",
        '[ledger]\nqueue_depth_max = "many"\n',
        "[ledger]\nturbo = true\n",
        "[ledger]\ngroup_commit = 1\n",
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, body: str) -> None:
    path = tmp_path / "ledger.toml"
    path.write_text(body)
    with pytest.raises(ConfigError):
        config.load(path)


async def test_serve_drains_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    process = LedgerProcess(tmp_path)
    try:
        await process.start()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s,
            s.post(
                process.url + "/admin/v1/players",
                json={"player_id": "p", "currencies": ["EUR"]},
                headers=auth("admin_write"),
            ) as r,
        ):
            assert r.status == 201
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.proc.wait, 20) == 0
        log = process.log.read_text()
        assert "token-of-" not in log  # no secret in the logs
    finally:
        process.stop()
