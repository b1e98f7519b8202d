"""Failover settings: edge `ledger_urls` (with `ledger_url` still working) and the ledger's
synchronous standby, peers and bounds; mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError

from core_ledger import config as ledger_config
from edge.config import load as load_edge
from tests.support.edge_config_file import EDGE_CONFIG_TOML, write_edge_config

SINGLE = 'ledger_url = "http://127.0.0.1:8700/"\n'


def test_edge_ledger_urls_list_the_failover_order_and_ledger_url_alone_still_works(tmp_path: Path) -> None:
    assert load_edge(write_edge_config(tmp_path, EDGE_CONFIG_TOML)).ledger_endpoints == ("http://127.0.0.1:8700",)
    both = EDGE_CONFIG_TOML.replace(SINGLE, 'ledger_urls = ["http://127.0.0.1:8700/", "http://127.0.0.1:8701"]\n')
    cfg = load_edge(write_edge_config(tmp_path, both))
    assert cfg.ledger_endpoints == ("http://127.0.0.1:8700", "http://127.0.0.1:8701")
    assert cfg.ledger_url == "http://127.0.0.1:8700"


@pytest.mark.parametrize(
    "line",
    [
        "ledger_urls = []\n",
        'ledger_urls = ["http://127.0.0.1:8700", 5]\n',
        SINGLE + 'ledger_urls = ["http://127.0.0.1:8701"]\n',
    ],
)
def test_edge_rejects_bad_ledger_urls(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError):
        load_edge(write_edge_config(tmp_path, EDGE_CONFIG_TOML.replace(SINGLE, line)))


def test_ledger_failover_settings_load_and_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.toml"
    path.write_text(
        '[ledger]\nsynchronous_standby = true\nstandby_ack_timeout_s = 1\npeers = ["http://127.0.0.1:8701/"]\n'
        "epoch_claim_recheck_s = 0.5\n"
    )
    cfg = ledger_config.load(path, peers=("http://127.0.0.1:8702",))
    assert cfg.synchronous_standby and cfg.standby_ack_timeout_s == 1.0 and cfg.epoch_claim_recheck_s == 0.5
    assert cfg.peers == ("http://127.0.0.1:8701", "http://127.0.0.1:8702")
    for bad in (
        "standby_ack_timeout_s = 0",
        'peers = ["ledger-b"]',
        "journal_wait_ms_max = 0",
        'synchronous_standby = "yes"',
        "epoch_claim_recheck_s = 0",
        "epoch_claim_recheck_s = 601",
    ):
        path.write_text(f"[ledger]\n{bad}\n")
        with pytest.raises(ConfigError):
            ledger_config.load(path)
