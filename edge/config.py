"""Edge configuration: the `[edge]` table and `[[tokens]]` of a TOML file, validated once in main.

Paths (`data_dir`, token files) are relative to the config file. `ledger_url` names one ledger;
`ledger_urls = [primary, standby, ...]` names every copy the client may fail over to (either key). The clear tokens
the edge presents (to the ledger, to peers) are read from files; the tokens it accepts are sha256 digests.

Peer credentials are per edge: `peer_token_file` is this edge's own credential, and every
`[[tokens]]` entry of role `peer` must be named after a configured peer (its edge id), so the
credential a websocket presents says which edge it is (see `edge.sync`). `crdt_client_id` is
accepted for old config files and ignored: CRDT client ids derive from the edge id (`edge.crdt.identity`).

TLS (`tls_cert_file`, `tls_key_file`, `tls_client_ca_file`, `tls_ca_file`: shared/tls.py) serves
HTTPS and verifies the ledger and peers behind `https://`/`wss://` URLs. Credentials are reloaded
without a restart (shared/credentials.py): the `[[tokens]]` of this file and of an optional
`tokens_file`, and the clear tokens of `ledger_token_file` and `peer_token_file`, on SIGHUP or when
one of these files changes (checked every `credentials_check_interval_s`, default 2).
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
from shared.ids import is_id
from shared.tls import TlsSettings, parse_tls

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
    ledger_retry_backoff_s: float = 0.05  # first retry delay, doubled per attempt, within the deadline
    breaker_failures: int = 5  # consecutive failed attempts that open the circuit
    breaker_open_s: float = 2.0
    reachable_window_s: float = 10.0  # /readyz: the ledger answered within this window
    docs_live_max: int = 4096
    sync_push_interval_s: float = 0.0  # extra wait to batch live updates (0: one loop turn)
    sync_queue_max: int = 20_000  # live updates waiting for one peer
    anti_entropy_interval_s: float = 1.0
    reconnect_backoff_s: float = 0.1
    reconnect_backoff_max_s: float = 0.5  # bounds the time to resync after a peer comes back
    sync_heartbeat_s: float = 5.0
    reconcile_interval_s: float = 1.0  # repairs a crash's lost effects within about this
    reconcile_keys_per_round_max: int = 200
    session_games_max: int = 64  # games listed per player
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
    tls: TlsSettings = field(default_factory=TlsSettings)
    ledger_token_file: Path | None = None  # re-read on a credential reload (None: ledger_token is fixed)
    peer_token_file: Path | None = None
    tokens_file: Path | None = None  # more [[tokens]], reloaded with the config's own
    credentials_check_interval_s: float = 2.0
    config_path: Path | None = None  # the file read (None: built in code): its [[tokens]] are reloadable

    @property
    def ledger_endpoints(self) -> tuple[str, ...]:
        return self.ledger_urls or (self.ledger_url,)


def _secret_path(base: Path, raw: dict[str, Any], key: str) -> Path:
    return (base / pick(raw, key, str, None)).resolve()


def _read_secret(base: Path, raw: dict[str, Any], key: str) -> str:
    rel = pick(raw, key, str, None)
    try:
        secret = (base / rel).read_text().strip()
    except OSError as e:
        raise ConfigError(f"edge.{key}: cannot read {rel}: {e}") from None
    if not secret:
        raise ConfigError(f"edge.{key}: {rel} is empty")
    return secret


def _peers(raw: list[Any], own_id: str) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    for i, p in enumerate(raw):
        if not isinstance(p, dict) or not is_id(p.get("id")) or not isinstance(p.get("url"), str):
            raise ConfigError(f"edge.peers[{i}] needs an id and a url")
        if p["id"] == own_id or any(q.id == p["id"] for q in peers):
            raise ConfigError(f"edge.peers[{i}].id {p['id']!r} is this edge or repeated")
        if not p["url"].startswith(("http://", "https://", "ws://", "wss://")):
            raise ConfigError(f"edge.peers[{i}].url must start with http://, https://, ws:// or wss://")
        peers.append(Peer(p["id"], p["url"].rstrip("/")))
    return tuple(peers)


def _check_peer_tokens(tokens: list[TokenEntry], peers: tuple[Peer, ...]) -> None:
    """A peer credential is named after the edge that holds it: that name is the only edge id its
    holder may claim on the sync link."""
    peer_ids = {p.id for p in peers}
    for t in tokens:
        if t.role == "peer" and t.name not in peer_ids:
            raise ConfigError(f"tokens: the peer credential {t.name!r} must be named after a configured peer "
                              f"(one of {sorted(peer_ids)}): one credential per edge")


QUOTA_KEYS = ("sync_doc_bytes_max", "sync_peer_bytes_per_s", "sync_peer_bytes_burst")


def _limits(edge: dict[str, Any]) -> Limits:
    """Defaults, with the quota keys of `[edge]` when given."""
    defaults = Limits()
    values = {k: pick(edge, k, int, getattr(defaults, k)) for k in QUOTA_KEYS}
    if any(v < 1024 for v in values.values()) or values["sync_peer_bytes_burst"] < values["sync_doc_bytes_max"]:
        raise ConfigError("need every sync quota >= 1024 bytes and sync_peer_bytes_burst >= sync_doc_bytes_max")
    return replace(defaults, **values)


LEDGER_URLS_MAX = 8


def _ledger_urls(edge: dict[str, Any]) -> tuple[str, ...]:
    """`ledger_urls`, or the single `ledger_url`; with both, `ledger_url` must come first."""
    single = pick(edge, "ledger_url", str, "").rstrip("/")
    raw = pick(edge, "ledger_urls", list, [])
    if not all(isinstance(u, str) and u for u in raw) or len(raw) > LEDGER_URLS_MAX:
        raise ConfigError(f"edge.ledger_urls must be a list of at most {LEDGER_URLS_MAX} URLs")
    urls = tuple(u.rstrip("/") for u in raw) or ((single,) if single else ())
    if not urls:
        raise ConfigError("edge.ledger_url or edge.ledger_urls is required")
    if not all(u.startswith(("http://", "https://")) for u in urls):
        raise ConfigError("edge.ledger_url(s) must start with http:// or https://")
    if single and single != urls[0]:
        raise ConfigError("edge.ledger_url must be the first of edge.ledger_urls")
    return urls


def _tokens(raw: dict[str, Any], edge: dict[str, Any], base: Path, peers: tuple[Peer, ...]) -> list[TokenEntry]:
    tokens = all_token_entries(raw, edge, base, "edge")
    if any(t.role not in ACCEPTED_ROLES for t in tokens):
        raise ConfigError(f"edge tokens admit only the roles {sorted(ACCEPTED_ROLES)}")
    _check_peer_tokens(tokens, peers)
    return tokens


def reload_tokens(path: Path, peers: tuple[Peer, ...]) -> list[TokenEntry]:
    """The tokens a credential reload applies, checked as at start-up against the running peers."""
    raw = load_toml(path)
    edge = raw.get("edge")
    if not isinstance(edge, dict):
        raise ConfigError("the [edge] table is required")
    return _tokens(raw, edge, path.resolve().parent, peers)


def load(path: Path) -> EdgeConfig:
    raw = load_toml(path)
    base = path.resolve().parent
    edge = raw.get("edge")
    if not isinstance(edge, dict):
        raise ConfigError("the [edge] table is required")
    edge_id = pick(edge, "id", str, None)
    if not is_id(edge_id) or "/" in edge_id:
        raise ConfigError("edge.id must be an id")
    client_id = pick(edge, "crdt_client_id", int, 1)
    if not 1 <= client_id <= 1000:
        raise ConfigError("edge.crdt_client_id (legacy, ignored) must be an integer in 1..1000")
    peers = _peers(edge.get("peers", []), edge_id)
    tokens = _tokens(raw, edge, base, peers)
    try:
        check_distinct_tags((edge_id, *(p.id for p in peers)))
    except ValueError as e:
        raise ConfigError(f"edge.peers: {e}") from None
    ledger_urls = _ledger_urls(edge)
    cfg = EdgeConfig(
        id=edge_id,
        crdt_client_id=client_id,
        host=pick(edge, "host", str, "127.0.0.1"),
        port=pick(edge, "port", int, 8801),
        data_dir=base / pick(edge, "data_dir", str, f"./{edge_id}"),
        ledger_url=ledger_urls[0],
        ledger_urls=ledger_urls,
        ledger_token=_read_secret(base, edge, "ledger_token_file"),
        peer_token=_read_secret(base, edge, "peer_token_file"),
        ledger_attempt_timeout_s=pick(edge, "ledger_attempt_timeout_s", float, 1.0),
        ledger_deadline_s=pick(edge, "ledger_deadline_s", float, 3.0),
        body_bytes_max=pick(edge, "body_bytes_max", int, 65536),
        session_state_bytes_max=pick(edge, "session_state_bytes_max", int, 16384),
        log_level=pick_log_level(edge, "edge"),
        log_file=pick_log_file(edge, base, "edge"),
        peers=peers,
        tokens=tuple(tokens),
        limits=_limits(edge),
        tls=parse_tls(edge, base, "edge"),
        ledger_token_file=_secret_path(base, edge, "ledger_token_file"),
        peer_token_file=_secret_path(base, edge, "peer_token_file"),
        tokens_file=tokens_file(edge, base, "edge"),
        credentials_check_interval_s=pick(edge, "credentials_check_interval_s", float, 2.0),
        config_path=path.resolve(),
    )
    if not 0 < cfg.ledger_attempt_timeout_s <= cfg.ledger_deadline_s <= 60:
        raise ConfigError("need 0 < ledger_attempt_timeout_s <= ledger_deadline_s <= 60")
    if not 0 < cfg.credentials_check_interval_s <= 600:
        raise ConfigError("edge.credentials_check_interval_s must be in (0, 600]")
    if not 1024 <= cfg.session_state_bytes_max <= cfg.body_bytes_max <= 16 << 20:
        raise ConfigError("need 1024 <= session_state_bytes_max <= body_bytes_max <= 16 MiB")
    return cfg
