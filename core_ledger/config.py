"""The ledger's config: the `[ledger]` table and `[[tokens]]` of a TOML file, validated once.

    [ledger]
    host = "127.0.0.1"        port = 8700          data_dir = "./data"  (relative to the file)
    group_commit = true       commit_batch_max = 256                    queue_depth_max = 10000
    body_bytes_max = 65536    page_limit_max = 1000                     batch_actions_max = 256
    log_level = "info"        backend = "sqlite"   (or "postgres", which needs postgres_dsn_file)
    log_file = "ledger.log"   (JSON lines appended there, relative to the file; default: stderr)
    postgres_dsn_file = "pg.dsn"  (relative to the file; the DSN holds a password: read, never logged)
    postgres_schema = "public"    postgres_pool_size_max = 8
    synchronous_standby = false   standby_ack_timeout_s = 2.0    journal_wait_ms_max = 5000
    peers = ["http://127.0.0.1:8701"]  (other ledgers: a primary of a higher epoch there fences this one)
    peer_check_interval_s = 5.0   peer_check_timeout_s = 2.0
    epoch_claim_recheck_s = 1.0   (a caller's epoch claim the peers refuted: refuted again without asking)
    tls_cert_file = ""  tls_key_file = ""  tls_client_ca_file = ""  tls_ca_file = ""  (shared/tls.py:
                                   HTTPS, required client certificates, the CA of peers and primary)
    tokens_file = ""              (more [[tokens]] in a file of their own; re-read with the config's
                                   [[tokens]] on SIGHUP or when either file changes: shared/credentials.py)
    credentials_check_interval_s = 2.0   (how often the token files' modification stamps are checked)
    fault_apply_delay_file = ""   (TEST ONLY, off by default: while this file holds a number of
                                   seconds, a standby pauses that long inside each apply, before
                                   its commit; only the chaos cluster sets it)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.auth import TokenEntry
from shared.config import (
    ConfigError,
    all_token_entries,
    load_toml,
    pick,
    pick_log_file,
    pick_log_level,
    tokens_file,
)
from shared.tls import TLS_KEYS, TlsSettings, parse_tls

LIMIT_MAX = 1_000_000  # sanity bound on every configured count


@dataclass(frozen=True)
class LedgerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8700
    group_commit: bool = True
    commit_batch_max: int = 256
    queue_depth_max: int = 10_000
    body_bytes_max: int = 65_536
    page_limit_max: int = 1000
    batch_actions_max: int = 256
    log_level: str = "info"
    log_file: Path | None = None  # None: stderr
    backend: str = "sqlite"
    postgres_dsn_file: Path | None = None
    postgres_schema: str = "public"
    postgres_pool_size_max: int = 8
    postgres_dsn: str = field(default="", repr=False)  # read from postgres_dsn_file, never from TOML
    synchronous_standby: bool = False
    standby_ack_timeout_s: float = 2.0
    journal_wait_ms_max: int = 5000  # bound of a standby's long poll of GET /v1/journal
    peers: tuple[str, ...] = ()
    peer_check_interval_s: float = 5.0
    peer_check_timeout_s: float = 2.0
    epoch_claim_recheck_s: float = 1.0  # a peer survey is remembered this long for judging epoch claims
    fault_apply_delay_file: Path | None = None  # test-only fault point (see the module docstring)
    tokens: tuple[TokenEntry, ...] = field(default_factory=tuple)
    tls: TlsSettings = field(default_factory=TlsSettings)
    tokens_file: Path | None = None  # more [[tokens]], reloaded with the config's own
    credentials_check_interval_s: float = 2.0
    config_path: Path | None = None  # the file read (None: built in code): its [[tokens]] are reloadable

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ledger.db"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"


_INTS = ("port", "commit_batch_max", "queue_depth_max", "body_bytes_max", "page_limit_max", "batch_actions_max",
         "postgres_pool_size_max", "journal_wait_ms_max")
_SECONDS = ("standby_ack_timeout_s", "peer_check_interval_s", "peer_check_timeout_s", "epoch_claim_recheck_s",
            "credentials_check_interval_s")
SECONDS_MAX = 600.0
BACKENDS = ("sqlite", "postgres")


def _backend(table: dict[str, Any], base: Path) -> dict[str, Any]:
    """`backend` and, for PostgreSQL, its settings with the DSN read from its file."""
    backend = pick(table, "backend", str, "sqlite")
    if backend not in BACKENDS:
        raise ConfigError(f"ledger.backend must be one of {list(BACKENDS)}")
    out: dict[str, Any] = {"backend": backend, "postgres_schema": pick(table, "postgres_schema", str, "public")}
    name = pick(table, "postgres_dsn_file", str, "")
    if backend != "postgres":
        return out
    if not name:
        raise ConfigError('ledger.postgres_dsn_file is required with backend = "postgres"')
    path = (base / name).resolve()
    try:
        dsn = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read ledger.postgres_dsn_file {path}: {e.strerror}") from None
    if not dsn:
        raise ConfigError(f"ledger.postgres_dsn_file {path} is empty")
    return {**out, "postgres_dsn_file": path, "postgres_dsn": dsn}


def _peers(raw: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in raw):
        raise ConfigError("ledger.peers must be a list of http(s) URLs")
    return tuple(u.rstrip("/") for u in raw)


def load_tokens(raw: dict[str, Any], base: Path) -> list[TokenEntry]:
    """The `[[tokens]]` of a ledger config and of its `tokens_file`."""
    table = raw.get("ledger", {})
    return all_token_entries(raw, table if isinstance(table, dict) else {}, base, "ledger")


def reload_tokens(path: Path) -> list[TokenEntry]:
    """The tokens a credential reload applies: re-read from the config file (and its tokens_file)."""
    return load_tokens(load_toml(path), path.resolve().parent)


def parse(raw: dict[str, Any], base: Path) -> LedgerConfig:
    table = raw.get("ledger", {})
    if not isinstance(table, dict):
        raise ConfigError("[ledger] must be a table")
    defaults = LedgerConfig(data_dir=Path("data"))
    not_keys = ("tokens", "postgres_dsn", "tls", "config_path")
    unknown = set(table) - {f for f in LedgerConfig.__dataclass_fields__ if f not in not_keys} - set(TLS_KEYS)
    if unknown:
        raise ConfigError(f"unknown [ledger] keys: {sorted(unknown)}")
    values: dict[str, Any] = {name: pick(table, name, int, getattr(defaults, name)) for name in _INTS}
    for name, value in values.items():
        if not 1 <= value <= (65535 if name == "port" else LIMIT_MAX):
            raise ConfigError(f"ledger.{name} is out of range")
    for name in _SECONDS:
        values[name] = pick(table, name, float, getattr(defaults, name))
        if not 0 < values[name] <= SECONDS_MAX:
            raise ConfigError(f"ledger.{name} must be in (0, {SECONDS_MAX}]")
    data_dir = Path(pick(table, "data_dir", str, "./data"))
    fault_file = pick(table, "fault_apply_delay_file", str, "")
    return LedgerConfig(
        data_dir=data_dir if data_dir.is_absolute() else (base / data_dir).resolve(),
        host=pick(table, "host", str, defaults.host),
        group_commit=pick(table, "group_commit", bool, True),
        synchronous_standby=pick(table, "synchronous_standby", bool, False),
        peers=_peers(pick(table, "peers", list, [])),
        fault_apply_delay_file=(base / fault_file).resolve() if fault_file else None,
        log_level=pick_log_level(table, "ledger"),
        log_file=pick_log_file(table, base, "ledger"),
        tokens=tuple(load_tokens(raw, base)),
        tokens_file=tokens_file(table, base, "ledger"),
        tls=parse_tls(table, base, "ledger"),
        **_backend(table, base),
        **values,
    )


def load(path: Path, *, host: str | None = None, port: int | None = None, data_dir: Path | None = None,
         group_commit: bool | None = None, synchronous_standby: bool | None = None,
         peers: tuple[str, ...] = ()) -> LedgerConfig:
    """Read a config file and apply command-line overrides."""
    config = parse(load_toml(path), path.resolve().parent)
    overrides: dict[str, Any] = {"config_path": path.resolve()}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if data_dir is not None:
        overrides["data_dir"] = data_dir.resolve()
    if group_commit is not None:
        overrides["group_commit"] = group_commit
    if synchronous_standby is not None:
        overrides["synchronous_standby"] = synchronous_standby
    if peers:
        overrides["peers"] = (*config.peers, *_peers(list(peers)))
    return replace(config, **overrides)
