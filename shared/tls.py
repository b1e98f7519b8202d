"""TLS settings of a service, validated once, and the `ssl` contexts built from them.

Both services read the same four keys from their table:

    tls_cert_file = "certs/ledger.pem"      # this service's certificate chain (PEM)
    tls_key_file = "certs/ledger.key"       # its private key (PEM); with tls_cert_file: serve HTTPS
    tls_client_ca_file = "certs/ca.pem"     # optional: require client certificates signed by this CA
    tls_ca_file = "certs/ca.pem"            # optional: CA bundle to verify every https:// / wss:// peer

Paths are relative to the config file. The same certificate and key, when given, are presented as
the client certificate on every outbound link (edge→ledger, edge↔edge, standby→primary, peer
ledger checks), so a service that requires client certificates can admit its callers. Without
`tls_ca_file` outbound links verify against the system's default CA store; verification is never
turned off. Every file is loaded at start-up: a missing, unreadable or mismatched one is one more
problem of the config (its `ConfigError`), never a failure on the first connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.configspec import Key

# The four keys, the same in `[ledger]` and `[edge]`.
TLS_KEYS = (
    Key(
        "tls_cert_file",
        str,
        "",
        "This service's certificate chain (PEM); with `tls_key_file`: serve HTTPS, and "
        "present it as the client certificate on every outbound link.",
        path=True,
    ),
    Key("tls_key_file", str, "", "The private key of `tls_cert_file` (PEM); the two go together.", path=True),
    Key(
        "tls_client_ca_file",
        str,
        "",
        "CA bundle (PEM): callers must present a client certificate signed by it; "
        "needs `tls_cert_file`. Unset: no client certificate asked.",
        path=True,
    ),
    Key(
        "tls_ca_file",
        str,
        "",
        "CA bundle (PEM) that verifies every https:// and wss:// service this one calls; "
        "unset: the system's CA store (verification is never off).",
        path=True,
    ),
)
MIN_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class TlsSettings:
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None  # set: clients must present a certificate signed by this CA
    ca_file: Path | None = None  # CA bundle for outbound verification (None: the system store)

    @property
    def serves_tls(self) -> bool:
        return self.cert_file is not None

    def server_context(self) -> ssl.SSLContext | None:
        """The listening socket's context, or None to serve plain HTTP."""
        if self.cert_file is None or self.key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = MIN_VERSION
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The context of every outbound link: verifies the peer (hostname and chain) against
        `ca_file` or the system store, and presents this service's certificate when it has one."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = MIN_VERSION
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _path(
    values: dict[str, Any], key: str, base: Path, section: str, problems: list[str], sources: Mapping[str, str]
) -> Path | None:
    name = values.get(key)
    if not isinstance(name, str) or not name:
        return None  # unset (a value of the wrong type is already a problem of the table)
    path = Path(name) if Path(name).is_absolute() else (base / name).resolve()
    if not path.is_file():
        source = f" (from {sources[key]})" if key in sources else ""
        problems.append(f"{section}.{key}{source}: {path} is not a readable file")
        return None
    return path


def parse_tls(
    values: dict[str, Any], base: Path, section: str, problems: list[str], sources: Mapping[str, str] | None = None
) -> TlsSettings:
    """The `tls_*` keys of a checked table, with every file loaded once to prove it usable; each thing wrong is
    added to `problems` (the settings returned then are not to be used). `sources` names the environment
    variable a key came from, for the messages."""
    before = len(problems)
    sources = sources or {}
    settings = TlsSettings(
        cert_file=_path(values, "tls_cert_file", base, section, problems, sources),
        key_file=_path(values, "tls_key_file", base, section, problems, sources),
        client_ca_file=_path(values, "tls_client_ca_file", base, section, problems, sources),
        ca_file=_path(values, "tls_ca_file", base, section, problems, sources),
    )
    if len(problems) > before:
        return TlsSettings()
    if (settings.cert_file is None) != (settings.key_file is None):
        problems.append(f"{section}.tls_cert_file and {section}.tls_key_file go together")
        return TlsSettings()
    if settings.client_ca_file is not None and settings.cert_file is None:
        problems.append(f"{section}.tls_client_ca_file needs tls_cert_file and tls_key_file (it applies to HTTPS)")
        return TlsSettings()
    try:
        settings.server_context()
    except (ssl.SSLError, OSError) as e:
        problems.append(f"{section}: the TLS certificate, key or client CA cannot be used: {e}")
        return TlsSettings()
    try:
        settings.client_context()
    except (ssl.SSLError, OSError) as e:
        problems.append(f"{section}.tls_ca_file cannot be used as a CA bundle: {e}")
        return TlsSettings()
    return settings
