"""TLS settings: both services load them relative to the config file, and a bad TLS config is a
clear config error at start-up (never a failure on the first connection)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from shared.config import ConfigError

from core_ledger import config as ledger_config
from edge import config as edge_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(root / "key.pem"))
    other_ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(root / "other-key.pem"))
    (root / "garbage.pem").write_text("not a certificate\n")
    (root / "t").write_text("token\n")
    return root


def write_ledger(root: Path, lines: str) -> Path:
    path = root / "ledger.toml"
    path.write_text(f"[ledger]\n{lines}\n")
    return path


def write_edge(root: Path, lines: str) -> Path:
    path = root / "edge.toml"
    path.write_text(
        f'[edge]\nid = "eu"\nledger_url = "https://127.0.0.1:1"\nledger_token_file = "t"\n'
        f'peer_token_file = "t"\n{lines}\n'
    )
    return path


TLS_OK = 'tls_cert_file = "cert.pem"\ntls_key_file = "key.pem"\ntls_ca_file = "ca.pem"\ntls_client_ca_file = "ca.pem"'


def test_both_services_load_tls_relative_to_the_config_file(pki: Path) -> None:
    ledger = ledger_config.load(write_ledger(pki, TLS_OK))
    edge = edge_config.load(write_edge(pki, TLS_OK))
    for tls in (ledger.tls, edge.tls):
        assert (tls.cert_file, tls.key_file, tls.ca_file, tls.client_ca_file) == (
            pki / "cert.pem",
            pki / "key.pem",
            pki / "ca.pem",
            pki / "ca.pem",
        )
        server = tls.server_context()
        assert server is not None and server.verify_mode == ssl.CERT_REQUIRED
        client = tls.client_context()
        assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    plain = ledger_config.load(write_ledger(pki, ""))
    assert plain.tls.server_context() is None and plain.tls.client_context().check_hostname


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('tls_cert_file = "cert.pem"', "go together"),
        ('tls_key_file = "key.pem"', "go together"),
        ('tls_cert_file = "missing.pem"\ntls_key_file = "key.pem"', "not a readable file"),
        ('tls_cert_file = "cert.pem"\ntls_key_file = "other-key.pem"', "cannot be used"),
        ('tls_cert_file = "garbage.pem"\ntls_key_file = "key.pem"', "cannot be used"),
        ('tls_ca_file = "garbage.pem"', "tls_ca_file cannot be used"),
        ('tls_client_ca_file = "ca.pem"', "needs tls_cert_file"),
        ('tls_cert_file = "cert.pem"\ntls_key_file = "key.pem"\ntls_client_ca_file = "garbage.pem"', "cannot be used"),
    ],
)
def test_a_bad_tls_config_is_a_config_error_naming_the_key(pki: Path, lines: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ledger_config.load(write_ledger(pki, lines))
    with pytest.raises(ConfigError, match=message):
        edge_config.load(write_edge(pki, lines))


def test_serve_refuses_a_bad_tls_config_with_a_clear_message(pki: Path) -> None:
    for service, path in (
        ("ledger", write_ledger(pki, 'tls_cert_file = "cert.pem"')),
        ("edge", write_edge(pki, 'tls_cert_file = "cert.pem"')),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "croupier", service, "serve", "--config", str(path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert result.returncode == 2, result.stderr
        flat = " ".join(result.stderr.replace("│", " ").split())  # the error box wraps lines
        assert "tls_key_file go together" in flat
        assert "Traceback" not in result.stderr


def test_tokens_file_adds_entries_and_may_hold_only_tokens(pki: Path) -> None:
    (pki / "tokens.toml").write_text('[[tokens]]\nname = "gs2"\nrole = "game_server"\ntoken_file = "t"\n')
    cfg = edge_config.load(
        write_edge(
            pki,
            'tokens_file = "tokens.toml"\n\n[[tokens]]\nname = "gs"\nrole = "game_server"\nsha256 = "' + "a" * 64 + '"',
        )
    )
    assert [t.name for t in cfg.tokens] == ["gs", "gs2"] and cfg.tokens_file == pki / "tokens.toml"
    ledger = ledger_config.load(write_ledger(pki, 'tokens_file = "tokens.toml"'))
    assert [t.name for t in ledger.tokens] == ["gs2"]
    (pki / "tokens.toml").write_text("[ledger]\nport = 1\n")
    with pytest.raises(ConfigError, match="only"):
        ledger_config.load(write_ledger(pki, 'tokens_file = "tokens.toml"'))
    (pki / "tokens.toml").write_text('[[tokens]]\nname = "x"\nrole = "edge"\ntoken_file = "missing"\n')
    with pytest.raises(ConfigError, match="cannot read missing"):
        ledger_config.load(write_ledger(pki, 'tokens_file = "tokens.toml"'))


def test_edge_urls_name_their_scheme(pki: Path) -> None:
    peer = '\n[[edge.peers]]\nid = "us"\nurl = "{}"'
    assert edge_config.load(write_edge(pki, peer.format("wss://127.0.0.1:2"))).peers[0].url == "wss://127.0.0.1:2"
    with pytest.raises(ConfigError, match=r"peers\[0\]\.url must start with"):
        edge_config.load(write_edge(pki, peer.format("127.0.0.1:2")))
    path = write_edge(pki, "")
    path.write_text(path.read_text().replace("https://127.0.0.1:1", "htps://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        edge_config.load(path)


def test_token_entries_that_are_not_tables_are_a_config_error(pki: Path) -> None:
    path = pki / "ledger.toml"
    path.write_text("tokens = [1]\n[ledger]\n")
    with pytest.raises(ConfigError, match=r"tokens must be \[\[tokens\]\] tables"):
        ledger_config.load(path)


def test_tls_and_credential_problems_are_listed_with_the_others(pki: Path) -> None:
    """A bad TLS file, a bad URL scheme or a bad tokens_file is one more problem of the one ConfigError."""
    with pytest.raises(ConfigError) as caught:
        ledger_config.load(
            write_ledger(
                pki,
                'port = "x"\ntls_cert_file = "missing.pem"\ntls_key_file = "key.pem"\n'
                'peers = ["ftp://x"]\ntokens_file = "missing.toml"\n'
                "credentials_check_interval_s = 0",
            ),
            environ={},
        )
    problems = caught.value.problems
    assert any(p.startswith("ledger.port") for p in problems)
    assert any("ledger.tls_cert_file" in p and "not a readable file" in p for p in problems)
    assert any("ledger.peers" in p for p in problems)
    assert any("ledger.tokens_file" in p for p in problems)
    assert any("ledger.credentials_check_interval_s" in p for p in problems)
    path = write_edge(pki, 'body_bytes_max = 1\ntls_key_file = "key.pem"\n\n[[edge.peers]]\nid = "us"\nurl = "x:1"')
    path.write_text(path.read_text().replace("https://127.0.0.1:1", "htps://127.0.0.1:1"))
    with pytest.raises(ConfigError) as caught:
        edge_config.load(path, environ={})
    problems = caught.value.problems
    assert any(p.startswith("edge.body_bytes_max") for p in problems)
    assert any("go together" in p for p in problems)
    assert any(r"peers[0].url must start with" in p for p in problems)
    assert any("must start with http:// or https://" in p for p in problems)


def test_environment_overrides_reach_tls_and_credential_keys(pki: Path) -> None:
    (pki / "env-tokens.toml").write_text('[[tokens]]\nname = "from-env"\nrole = "metrics"\ntoken_file = "t"\n')
    environ = {
        "CROUPIER_LEDGER__TLS_CERT_FILE": str(pki / "cert.pem"),
        "CROUPIER_LEDGER__TLS_KEY_FILE": str(pki / "key.pem"),
        "CROUPIER_LEDGER__TOKENS_FILE": str(pki / "env-tokens.toml"),
        "CROUPIER_LEDGER__CREDENTIALS_CHECK_INTERVAL_S": "0.5",
    }
    path = write_ledger(pki, "")
    cfg = ledger_config.load(path, environ=environ)
    assert cfg.tls.cert_file == pki / "cert.pem" and cfg.tls.server_context() is not None
    assert cfg.tokens_file == pki / "env-tokens.toml" and [t.name for t in cfg.tokens] == ["from-env"]
    assert cfg.credentials_check_interval_s == 0.5
    # a reload reads the tokens_file the environment names, as the start did
    assert [t.name for t in ledger_config.reload_tokens(path, environ)] == ["from-env"]
    edge = edge_config.load(write_edge(pki, ""), environ={"CROUPIER_EDGE__TLS_CA_FILE": str(pki / "ca.pem")})
    assert edge.tls.ca_file == pki / "ca.pem"
    with pytest.raises(ConfigError, match="CROUPIER_EDGE__TLS_CA_FILE"):
        edge_config.load(write_edge(pki, ""), environ={"CROUPIER_EDGE__TLS_CA_FILE": str(pki / "missing.pem")})


def test_an_empty_token_file_is_a_problem(pki: Path) -> None:
    (pki / "empty").write_text("\n")
    path = pki / "ledger.toml"
    path.write_text('[ledger]\n[[tokens]]\nname = "x"\nrole = "edge"\ntoken_file = "empty"\n')
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.token_file: empty is empty"):
        ledger_config.load(path, environ={})
