"""Edge configuration: the `[edge]` table and `[[tokens]]` of a TOML file, validated once in main.

Paths (`data_dir`, token files) are relative to the config file. `ledger_url` names one ledger;
`ledger_urls = [primary, standby, ...]` names every copy the client may fail over to (either key). The clear tokens
the edge presents (to the ledger, to peers) are read from files; the tokens it accepts are sha256 digests.

Peer credentials are per edge: `peer_token_file` is this edge's own credential, and every
`[[tokens]]` entry of role `peer` must be named after a configured peer (its edge id), so the
credential a websocket presents says which edge it is (see `edge.sync`). `crdt_client_id` is
accepted for old config files and ignored: CRDT client ids derive from the edge id (`edge.crdt.identity`).

Every key is described once, in `EDGE` and `PEERS` below (type, default, range, meaning); `docs/CONFIG.md` is
generated from them (`python -m croupier.configdoc`). `CROUPIER_EDGE__<KEY>` environment variables override the
file (`--host`/`--port` override both). Every problem of a file is reported at once; unknown keys are refused.

`migrate_on_start` (default true): an `edge.db` of an older schema version is migrated at start;
false refuses the start until `croupier edge migrate` ran (a new store is always created).

TLS (`tls_cert_file`, `tls_key_file`, `tls_client_ca_file`, `tls_ca_file`: shared/tls.py) serves
HTTPS and verifies the ledger and peers behind `https://`/`wss://` URLs. Credentials are reloaded
without a restart (shared/credentials.py): the `[[tokens]]` of this file and of an optional
`tokens_file`, and the clear tokens of `ledger_token_file` and `peer_token_file`, on SIGHUP or when
one of these files changes (checked every `credentials_check_interval_s`, default 2); `reload_tokens`
re-reads the accepted ones with the checks of a start.
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
from shared.ids import is_id
from shared.tls import TLS_KEYS, TlsSettings, parse_tls
from shared.tracing import tracing_keys

from edge.crdt.identity import check_distinct_tags

ACCEPTED_ROLES = frozenset({"game_server", "peer", "metrics"})


@dataclass(frozen=True)
class Peer:
    id: str
    url: str


@dataclass(frozen=True)
class Limits:
    """Named bounds of everything the edge queues, batches, retries or keeps."""

    ledger_connections_max: int = 32
    ledger_batch_max: int = 256  # money actions per POST /v1/batch (the ledger's batch_actions_max)
    ledger_batch_bytes_max: int = 60_000  # under the ledger's body_bytes_max (65536)
    ledger_batches_in_flight_max: int = 2  # few, large batches: fewer ledger requests per bet
    ledger_queue_max: int = 10_000  # money actions waiting for a batch
    ledger_queue_per_client_max: int = 2_500  # of them, one client's at most (one cannot starve the others)
    ledger_retry_backoff_s: float = 0.05  # first retry delay, doubled per attempt, within the deadline
    breaker_failures: int = 5  # consecutive failed attempts that open the circuit
    breaker_open_s: float = 2.0
    reachable_window_s: float = 10.0  # /readyz: the ledger answered within this window
    docs_live_max: int = 4096
    # At most one live-push frame per peer this often: what queues in between shares a frame
    # (docs/decisions/live-pushes-paced-per-link.md). 0: a frame per loop turn.
    sync_push_interval_s: float = 0.005
    sync_queue_max: int = 20_000  # live updates waiting for one peer
    anti_entropy_interval_s: float = 1.0
    anti_entropy_sweep_docs: int = 1024  # documents a round re-advertises beyond the changed ones (backstop)
    anti_entropy_catch_up_docs: int = 65_536  # per round in the first sweep after start (peer may lack them)
    anti_entropy_sweep_period_s: float = 60.0  # a backstop sweep over every document takes at least this long
    anti_entropy_wait_until_quiet: bool = True  # advertise a change the peer may lack once its document is quiet
    reconnect_backoff_s: float = 0.1
    reconnect_backoff_max_s: float = 0.5  # bounds the time to resync after a peer comes back
    sync_heartbeat_s: float = 5.0
    reconcile_interval_s: float = 1.0  # repairs a crash's lost effects within about this
    reconcile_keys_per_round_max: int = 200
    session_games_max: int = 64  # games listed per player and game server
    jackpots_list_max: int = 1000
    # Quotas on what peers may make this edge store (over quota: refused, counted, alerted).
    sync_doc_bytes_max: int = 256 * 1024  # encoded size of one CRDT document after a peer's update
    sync_peer_bytes_per_s: int = 256 * 1024  # sustained bytes of accepted updates per peer link
    sync_peer_bytes_burst: int = 4 * 1024 * 1024  # a peer's bucket: catch-up after a partition
    jackpot_lookup_interval_s: float = 1.0  # a jackpot id is asked of the ledger at most this often
    background_failures_unready: int = 5  # consecutive failures of one background task that turn /readyz red


@dataclass(frozen=True)
class EdgeConfig:
    id: str
    crdt_client_id: int  # legacy, ignored: see edge.crdt.identity
    host: str
    port: int
    data_dir: Path
    ledger_url: str
    ledger_token: str
    peer_token: str
    ledger_attempt_timeout_s: float
    ledger_deadline_s: float
    body_bytes_max: int
    session_state_bytes_max: int
    log_level: str
    peers: tuple[Peer, ...]
    tokens: tuple[TokenEntry, ...]
    limits: Limits = Limits()
    ledger_urls: tuple[str, ...] = ()  # failover order; empty: just ledger_url
    log_file: Path | None = None  # JSON log lines appended there; None: stderr
    migrate_on_start: bool = True  # migrate an older edge.db at start (false: refuse, run `edge migrate`)
    tls: TlsSettings = field(default_factory=TlsSettings)
    ledger_token_file: Path | None = None  # re-read on a credential reload (None: ledger_token is fixed)
    peer_token_file: Path | None = None
    tokens_file: Path | None = None  # more [[tokens]], reloaded with the config's own
    credentials_check_interval_s: float = 2.0
    config_path: Path | None = None  # the file read (None: built in code): its [[tokens]] are reloadable
    tracing_otlp_endpoint: str = ""  # OTLP/HTTP traces URL; empty: tracing off (shared/tracing.py)
    tracing_service_name: str = ""  # empty: croupier-edge-<id> (see `trace_service_name`)
    tracing_sample_ratio: float = 1.0
    http_connections_max: int = CONNECTIONS_MAX
    http_idle_timeout_s: float = IDLE_TIMEOUT_S
    http_body_timeout_s: float = BODY_TIMEOUT_S

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.http_connections_max, self.http_idle_timeout_s, self.http_body_timeout_s)

    @property
    def trace_service_name(self) -> str:
        return self.tracing_service_name or f"croupier-edge-{self.id}"

    @property
    def ledger_endpoints(self) -> tuple[str, ...]:
        return self.ledger_urls or (self.ledger_url,)


BYTES_MAX = 16 << 20  # bound of the body sizes
SECONDS_MAX = 60.0  # bound of the ledger timeouts
LEDGER_URLS_MAX = 8
QUOTA_KEYS = ("sync_doc_bytes_max", "sync_peer_bytes_per_s", "sync_peer_bytes_burst")
_LIMITS = Limits()

EDGE = Table(
    "edge",
    (
        Key(
            "id",
            str,
            None,
            "This edge's id (e.g. `eu`): named in its peers' configs and credentials; CRDT client ids derive from it.",
            required=True,
        ),
        Key(
            "crdt_client_id",
            int,
            1,
            "Legacy, ignored (CRDT client ids derive from `id`); accepted for old files.",
            minimum=1,
            maximum=1000,
        ),
        Key("host", str, "127.0.0.1", "Address the HTTP server binds to (`--host` overrides)."),
        Key("port", int, 8801, "TCP port of the HTTP server (`--port` overrides).", minimum=1, maximum=65535),
        Key("data_dir", str, None, "Directory of the edge's SQLite state; unset: `./<id>`.", path=True),
        Key("ledger_url", str, "", "The ledger's URL; with `ledger_urls`, it must be the first of them."),
        Key(
            "ledger_urls",
            list,
            [],
            f"Every ledger copy in failover order (primary, standby, ...), at most "
            f"{LEDGER_URLS_MAX}; `ledger_url` or `ledger_urls` is required.",
            items="URLs",
        ),
        Key(
            "ledger_token_file",
            str,
            None,
            "File holding this edge's clear `edge` token of the ledger.",
            path=True,
            required=True,
        ),
        Key(
            "peer_token_file",
            str,
            None,
            "File holding this edge's own clear `peer` token (named after `id`), presented to its peers.",
            path=True,
            required=True,
        ),
        Key(
            "ledger_attempt_timeout_s",
            float,
            1.0,
            "Timeout of one request to the ledger; at most `ledger_deadline_s`.",
            above=0,
            maximum=SECONDS_MAX,
        ),
        Key(
            "ledger_deadline_s",
            float,
            3.0,
            "Time a money action may take in all, retries included.",
            above=0,
            maximum=SECONDS_MAX,
        ),
        Key(
            "body_bytes_max",
            int,
            65536,
            "Largest request body accepted, in bytes (413 beyond).",
            minimum=1024,
            maximum=BYTES_MAX,
        ),
        *HTTP_KEYS,
        Key(
            "session_state_bytes_max",
            int,
            16384,
            "Largest game-session state, in bytes; at most `body_bytes_max`.",
            minimum=1024,
            maximum=BYTES_MAX,
        ),
        Key("log_level", str, "info", "Least severe log level written (any case).", choices=LOG_LEVELS, any_case=True),
        Key("log_file", str, "", "File the JSON log lines are appended to; unset: stderr.", path=True),
        Key(
            "migrate_on_start",
            bool,
            True,
            "Migrate an `edge.db` of an older schema version at start; false: refuse "
            "the start until `croupier edge migrate` ran (a new store is always created).",
        ),
        Key(
            "sync_doc_bytes_max",
            int,
            _LIMITS.sync_doc_bytes_max,
            "Encoded size of one CRDT document after a peer's update, at most (over: refused and counted).",
            minimum=1024,
        ),
        Key(
            "sync_peer_bytes_per_s",
            int,
            _LIMITS.sync_peer_bytes_per_s,
            "Sustained bytes of accepted updates per peer link.",
            minimum=1024,
        ),
        Key(
            "sync_peer_bytes_burst",
            int,
            _LIMITS.sync_peer_bytes_burst,
            "A peer's byte bucket (catch-up after a partition); at least `sync_doc_bytes_max`.",
            minimum=1024,
        ),
        Key("peers", list, [], "The other edges: `[[edge.peers]]` tables (see below).", items="tables"),
        *tracing_keys("", "`croupier-edge-<id>`"),
        *TLS_KEYS,
        *CREDENTIAL_KEYS,
    ),
    "A regional edge node: `croupier edge serve --config FILE`.",
)

PEERS = Table(
    "edge.peers",
    (
        Key(
            "id",
            str,
            None,
            "The peer edge's id (its `[edge] id`); a `[[tokens]]` entry of role `peer` with this "
            "name is the credential it syncs with.",
            required=True,
        ),
        Key(
            "url",
            str,
            None,
            "The peer edge's base URL, `http(s)://` or `ws(s)://` (`/v1/sync` is appended).",
            required=True,
        ),
    ),
    "One table per other edge this edge syncs with.",
    array=True,
)

TOP_LEVEL = frozenset({"edge", "tokens"})
PEER_URL_SCHEMES = ("http://", "https://", "ws://", "wss://")
LEDGER_URL_SCHEMES = ("http://", "https://")


def _secret_path(base: Path, rel: Any) -> Path | None:
    return (base / rel).resolve() if isinstance(rel, str) else None


def _read_secret(base: Path, rel: Any, key: str, problems: list[str]) -> str:
    if not isinstance(rel, str):
        return ""  # missing or not a string: already a problem
    try:
        secret = (base / rel).read_text().strip()
    except OSError as e:
        problems.append(f"edge.{key}: cannot read {rel}: {e.strerror}")
        return ""
    if not secret:
        problems.append(f"edge.{key}: {rel} is empty")
    return secret


def _peers(raw: Any, own_id: str | None, problems: list[str]) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    if not isinstance(raw, list):
        raw = []  # not a list: already a problem
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            problems.append(f"edge.peers[{i}] needs an id and a url")
            continue
        before = len(problems)
        values = check_table(p, PEERS, problems, where=f"edge.peers[{i}]")
        if len(problems) > before:
            continue
        if not is_id(values["id"]):
            problems.append(f"edge.peers[{i}] needs an id and a url")
        elif values["id"] == own_id or any(q.id == values["id"] for q in peers):
            problems.append(f"edge.peers[{i}].id {values['id']!r} is this edge or repeated")
        elif not values["url"].startswith(PEER_URL_SCHEMES):
            problems.append(f"edge.peers[{i}].url must start with http://, https://, ws:// or wss://")
        else:
            peers.append(Peer(values["id"], values["url"].rstrip("/")))
    return tuple(peers)


def _check_peer_tokens(tokens: list[TokenEntry], peers: tuple[Peer, ...], problems: list[str]) -> None:
    """A peer credential is named after the edge that holds it: that name is the only edge id its
    holder may claim on the sync link."""
    peer_ids = {p.id for p in peers}
    for t in tokens:
        if t.role == "peer" and t.name not in peer_ids:
            problems.append(
                f"tokens: the peer credential {t.name!r} must be named after a configured peer "
                f"(one of {sorted(peer_ids)}): one credential per edge"
            )
        if t.role == "game_server" and not is_id(t.name):
            # Its name is the `client_id` of its money (which the ledger takes only as an id) and a
            # part of its saved games' document names (which peers take only as an id).
            problems.append(
                f"tokens: the game-server credential {t.name[:40]!r} must be named as an id "
                "(1 to 128 of A-Z a-z 0-9 . _ : -)"
            )


def _limits(values: dict[str, Any], problems: list[str]) -> Limits:
    """Defaults, with the quota keys of `[edge]` when given."""
    quotas = {k: values[k] for k in QUOTA_KEYS}
    if any(v < 1024 for v in quotas.values()) or quotas["sync_peer_bytes_burst"] < quotas["sync_doc_bytes_max"]:
        problems.append("need every sync quota >= 1024 bytes and sync_peer_bytes_burst >= sync_doc_bytes_max")
    return replace(_LIMITS, **quotas)


def _ledger_urls(values: dict[str, Any], problems: list[str]) -> tuple[str, ...]:
    """`ledger_urls`, or the single `ledger_url`; with both, `ledger_url` must come first."""
    single = values["ledger_url"].rstrip("/")
    raw = values["ledger_urls"]
    if not all(isinstance(u, str) and u for u in raw) or len(raw) > LEDGER_URLS_MAX:
        problems.append(f"edge.ledger_urls must be a list of at most {LEDGER_URLS_MAX} URLs")
        return (single,)
    urls = tuple(u.rstrip("/") for u in raw) or ((single,) if single else ())
    if not urls:
        problems.append("edge.ledger_url or edge.ledger_urls is required")
        return ("",)
    if not all(u.startswith(LEDGER_URL_SCHEMES) for u in urls):
        problems.append("edge.ledger_url(s) must start with http:// or https://")
    if single and single != urls[0]:
        problems.append("edge.ledger_url must be the first of edge.ledger_urls")
    return urls


def _accepted_tokens(tokens: list[TokenEntry], peers: tuple[Peer, ...], problems: list[str]) -> None:
    if any(t.role not in ACCEPTED_ROLES for t in tokens):
        problems.append(f"edge tokens admit only the roles {sorted(ACCEPTED_ROLES)}")
    _check_peer_tokens(tokens, peers, problems)


def reload_tokens(path: Path, peers: tuple[Peer, ...], environ: Mapping[str, str] | None = None) -> list[TokenEntry]:
    """The tokens a credential reload applies, checked as at start-up against the running peers; a ConfigError
    names every problem."""
    tokens = reload_token_entries(path, EDGE, os.environ if environ is None else environ)
    problems: list[str] = []
    _accepted_tokens(tokens, peers, problems)
    raise_problems(problems)
    return tokens


def load(path: Path, environ: Mapping[str, str] | None = None) -> EdgeConfig:
    """Read a config file with the `CROUPIER_EDGE__*` environment variables of `environ` (default: the
    process's) laid over it; a ConfigError names every problem found."""
    config = parse(load_toml(path), path.resolve().parent, os.environ if environ is None else environ)
    return replace(config, config_path=path.resolve())


def parse(raw: dict[str, Any], base: Path, environ: Mapping[str, str] | None = None) -> EdgeConfig:
    problems: list[str] = []
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        problems.append(f"unknown top-level keys or tables: {unknown} (known: {sorted(TOP_LEVEL)})")
    edge = raw.get("edge")
    if not isinstance(edge, dict):
        raise ConfigError(*problems, "the [edge] table is required")
    merged, sources = apply_env(edge, EDGE, environ or {}, problems)
    values = check_table(merged, EDGE, problems, sources=sources)
    edge_id = values["id"]
    if edge_id is not None and (not is_id(edge_id) or "/" in edge_id):
        problems.append("edge.id must be an id")
        edge_id = None
    tokens_file = tokens_file_path(values["tokens_file"], base)
    tokens = all_token_entries(raw.get("tokens", []), tokens_file, base, "edge", problems)
    peers = _peers(values["peers"], edge_id, problems)
    _accepted_tokens(tokens, peers, problems)
    if edge_id is not None:
        try:
            check_distinct_tags((edge_id, *(p.id for p in peers)))
        except ValueError as e:
            problems.append(f"edge.peers: {e}")
    ledger_urls = _ledger_urls(values, problems)
    log_file = None
    try:
        log_file = pick_log_file(values, base, "edge")
    except ConfigError as e:
        problems.extend(e.problems)
    if not values["ledger_attempt_timeout_s"] <= values["ledger_deadline_s"]:
        problems.append("need 0 < ledger_attempt_timeout_s <= ledger_deadline_s <= 60")
    if not values["session_state_bytes_max"] <= values["body_bytes_max"]:
        problems.append("need 1024 <= session_state_bytes_max <= body_bytes_max <= 16 MiB")
    limits = _limits(values, problems)
    ledger_token = _read_secret(base, values["ledger_token_file"], "ledger_token_file", problems)
    peer_token = _read_secret(base, values["peer_token_file"], "peer_token_file", problems)
    tls = parse_tls(values, base, "edge", problems, sources)
    raise_problems(problems)
    assert edge_id is not None  # else a problem was raised above
    return EdgeConfig(
        id=edge_id,
        crdt_client_id=values["crdt_client_id"],
        host=values["host"],
        port=values["port"],
        data_dir=base / (values["data_dir"] or f"./{edge_id}"),
        ledger_url=ledger_urls[0],
        ledger_urls=ledger_urls,
        ledger_token=ledger_token,
        peer_token=peer_token,
        ledger_attempt_timeout_s=values["ledger_attempt_timeout_s"],
        ledger_deadline_s=values["ledger_deadline_s"],
        body_bytes_max=values["body_bytes_max"],
        session_state_bytes_max=values["session_state_bytes_max"],
        log_level=values["log_level"],
        log_file=log_file,
        peers=peers,
        tokens=tuple(tokens),
        limits=limits,
        migrate_on_start=values["migrate_on_start"],
        tls=tls,
        ledger_token_file=_secret_path(base, values["ledger_token_file"]),
        peer_token_file=_secret_path(base, values["peer_token_file"]),
        tokens_file=tokens_file,
        credentials_check_interval_s=values["credentials_check_interval_s"],
        tracing_otlp_endpoint=values["tracing_otlp_endpoint"],
        tracing_service_name=values["tracing_service_name"],
        tracing_sample_ratio=values["tracing_sample_ratio"],
        http_connections_max=values["http_connections_max"],
        http_idle_timeout_s=values["http_idle_timeout_s"],
        http_body_timeout_s=values["http_body_timeout_s"],
    )
