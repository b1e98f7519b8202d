"""The edge config file as docs/CONFIG.md documents it, and writing it with its secret files."""

from __future__ import annotations

from pathlib import Path

from shared.auth import hash_token

EDGE_CONFIG_TOML = """
[edge]
id = "eu"
crdt_client_id = 1
host = "127.0.0.1"
port = 8801
data_dir = "./eu"
ledger_url = "http://127.0.0.1:8700/"
ledger_token_file = "secrets/edge.token"
peer_token_file = "secrets/peer.token"
ledger_attempt_timeout_s = 1.0
ledger_deadline_s = 3
body_bytes_max = 65536
session_state_bytes_max = 16384
log_level = "info"
[[edge.peers]]
id = "us"
url = "http://127.0.0.1:8802"
[[tokens]]
name = "gs-eu"
role = "game_server"
sha256 = "{digest}"
"""


def write_edge_config(tmp_path: Path, text: str) -> Path:
    """`text` as edge.toml in `tmp_path` (its `{digest}` the digest of the token `gs`), next to
    secrets/edge.token and secrets/peer.token; returns the config's path."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "edge.token").write_text("ledger-secret\n")
    (tmp_path / "secrets" / "peer.token").write_text("peer-secret")
    path = tmp_path / "edge.toml"
    path.write_text(text.replace("{digest}", hash_token("gs")))
    return path
