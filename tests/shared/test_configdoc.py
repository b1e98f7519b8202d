"""docs/CONFIG.md is generated from the key tables and current; the tables match the config dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from shared.configspec import Table

from core_ledger.config import LEDGER, LedgerConfig
from croupier import configdoc
from edge.config import EDGE, EdgeConfig, Limits

# Dataclass fields that are no key of the file: read from files or derived (`tls` holds the four TLS keys;
# `config_path` is the file read, for credential reloads).
LEDGER_NOT_KEYS = {"tokens", "postgres_dsn", "tls", "config_path"}
EDGE_NOT_KEYS = {"tokens", "limits", "ledger_token", "peer_token", "tls", "config_path"}
TLS_KEY_NAMES = {"tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_ca_file"}


def test_the_committed_config_reference_is_current() -> None:
    assert configdoc.DOC_PATH.read_text() == configdoc.render(), "run python -m croupier.configdoc"
    assert configdoc.main(["--check"]) == 0


def test_check_mode_notices_a_stale_reference(tmp_path: Path, monkeypatch) -> None:
    stale = tmp_path / "CONFIG.md"
    stale.write_text(configdoc.render().replace("CROUPIER_LEDGER__PORT", "CROUPIER_LEDGER__PORTS"))
    monkeypatch.setattr(configdoc, "DOC_PATH", stale)
    assert configdoc.main(["--check"]) == 1


def _keys(table: Table) -> set[str]:
    return {k.name for k in table.keys}


def test_every_config_field_is_a_documented_key_and_every_key_a_field() -> None:
    ledger_fields = {f.name for f in dataclasses.fields(LedgerConfig)} - LEDGER_NOT_KEYS
    assert ledger_fields | TLS_KEY_NAMES == _keys(LEDGER)
    edge_fields = {f.name for f in dataclasses.fields(EdgeConfig)} - EDGE_NOT_KEYS
    # The quotas land in `limits`; the TLS keys in `tls`.
    quota_keys = {"sync_doc_bytes_max", "sync_peer_bytes_per_s", "sync_peer_bytes_burst"}
    assert edge_fields | quota_keys | TLS_KEY_NAMES == _keys(EDGE)
    text = configdoc.render()
    for table in (LEDGER, EDGE):
        for key in table.keys:
            assert f"| `{key.name}` |" in text and key.meaning in text


def test_documented_defaults_are_the_defaults_the_services_use() -> None:
    ledger = LedgerConfig(data_dir=Path("data"))
    for key in LEDGER.keys:
        if key.name in (
            "data_dir",
            "peers",
            "log_file",
            "postgres_dsn_file",
            "fault_apply_delay_file",
            "backup_dir",
            "tokens_file",
            "checkpoint_key_file",
            "webhook_hosts",
            *TLS_KEY_NAMES,
        ):
            continue  # paths and lists: held in a derived form (resolved path, tuple, None when unset)
        assert getattr(ledger, key.name) == key.default, key.name
    limits = Limits()
    for name in ("sync_doc_bytes_max", "sync_peer_bytes_per_s", "sync_peer_bytes_burst"):
        assert getattr(limits, name) == EDGE.key(name).default  # type: ignore[union-attr]  # these keys are in the table
