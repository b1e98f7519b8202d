"""The edge config file of the brief loads into frozen settings; mistakes are named."""

import pytest

from shared.config import ConfigError

from edge.config import load
from tests.support.edge_config_file import EDGE_CONFIG_TOML, write_edge_config


def test_the_documented_config_loads_with_paths_relative_to_the_file(tmp_path):
    cfg = load(write_edge_config(tmp_path, EDGE_CONFIG_TOML))
    assert (cfg.id, cfg.crdt_client_id, cfg.port, cfg.ledger_deadline_s) == ("eu", 1, 8801, 3.0)
    assert cfg.data_dir == tmp_path / "eu" and cfg.ledger_url == "http://127.0.0.1:8700"
    assert (cfg.ledger_token, cfg.peer_token) == ("ledger-secret", "peer-secret")
    assert [(p.id, p.url) for p in cfg.peers] == [("us", "http://127.0.0.1:8802")]
    assert [(t.name, t.role) for t in cfg.tokens] == [("gs-eu", "game_server")]


@pytest.mark.parametrize(
    "change,message",
    [
        (("crdt_client_id = 1", "crdt_client_id = 0"), "crdt_client_id"),
        (('name = "gs-eu"\nrole = "game_server"', 'name = "peer"\nrole = "peer"'), "named after a configured peer"),
        (('log_level = "info"', 'log_level = "info"\nsync_doc_bytes_max = 10'), "sync_doc_bytes_max"),
        (('id = "us"\nurl', 'id = "eu"\nurl'), "peers"),
        (("ledger_deadline_s = 3", "ledger_deadline_s = 0.5"), "ledger_attempt_timeout_s"),
        (('role = "game_server"', 'role = "edge"'), "roles"),
        (("secrets/peer.token", "secrets/missing.token"), "peer_token_file"),
        (('name = "gs-eu"', 'name = "gs eu/1"'), "must be named as an id"),  # a client_id, a document name part
    ],
)
def test_config_mistakes_are_refused_by_name(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load(write_edge_config(tmp_path, EDGE_CONFIG_TOML.replace(*change)))


def test_crdt_client_id_is_legacy_and_peer_credentials_are_named_after_their_edge(tmp_path):
    text = EDGE_CONFIG_TOML.replace("crdt_client_id = 1\n", "").replace(
        'name = "gs-eu"\nrole = "game_server"', 'name = "us"\nrole = "peer"'
    )
    cfg = load(write_edge_config(tmp_path, text))
    assert [(t.name, t.role) for t in cfg.tokens] == [("us", "peer")]
    assert cfg.limits.sync_doc_bytes_max == 256 * 1024
