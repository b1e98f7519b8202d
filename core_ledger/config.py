"""The ledger's config: the `[ledger]` table and `[[tokens]]` of a TOML file, validated once.

Every key is described once, in `LEDGER` below (type, default, range, meaning); `docs/CONFIG.md` is generated
from it (`python -m croupier.configdoc`). Paths are relative to the config file. `CROUPIER_LEDGER__<KEY>`
environment variables override the file, and command-line options override both. Every problem of a file is
reported at once (one ConfigError naming them all); unknown keys and tables are refused.

    [ledger]
    port = 8700
    data_dir = "/var/lib/croupier/ledger"
    peers = ["http://127.0.0.1:8701"]   (other ledgers: a primary of a higher epoch there fences this one)
    backup_dir = "/mnt/backups/ledger"  (off the data disk; unset: no backups)
    migrate_on_start = true   (false: a store of an older schema is refused until `croupier ledger migrate` ran)
    tls_cert_file = "certs/ledger.pem"  tls_key_file = "certs/ledger.key"  (HTTPS; shared/tls.py)
    tokens_file = "tokens.toml"   (more [[tokens]]; re-read with the config's own on SIGHUP or a file change)

`reload_tokens` re-reads the `[[tokens]]` (and the `tokens_file`) for a credential reload
(shared/credentials.py), with the same checks as at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.auth import TokenEntry
from shared.config import (
    CREDENTIAL_KEYS,
    LOG_LEVELS,
    ConfigError,
    all_token_entries,
    load_toml,
    pick_log_file,
    raise_problems,
    reload_token_entries,
    tokens_file_path,
)
from shared.configspec import Key, Table, apply_env, check_table
from shared.http_serving import BODY_TIMEOUT_S, CONNECTIONS_MAX, HTTP_KEYS, IDLE_TIMEOUT_S, ConnectionLimits
from shared.tls import TLS_KEYS, TlsSettings, parse_tls
from shared.tracing import tracing_keys

from core_ledger.checkpoints import CheckpointKeyError, load_private_key
from core_ledger.store.held_rows import FLUSH_SECONDS_TARGET, ROWS_FLOOR
from core_ledger.wal_checkpoints import WAL_CHECKPOINT_INTERVAL_S


@dataclass(frozen=True)
class LedgerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8700
    group_commit: bool = True
    commit_batch_max: int = 256
    derived_flush_groups: int = 32
    derived_flush_rows: int = 8_000
    queue_depth_max: int = 10_000
    body_bytes_max: int = 65_536
    http_connections_max: int = CONNECTIONS_MAX
    http_idle_timeout_s: float = IDLE_TIMEOUT_S
    http_body_timeout_s: float = BODY_TIMEOUT_S
    page_limit_max: int = 1000
    batch_actions_max: int = 256
    fronts: int = 0  # processes serving the money routes' HTTP beside this one (core_ledger/fronts.py)
    log_level: str = "info"
    log_file: Path | None = None  # None: stderr
    backend: str = "sqlite"
    postgres_dsn_file: Path | None = None
    postgres_schema: str = "public"
    postgres_pool_size_max: int = 8
    postgres_dsn: str = field(default="", repr=False)  # read from postgres_dsn_file, never from TOML
    writer_lease: bool = False  # one copy of an active/passive pair on one PostgreSQL (core_ledger/lease_keeper.py)
    writer_lease_ttl_s: float = 5.0
    synchronous_standby: bool = False
    standby_ack_timeout_s: float = 2.0
    journal_wait_ms_max: int = 5000  # bound of a standby's long poll of GET /v1/journal
    peers: tuple[str, ...] = ()
    peer_check_interval_s: float = 5.0
    peer_check_timeout_s: float = 2.0
    epoch_claim_recheck_s: float = 1.0  # a peer survey is remembered this long for judging epoch claims
    backup_dir: Path | None = None  # where backups go (off the data disk); None: no backups
    backup_interval_s: float = 0.0  # 0: not scheduled
    backup_keep: int = 7
    liabilities_interval_s: float = 30.0  # sampling period of ledger_liabilities_minor (core_ledger/liabilities.py)
    wal_checkpoint_interval_s: float = WAL_CHECKPOINT_INTERVAL_S  # SQLite (core_ledger/wal_checkpoints.py)
    fault_apply_delay_file: Path | None = None  # test-only fault point (see the module docstring)
    migrate_on_start: bool = True  # migrate an older store at start (false: refuse, run `ledger migrate`)
    tokens: tuple[TokenEntry, ...] = field(default_factory=tuple)
    tls: TlsSettings = field(default_factory=TlsSettings)
    tokens_file: Path | None = None  # more [[tokens]], reloaded with the config's own
    credentials_check_interval_s: float = 2.0
    config_path: Path | None = None  # the file read (None: built in code): its [[tokens]] are reloadable
    tracing_otlp_endpoint: str = ""  # OTLP/HTTP traces URL; empty: tracing off (shared/tracing.py)
    tracing_service_name: str = "croupier-ledger"
    tracing_sample_ratio: float = 1.0
    # Anchored audit and the event stream (core_ledger/checkpoint_jobs.py, core_ledger/events_http.py).
    checkpoint_key_file: Path | None = None  # Ed25519 private key (PEM); None: no checkpoints are signed
    checkpoint_interval_s: float = 60.0
    event_wait_s_max: float = 5.0
    event_consumers_max: int = 32
    webhook_timeout_s: float = 5.0
    webhook_attempts_max: int = 8
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_hosts: tuple[str, ...] = ()  # hosts a webhook_url may name; empty: no webhooks
    # Interrupted rounds (core_ledger/rounds_job.py): open longer than this is stale (0: never).
    stale_round_after_s: float = 0.0
    stale_round_policy: str = "none"  # none | refund | close
    stale_round_check_interval_s: float = 60.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ledger.db"

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.http_connections_max, self.http_idle_timeout_s, self.http_body_timeout_s)

    @property
    def listener_limits(self) -> ConnectionLimits:
        """The limits of this process's own listener. With fronts that is the private socket, which
        takes as many connections as all fronts may relay: a front relays at most one request per
        client connection it holds, so the socket never refuses a relay (the clients are counted,
        and refused, at the fronts)."""
        limits = self.connection_limits
        if not self.fronts:
            return limits
        return replace(limits, connections_max=limits.connections_max * self.fronts)

    @property
    def front_socket(self) -> Path:
        """The private listener a ledger with fronts serves on (its directory is the owner's only)."""
        return self.data_dir / "run" / "ledger.sock"


LIMIT_MAX = 1_000_000  # sanity bound on every configured count
FRONTS_MAX = 16
SECONDS_MAX = 600.0
BACKENDS = ("sqlite", "postgres")
BACKUP_INTERVAL_MAX_S = 7 * 86_400.0


def check_backup_dir(data_dir: Path, backup_dir: Path | None, interval_s: float) -> None:
    """A backup inside the data directory dies with the disk it protects: refused."""
    if backup_dir is None:
        if interval_s:
            raise ConfigError("ledger.backup_interval_s needs ledger.backup_dir")
        return
    if backup_dir.resolve().is_relative_to(data_dir.resolve()):
        raise ConfigError(
            f"ledger.backup_dir {backup_dir} is inside data_dir {data_dir}: put backups off the data disk"
        )


def _backup(values: dict[str, Any], base: Path, problems: list[str]) -> dict[str, Any]:
    interval = values["backup_interval_s"]
    if not (interval == 0 or 1 <= interval <= BACKUP_INTERVAL_MAX_S):
        problems.append(f"ledger.backup_interval_s must be 0 (off) or in [1, {BACKUP_INTERVAL_MAX_S}]")
    name = values["backup_dir"]
    directory = Path(name) if name else None
    if directory is not None and not directory.is_absolute():
        directory = (base / directory).resolve()
    return {"backup_dir": directory, "backup_interval_s": interval, "backup_keep": values["backup_keep"]}


def _count(name: str, default: int, meaning: str) -> Key:
    return Key(name, int, default, meaning, minimum=1, maximum=LIMIT_MAX)


def _seconds(name: str, default: float, meaning: str) -> Key:
    return Key(name, float, default, meaning, above=0, maximum=SECONDS_MAX)


LEDGER = Table(
    "ledger",
    (
        Key("host", str, "127.0.0.1", "Address the HTTP server binds to (`--host` overrides)."),
        Key("port", int, 8700, "TCP port of the HTTP server (`--port` overrides).", minimum=1, maximum=65535),
        Key(
            "data_dir",
            str,
            "./data",
            "Directory of the SQLite database (`ledger.db`) and its backups (`--data-dir` overrides).",
            path=True,
        ),
        Key(
            "group_commit",
            bool,
            True,
            "Commit queued money actions together, one fsync per batch (`--no-group-commit` turns it off).",
        ),
        _count("commit_batch_max", 256, "Money actions committed together at most."),
        Key(
            "derived_flush_groups",
            int,
            32,
            "SQLite: commits whose derived rows (balances, rounds, history) are held in memory behind the "
            "durable journal and written together by the last of them; 1: every commit writes its own. "
            "More: fewer bytes written per bet, a longer commit every so often.",
            minimum=1,
            maximum=1000,
        ),
        Key(
            "derived_flush_rows",
            int,
            8_000,
            "SQLite: derived rows held at most; a commit that would hold more writes them all. It bounds "
            "the longest commit, which every request in flight waits for; fewer are held when the last "
            f"writes of held rows say that many would take over {FLUSH_SECONDS_TARGET * 1000:g} ms "
            f"(never fewer than {ROWS_FLOOR}).",
            minimum=1,
            maximum=1_000_000,
        ),
        _count(
            "queue_depth_max", 10_000, "Money actions waiting for the writer at most; beyond, 503 `ledger_unavailable`."
        ),
        _count("body_bytes_max", 65_536, "Largest request body accepted, in bytes (413 beyond)."),
        *HTTP_KEYS,
        _count("page_limit_max", 1000, "Largest `limit` of a paged read (journal, history)."),
        _count("batch_actions_max", 256, "Money actions in one `POST /v1/batch` at most."),
        Key(
            "fronts",
            int,
            0,
            "Front processes that serve the money routes' HTTP on other cores and hand the commands to "
            "this process, which alone judges and commits them; the ledger then listens on a private socket "
            "in `data_dir` and the fronts on `host`:`port` (other routes are relayed). 0: one process serves all.",
            minimum=0,
            maximum=FRONTS_MAX,
        ),
        Key("log_level", str, "info", "Least severe log level written (any case).", choices=LOG_LEVELS, any_case=True),
        Key("log_file", str, "", "File the JSON log lines are appended to; unset: stderr.", path=True),
        Key(
            "backend",
            str,
            "sqlite",
            "Ledger store: embedded SQLite (WAL, synchronous=FULL) or PostgreSQL.",
            choices=BACKENDS,
        ),
        Key(
            "postgres_dsn_file",
            str,
            "",
            "File holding the PostgreSQL DSN (it holds a password: read, never "
            'logged); required with `backend = "postgres"`.',
            path=True,
        ),
        Key("postgres_schema", str, "public", "PostgreSQL schema of the ledger tables."),
        _count("postgres_pool_size_max", 8, "PostgreSQL connections at most."),
        Key(
            "writer_lease",
            bool,
            False,
            "One copy of an active/passive pair on one PostgreSQL: it writes only while "
            "it holds the writer lease (an advisory lock); the other copy waits (503 `not_primary`, /readyz 503) and "
            'takes over when the lease is released. PostgreSQL only (refused with `backend = "sqlite"`).',
        ),
        Key(
            "writer_lease_ttl_s",
            float,
            5.0,
            "How long the lease's database session may stay silent before "
            "PostgreSQL ends it and the other copy takes over (an active cut off from the database); the holder "
            "proves it every quarter of this and stops writing when a proof fails.",
            minimum=1,
            maximum=SECONDS_MAX,
        ),
        Key(
            "synchronous_standby",
            bool,
            False,
            "Answer a commit only once a standby has applied it (`--synchronous-standby` turns it on).",
        ),
        _seconds(
            "standby_ack_timeout_s",
            2.0,
            "How long a commit waits for the standby's acknowledgement before 503 `standby_unavailable`.",
        ),
        _count("journal_wait_ms_max", 5000, "Longest wait of a standby's long poll of `GET /v1/journal`, in ms."),
        Key(
            "peers",
            list,
            [],
            "Other ledgers (http(s) URLs): a primary of a higher epoch there fences this one "
            "(`--peer-ledger` adds more).",
            items="URLs",
        ),
        _seconds("peer_check_interval_s", 5.0, "How often the peers are asked for their epoch."),
        _seconds("peer_check_timeout_s", 2.0, "Timeout of one peer check."),
        _seconds(
            "epoch_claim_recheck_s",
            1.0,
            "A caller's epoch claim that the peers refuted is refuted again without asking for this long.",
        ),
        Key(
            "backup_dir",
            str,
            "",
            "Directory backups are written to, off the data disk (refused inside "
            "`data_dir`); unset: `POST /admin/v1/backups` answers 409 and nothing is scheduled.",
            path=True,
        ),
        Key(
            "backup_interval_s",
            float,
            0.0,
            "Seconds between scheduled backups (0: none; else at least 1).",
            minimum=0,
            maximum=BACKUP_INTERVAL_MAX_S,
        ),
        _count("backup_keep", 7, "Finished backups kept in `backup_dir`; older ones are deleted."),
        Key(
            "liabilities_interval_s",
            float,
            30.0,
            "How often `ledger_liabilities_minor` is sampled from the system accounts and jackpot pools.",
            above=0,
            maximum=600,
        ),
        Key(
            "wal_checkpoint_interval_s",
            float,
            WAL_CHECKPOINT_INTERVAL_S,
            "SQLite: seconds between checkpoints of the write-ahead log into the database file, run "
            "beside the writer instead of inside its commits; 0: the writer checkpoints inside its commits "
            "(SQLite's own way).",
            minimum=0,
            maximum=60,
        ),
        Key(
            "migrate_on_start",
            bool,
            True,
            "Migrate a store of an older schema version at start; false: refuse "
            "the start until `croupier ledger migrate` ran (a new store is always created).",
        ),
        Key(
            "fault_apply_delay_file",
            str,
            "",
            "TEST ONLY, unset in production: while this file holds a number of "
            "seconds, a standby pauses that long inside each apply (the chaos cluster sets it).",
            path=True,
        ),
        Key(
            "checkpoint_key_file",
            str,
            "",
            "Ed25519 private key (PEM, PKCS#8, mode 600: refused when group or "
            "others may read it) that signs checkpoints of the journal's head (`croupier ledger keygen` makes one); "
            "unset: no checkpoints.",
            path=True,
        ),
        Key(
            "checkpoint_interval_s",
            float,
            60.0,
            "Seconds between signed checkpoints of the acknowledged head.",
            minimum=1,
            maximum=86_400,
        ),
        Key(
            "event_wait_s_max",
            float,
            5.0,
            "Longest long-poll wait (`wait_s`) of `GET /v1/events`, in seconds.",
            minimum=0,
            maximum=SECONDS_MAX,
        ),
        Key(
            "event_consumers_max",
            int,
            32,
            "Named event consumers at most (each is one `ledger_event_consumer_lag_entries` series).",
            minimum=1,
            maximum=1000,
        ),
        _seconds("webhook_timeout_s", 5.0, "Timeout of one webhook delivery (a POST of a page of events)."),
        Key(
            "webhook_attempts_max",
            int,
            8,
            "Attempts of one webhook page before it goes to the consumer's dead-letter list (an operator replays it).",
            minimum=1,
            maximum=100,
        ),
        Key(
            "webhook_backoff_base_s",
            float,
            1.0,
            "First retry delay of a failed webhook delivery; it doubles per "
            "attempt (full jitter) up to `webhook_backoff_max_s`.",
            above=0,
            maximum=3600,
        ),
        Key(
            "webhook_backoff_max_s",
            float,
            300.0,
            "Longest retry delay of a failed webhook delivery.",
            above=0,
            maximum=86_400,
        ),
        Key(
            "webhook_hosts",
            list,
            [],
            "Host names (or IP addresses) a consumer's `webhook_url` may name; empty: "
            "webhooks are refused. The ledger POSTs to them, so list only your receivers.",
            items="host names",
        ),
        Key(
            "stale_round_after_s",
            float,
            0.0,
            "A round open (bets, not closed, not refunded) longer than this many "
            "seconds is stale: listed at `GET /admin/v1/stale-rounds`, counted in `ledger_stale_rounds` and settled by "
            "`stale_round_policy`; 0: rounds are never stale.",
            minimum=0,
            maximum=30 * 86_400,
        ),
        Key(
            "stale_round_policy",
            str,
            "none",
            "What the ledger does with a stale round: `none` (list and count it), "
            "`refund` (give its bets back; a round with a win is closed instead) or `close` (close it as played).",
            choices=("none", "refund", "close"),
        ),
        Key(
            "stale_round_check_interval_s",
            float,
            60.0,
            "How often stale rounds are counted and settled.",
            above=0,
            maximum=86_400,
        ),
        *tracing_keys("croupier-ledger"),
        *TLS_KEYS,
        *CREDENTIAL_KEYS,
    ),
    "The core ledger: `croupier ledger serve --config FILE`.",
)

TOP_LEVEL = frozenset({"ledger", "tokens"})


def _backend(values: dict[str, Any], base: Path, problems: list[str]) -> dict[str, Any]:
    """`backend` and, for PostgreSQL, its settings with the DSN read from its file."""
    out: dict[str, Any] = {"backend": values["backend"], "postgres_schema": values["postgres_schema"]}
    name = values["postgres_dsn_file"]
    if values["writer_lease"] and values["backend"] != "postgres":
        problems.append(
            'ledger.writer_lease needs backend = "postgres" (the pair shares one PostgreSQL; '
            "a SQLite ledger has one writer by construction)"
        )
    if values["backend"] != "postgres":
        return out
    if not name:
        problems.append('ledger.postgres_dsn_file is required with backend = "postgres"')
        return out
    path = (base / name).resolve()
    try:
        dsn = path.read_text().strip()
    except OSError as e:
        problems.append(f"cannot read ledger.postgres_dsn_file {path}: {e.strerror}")
        return out
    if not dsn:
        problems.append(f"ledger.postgres_dsn_file {path} is empty")
        return out
    return {**out, "postgres_dsn_file": path, "postgres_dsn": dsn}


def _checkpoint_key(name: str, base: Path, problems: list[str]) -> Path | None:
    """The checkpoint signing key's path, checked now (readable, Ed25519, not shared with others)."""
    if not name:
        return None
    path = (base / name).resolve()
    try:
        load_private_key(path)
    except CheckpointKeyError as e:
        problems.append(f"ledger.checkpoint_key_file: {e}")
    return path


def _webhook_hosts(raw: list[Any], problems: list[str]) -> tuple[str, ...]:
    """Host names as `urlsplit(url).hostname` gives them (lower case, IPv6 without brackets)."""
    if not all(isinstance(h, str) and h.strip("[]") and not any(c in h for c in "/@ \t") for h in raw):
        problems.append("ledger.webhook_hosts must be a list of host names or IP addresses (no scheme or path)")
        return ()
    return tuple(h.lower().strip("[]") for h in raw)


def _peers(raw: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in raw):
        raise ConfigError("ledger.peers must be a list of http(s) URLs")
    return tuple(u.rstrip("/") for u in raw)


def parse(raw: dict[str, Any], base: Path, environ: Mapping[str, str] | None = None) -> LedgerConfig:
    """Check the whole file (and the `CROUPIER_LEDGER__*` variables of `environ`, which win over it); a
    ConfigError names every problem found."""
    problems: list[str] = []
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        problems.append(f"unknown top-level keys or tables: {unknown} (known: {sorted(TOP_LEVEL)})")
    table = raw.get("ledger", {})
    if not isinstance(table, dict):
        problems.append("[ledger] must be a table")
        table = {}
    merged, sources = apply_env(table, LEDGER, environ or {}, problems)
    values = check_table(merged, LEDGER, problems, sources=sources)
    peers: tuple[str, ...] = ()
    try:
        peers = _peers(values["peers"])
    except ConfigError as e:
        problems.extend(e.problems)
    log_file = None
    try:
        log_file = pick_log_file(values, base, "ledger")
    except ConfigError as e:
        problems.extend(e.problems)
    backend = _backend(values, base, problems)
    tls = parse_tls(values, base, "ledger", problems, sources)
    tokens_file = tokens_file_path(values["tokens_file"], base)
    tokens = all_token_entries(raw.get("tokens", []), tokens_file, base, "ledger", problems)
    backups = _backup(values, base, problems)
    checkpoint_key = _checkpoint_key(values["checkpoint_key_file"], base, problems)
    webhook_hosts = _webhook_hosts(values["webhook_hosts"], problems)
    raise_problems(problems)
    data_dir = Path(values["data_dir"])
    fault_file = values["fault_apply_delay_file"]
    plain = {k.name: values[k.name] for k in LEDGER.keys if k.name not in _DERIVED}
    return LedgerConfig(
        **plain,
        data_dir=data_dir if data_dir.is_absolute() else (base / data_dir).resolve(),
        peers=peers,
        fault_apply_delay_file=(base / fault_file).resolve() if fault_file else None,
        log_file=log_file,
        tokens=tuple(tokens),
        tls=tls,
        tokens_file=tokens_file,
        **backend,
        **backups,
        checkpoint_key_file=checkpoint_key,
        webhook_hosts=webhook_hosts,
    )


# Keys whose LedgerConfig value is derived from the file's (paths resolved, DSN read, URLs normalised).
_DERIVED = frozenset(
    {
        "data_dir",
        "peers",
        "fault_apply_delay_file",
        "log_file",
        "backend",
        "postgres_schema",
        "postgres_dsn_file",
        "backup_dir",
        "backup_interval_s",
        "backup_keep",
        "tokens_file",
        "checkpoint_key_file",
        "webhook_hosts",
        *(k.name for k in TLS_KEYS),
    }
)


def reload_tokens(path: Path, environ: Mapping[str, str] | None = None) -> list[TokenEntry]:
    """The tokens a credential reload applies: re-read from the config file (and its tokens_file), checked as at
    start-up; a ConfigError names every problem."""
    return reload_token_entries(path, LEDGER, os.environ if environ is None else environ)


def load(
    path: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
    group_commit: bool | None = None,
    synchronous_standby: bool | None = None,
    peers: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> LedgerConfig:
    """Read a config file, lay the `CROUPIER_LEDGER__*` environment variables over it (`environ`, default the
    process's), then apply command-line overrides."""
    config = parse(load_toml(path), path.resolve().parent, os.environ if environ is None else environ)
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
    config = replace(config, **overrides)
    check_backup_dir(config.data_dir, config.backup_dir, config.backup_interval_s)
    check_front_socket(config)
    return config


UNIX_PATH_BYTES_MAX = 107  # sun_path holds 108 bytes with its terminating NUL


def check_front_socket(config: LedgerConfig) -> None:
    """With fronts, the private socket's path must fit a Unix socket address."""
    if config.fronts and len(os.fsencode(config.front_socket)) > UNIX_PATH_BYTES_MAX:
        raise ConfigError(
            f"ledger.fronts: the private socket {config.front_socket} is longer than {UNIX_PATH_BYTES_MAX} bytes: "
            "use a shorter data_dir"
        )
