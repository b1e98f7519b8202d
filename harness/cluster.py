"""A local Croupier cluster as real processes: one ledger and N edges on 127.0.0.1.

`croupier up`, `croupier demo`, the multi-process tests and the fault harness all start clusters
through `Cluster`. It writes configs with fresh random credentials (clear tokens only in
`DIR/secrets/`, mode 0600; configs hold sha256 digests), starts `croupier ledger serve` and
`croupier edge serve`, waits for every `/readyz`, and stops what it started.

Every edge has its own peer credential (`secrets/peer-<edge id>.token`, named after the edge in
the other edges' configs): `peer_token(edge_id)` and `peer_headers(edge_id)` give it to a test
that speaks `/v1/sync` as that edge, and `cluster.json` lists them under `peer_tokens`. The
`tokens.peer` entry of `cluster.json` is kept for old readers; no edge accepts it any more.

With `proxied=True` every edge→ledger and edge→peer link goes through an in-process
`FaultProxy`, so a test can add latency, cut a region off (`partition`) or reset connections.
With `standby=True` a second ledger ("ledger-standby") runs as the synchronous standby of the
first (each names the other as its peer, so a restarted old primary finds the higher epoch), the
edges get both URLs, and `failover()` kills the primary with SIGKILL and promotes the standby.
`primary` names the ledger copy acting as primary (`promote` moves it; `info()` and `seed()` use
it), and `rejoin_as_standby` restarts a former primary as the standby of the current one. With
`synchronous_pair=True` both copies are configured with `synchronous_standby`, so a promoted copy
too answers a commit only once its own standby (the old primary, rejoined) applied it. With
`fault_hooks=True` each ledger gets its test-only fault point (`fault_apply_delay_file`, see
`set_apply_delay`); nothing else ever enables it.

With `tls=True` every service serves HTTPS with its own certificate from a CA made for the run
(`trustme`, a test/dev dependency imported only then; files under `DIR/tls/`), every link
verifies against that CA, the ledgers require client certificates (each service presents its
own), and `client_ssl()` / `http_session()` give callers the CA and a client certificate.
`cluster.json` then holds a `tls` object naming the CA and the client certificate files.

With `backend="postgres"` the ledgers run on a local PostgreSQL started in `DIR/postgres/` by
`harness.postgres` (with `ha=True`: etcd and a three-member Patroni cluster from `harness.patroni`);
each ledger copy has a schema of its own, the DSN is in `DIR/secrets/postgres.dsn` (0600), and
`cluster.json` says `"backend": "postgres"` with a `postgres` object that holds no password.

With `pair=True` (PostgreSQL only) the two ledger copies ("ledger" and "ledger-standby") are an
active/passive pair on ONE schema (`writer_lease = true`, no peers): whichever holds the writer
lease is the active one, the other waits (its /readyz is 503) and takes over when the lease is
released; the edges get both URLs. `find_active()` asks both which one is active now. With
`database_proxied=True` too, each copy reaches PostgreSQL through a `FaultProxy` of its own
(`proxies[(copy, "postgres")]`, its DSN in `secrets/postgres-<copy>.dsn`), so a test can cut one
copy off from the database.

This module holds the topology (which services, which links, which credentials, the seed data);
writing a service's config file and running its process is `harness/launcher.py`'s job. It imports
neither `core_ledger` nor `edge`: it only speaks their CLI and HTTP.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from shared.auth import hash_token, new_token

from harness.certificates import make_certificates
from harness.faultproxy import FaultProxy
from harness.launcher import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServiceConfig,
    ServiceProcess,
    TokenRow,
    serve_command,
    tail,
)
from harness.launcher import free_port as free_port  # re-exported: tests and tools take ports from here
from harness.launcher import service_environment as service_environment  # re-exported
from harness.launcher import wait_until_ready as wait_until_ready  # re-exported

EDGE_IDS = ("eu", "us", "apac")
STANDBY = "ledger-standby"
LEDGER_ROLES = ("edge", "cashier", "admin_read", "admin_write", "replica", "metrics", "events")
EDGE_ROLES = ("game_server", "peer", "metrics")
GAME_SERVER = "gs"  # one game-server identity across regions: idempotency is scoped by it
LIABILITIES_INTERVAL_S = 1.0  # a local cluster shows its liabilities a second after its first money
# Where the harness finds a ledger copy (its address, files, peers): `ledger_settings` may not move them.
LEDGER_KEYS_THE_HARNESS_LOCATES_BY = frozenset({"host", "port", "data_dir", "backup_dir", "peers"})


async def read_readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]] | None:
    """A service's /readyz at `url`: its status and body, or None when it does not answer or its
    body is no JSON object (a ledger copy announces its role, epoch and head there, 503 or not)."""
    try:
        async with http.get(url + "/readyz") as r:
            body = await r.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    return (r.status, body) if isinstance(body, dict) else None


class PromotionRefused(Exception):
    """The ledger copy refused promotion (409 `standby_behind`: it holds less than its primary
    acknowledged); the problem it answered is in `problem`."""

    def __init__(self, name: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{name} refused promotion: {problem.get('detail')}")
        self.problem = problem


@dataclass
class Service:
    name: str  # "ledger" or the edge id
    kind: str  # "ledger" | "edge"
    port: int
    config_path: Path
    log_path: Path
    process: ServiceProcess | None = None  # its latest run
    args: tuple[str, ...] = ()  # extra `serve` arguments
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The `subprocess.Popen` of its latest run (None: never started), for its pid."""
        return None if self.process is None else self.process.popen


@dataclass
class Cluster:
    root: Path
    edge_ids: tuple[str, ...] = EDGE_IDS
    proxied: bool = False
    seed: int = 0
    group_commit: bool = True
    log_level: str = "info"
    ledger_attempt_timeout_s: float = 1.0
    ledger_deadline_s: float = 3.0
    standby: bool = False
    synchronous_pair: bool = False  # both copies wait for a standby (the promoted one too)
    fault_hooks: bool = False  # the ledgers' test-only fault point (a slow standby apply)
    tls: bool = False  # HTTPS everywhere, a CA made for the run, client certificates required by the ledgers
    primary: str = "ledger"  # the ledger copy acting as primary
    backend: str = "sqlite"  # or "postgres": a local PostgreSQL started (and stopped) with the cluster
    ha: bool = False  # with backend="postgres": a Patroni cluster (etcd + three members) instead of one server
    database: Any = None  # the running harness.postgres.LocalPostgres or harness.patroni.PatroniCluster
    owns_database: bool = False  # started (and so stops) it; a test may pass in a running one instead
    pair: bool = False  # with backend="postgres": two ledger copies, one writer lease (see above)
    writer_lease_ttl_s: float = 2.0  # of a pair: how soon a copy cut off from the database loses the lease
    database_proxied: bool = False  # of a pair: each copy reaches PostgreSQL through a FaultProxy of its own
    ledger_fronts: int = 0  # each ledger copy's `fronts` (processes serving its money routes' HTTP)
    # More `[ledger]` settings for every copy, written last (a benchmark trying a setting): the
    # ledger checks them at start as it checks any config file. Not LEDGER_KEYS_THE_HARNESS_LOCATES_BY.
    ledger_settings: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    proxies: dict[tuple[str, str], FaultProxy] = field(default_factory=dict)

    # --- set-up ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Lay the cluster out, start the proxies (if any), write the configs, start the ledgers and
        then the edges, each ready; on any failure stop what started."""
        self.lay_out()
        try:
            await self._start_database()
            if self.proxied:
                await self._start_proxies()
            if self.database_proxied:
                await self._start_database_proxies()
            self.write_configs()
            for name in self.ledger_names:  # the passive copy of a pair is alive but never ready
                await self.start_service(name, ready=not (self.pair and name == STANDBY))
            await asyncio.gather(*(self.start_service(e) for e in self.edge_ids))
        except BaseException:
            await self.stop()
            raise

    @property
    def ledger_names(self) -> list[str]:
        """The ledger copies: the primary-to-be, then the standby if any."""
        return ["ledger", *([STANDBY] if self.standby or self.pair else [])]

    def lay_out(self) -> None:
        """Directories, credentials (`secrets/`), a free port and file names per service, and the
        certificates of a TLS cluster: nothing runs yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "secrets").mkdir(mode=0o700, exist_ok=True)
        self._make_tokens()
        scheme = "https" if self.tls else "http"
        for name in self.ledger_names:
            self.services[name] = Service(
                name, "ledger", free_port(), self.root / f"{name}.toml", self.root / f"{name}.log", scheme=scheme
            )
        if self.standby:
            self.services[STANDBY].args = (
                "--standby-of",
                self.url("ledger"),
                "--replica-token-file",
                str(self.root / "secrets" / "replica.token"),
            )
        for eid in self.edge_ids:
            self.services[eid] = Service(
                eid, "edge", free_port(), self.root / f"edge-{eid}.toml", self.root / f"edge-{eid}.log", scheme=scheme
            )
        if self.tls:
            self._make_certificates([*self.ledger_names, *self.edge_ids, "client"])

    async def _start_database(self) -> None:
        """The PostgreSQL (or Patroni cluster) of a postgres-backed cluster, unless one was given."""
        if self.backend != "sqlite" and self.database is None:
            from harness.postgres import start_database

            self.database = await start_database(self.root, self.backend, ha=self.ha)
            self.owns_database = True
        if self.database is not None:
            self.database.write_dsn_file(self.root / "secrets" / "postgres.dsn")

    def write_configs(self) -> None:
        """Every service's config file, with the links as they are now (through the proxies, once started)."""
        for svc in self.services.values():
            config = self.ledger_config(svc) if svc.kind == "ledger" else self.edge_config(svc)
            config.write(svc.config_path)

    def _make_tokens(self) -> None:
        if self.tokens:
            return
        names = [
            *LEDGER_ROLES,
            *EDGE_ROLES,
            *(f"edge-{e}" for e in self.edge_ids),
            *(f"peer-{e}" for e in self.edge_ids),
        ]
        for name in names:
            self.tokens[name] = new_token()
            path = self.root / "secrets" / f"{name}.token"
            path.write_text(self.tokens[name])
            path.chmod(0o600)

    def _tls_dir(self) -> Path:
        return self.root / "tls"

    def _make_certificates(self, names: list[str]) -> None:
        """A CA for this run and a certificate for each service (and the cluster's own client)."""
        make_certificates(self._tls_dir(), names)

    def _tls_settings(self, name: str, *, require_client_certificates: bool) -> dict[str, Path]:
        if not self.tls:
            return {}
        folder = self._tls_dir()
        settings = {
            "tls_cert_file": folder / f"{name}.pem",
            "tls_key_file": folder / f"{name}.key",
            "tls_ca_file": folder / "ca.pem",
        }
        if require_client_certificates:
            settings["tls_client_ca_file"] = folder / "ca.pem"
        return settings

    def client_ssl(self) -> ssl.SSLContext | None:
        """What a client of this cluster verifies servers with and presents (None: plain HTTP)."""
        if not self.tls:
            return None
        folder = self._tls_dir()
        ctx = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        ctx.load_cert_chain(folder / "client.pem", folder / "client.key")
        return ctx

    def http_session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A client session that trusts this cluster's CA and presents its client certificate."""
        tls = self.client_ssl()
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls if tls is not None else True), **kwargs)

    def _token_rows(self, entries: list[tuple[str, str, str]]) -> list[TokenRow]:
        """(name in the config, role, key in `tokens`) → `[[tokens]]` rows holding the digests."""
        return [TokenRow(name, role, hash_token(self.tokens[token_key])) for name, role, token_key in entries]

    def ledger_config(self, svc: Service) -> ServiceConfig:
        """The config of the ledger copy `svc`: its peers are the other copies."""
        entries = [(f"edge-{e}", "edge", f"edge-{e}") for e in self.edge_ids]
        entries += [("edge-dev", "edge", "edge")]
        entries += [(role, role, role) for role in LEDGER_ROLES if role != "edge"]
        others = [] if self.pair else [self.url(n) for n in ("ledger", STANDBY) if n in self.services and n != svc.name]
        # The primary waits for its standby; the standby, once promoted, has none to wait for
        # (unless both copies are synchronous: then the old primary must rejoin as its standby).
        synchronous = self.standby and (svc.name == "ledger" or self.synchronous_pair)
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": svc.port,
            "data_dir": f"{svc.name}-data",
            "backup_dir": f"{svc.name}-backups",  # beside, not inside, its data_dir (a dev cluster: same disk)
            "group_commit": self.group_commit,
            "synchronous_standby": synchronous,
            "peers": others,
            "fault_apply_delay_file": self._apply_delay_path(svc.name) if self.fault_hooks else None,
            "liabilities_interval_s": LIABILITIES_INTERVAL_S,
            "fronts": self.ledger_fronts,
            **self._backend_settings(svc.name),
            **({"writer_lease": True, "writer_lease_ttl_s": self.writer_lease_ttl_s} if self.pair else {}),
            **self._tls_settings(svc.name, require_client_certificates=True),
            "log_level": self.log_level,
            **self.ledger_settings,
        }
        return ServiceConfig("ledger", settings, self._token_rows(entries))

    def _backend_settings(self, name: str) -> dict[str, str]:
        if self.backend == "sqlite":
            return {}
        if self.pair:  # one schema, one journal: the writer lease decides which copy writes it
            dsn_file = f"secrets/postgres-{name}.dsn" if self.database_proxied else "secrets/postgres.dsn"
            return {"backend": "postgres", "postgres_dsn_file": dsn_file, "postgres_schema": "ledger"}
        schema = name.replace("-", "_")  # each ledger copy its own schema: the standby keeps a copy of its own
        return {"backend": "postgres", "postgres_dsn_file": "secrets/postgres.dsn", "postgres_schema": schema}

    def edge_config(self, svc: Service) -> ServiceConfig:
        """The config of edge `svc`: every ledger copy and every other edge, through its proxy if any."""
        eid = svc.name
        ledger_urls = [self._link_url(eid, n) for n in ("ledger", STANDBY) if n in self.services]
        # Over TLS the sync links are written as wss:// (what operators write for websockets).
        peers = [
            {"id": p, "url": self._link_url(eid, p).replace("https://", "wss://")} for p in self.edge_ids if p != eid
        ]
        # One peer credential per edge, named after it: the only edge id its holder may claim.
        entries = [
            (GAME_SERVER, "game_server", "game_server"),
            ("metrics", "metrics", "metrics"),
            *((p, "peer", f"peer-{p}") for p in self.edge_ids if p != eid),
        ]
        settings: dict[str, Any] = {
            # crdt_client_id: ignored by current edges (ids derive from the edge id), kept for older ones.
            "id": eid,
            "crdt_client_id": self.edge_ids.index(eid) + 1,
            "host": "127.0.0.1",
            "port": svc.port,
            "data_dir": f"edge-{eid}-data",
            "ledger_urls": ledger_urls,
            "ledger_token_file": f"secrets/edge-{eid}.token",
            "peer_token_file": f"secrets/peer-{eid}.token",
            "ledger_attempt_timeout_s": float(self.ledger_attempt_timeout_s),
            "ledger_deadline_s": float(self.ledger_deadline_s),
            "log_level": self.log_level,
            **self._tls_settings(eid, require_client_certificates=False),
            "peers": peers,
        }
        return ServiceConfig("edge", settings, self._token_rows(entries))

    def _link_url(self, src: str, dst: str) -> str:
        proxy = self.proxies.get((src, dst))
        port = proxy.port if proxy else self.services[dst].port
        return f"{self.services[dst].scheme}://127.0.0.1:{port}"

    async def _start_proxies(self) -> None:
        links = [(e, n) for e in self.edge_ids for n in ("ledger", STANDBY) if n in self.services]
        links += [(a, b) for a in self.edge_ids for b in self.edge_ids if a != b]
        for i, (src, dst) in enumerate(links):
            proxy = FaultProxy("127.0.0.1", self.services[dst].port, name=f"{src}->{dst}", seed=self.seed + i)
            await proxy.start()
            self.proxies[(src, dst)] = proxy

    async def _start_database_proxies(self) -> None:
        """A pair's copies each reach PostgreSQL through a proxy of their own (a test cuts one off)."""
        assert self.pair and self.database is not None, "database_proxied needs pair=True on PostgreSQL"
        port = self.database.port
        for i, name in enumerate(self.ledger_names):
            proxy = FaultProxy("127.0.0.1", port, name=f"{name}->postgres", seed=self.seed + 100 + i)
            await proxy.start()
            self.proxies[(name, "postgres")] = proxy
            dsn = self.database.dsn.replace(f"@127.0.0.1:{port}/", f"@127.0.0.1:{proxy.port}/")
            path = self.root / "secrets" / f"postgres-{name}.dsn"
            path.touch(mode=0o600)
            path.write_text(dsn + "\n")

    async def find_active(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        """Of a pair: the copy whose /readyz says it is the ready primary (it becomes `primary`)."""
        assert self.pair, "find_active needs Cluster(pair=True)"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self.http_session(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while loop.time() < deadline:
                for name in self.ledger_names:
                    if not self.services[name].running:
                        continue
                    ready = await read_readyz(http, self.url(name))
                    if ready is not None and ready[0] == 200 and ready[1].get("role") == "primary":
                        self.primary = name
                        return name
                await asyncio.sleep(0.05)
        raise TimeoutError(f"no ledger copy of the pair became active in {timeout_s}s")

    # --- process control ------------------------------------------------------------------

    async def start_service(self, name: str, *, ready: bool = True) -> None:
        """Start a service and wait for its /readyz (or, with ready=False, its /healthz: a fenced
        ledger is alive but never ready)."""
        svc = self.services[name]
        assert not svc.running, f"{name} already running"
        svc.process = ServiceProcess(
            name, serve_command(svc.kind, svc.config_path, *svc.args), log_path=svc.log_path, cwd=self.root
        ).start()
        await self.wait_ready(name, path="/readyz" if ready else "/healthz")

    async def wait_ready(self, name: str, timeout_s: float = READY_TIMEOUT_S, *, path: str = "/readyz") -> None:
        svc = self.services[name]
        assert svc.process is not None, f"{name} not started"
        await svc.process.wait_ready(svc.url + path, timeout_s=timeout_s, tls=self.client_ssl())

    def signal(self, name: str, sig: int) -> None:
        process = self.services[name].process
        assert process is not None, f"{name} not started"
        process.send_signal(sig)

    async def kill(self, name: str) -> None:
        """kill -9, and reap it."""
        process = self.services[name].process
        if process is not None:
            await asyncio.to_thread(process.kill, STOP_TIMEOUT_S)

    async def stop_service(self, name: str) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit status."""
        process = self.services[name].process
        if process is None:
            return None
        return await asyncio.to_thread(process.stop, STOP_TIMEOUT_S)

    async def restart(self, name: str) -> None:
        await self.stop_service(name)
        await self.start_service(name)

    async def failover(self) -> dict[str, Any]:
        """kill -9 the primary, promote the standby; the promote answer (role, epoch, head)."""
        assert self.standby, "failover needs Cluster(standby=True)"
        await self.kill(self.primary)
        return await self.promote(self.standby_name)

    @property
    def standby_name(self) -> str:
        """The ledger copy that is not the primary."""
        return STANDBY if self.primary == "ledger" else "ledger"

    async def promote(self, name: str) -> dict[str, Any]:
        """POST /admin/v1/promote to `name`; from now on it is the primary (and restarts as one).
        Raises `PromotionRefused` when the copy holds less than its primary acknowledged."""
        async with (
            self.http_session(timeout=aiohttp.ClientTimeout(total=READY_TIMEOUT_S)) as http,
            http.post(self.url(name) + "/admin/v1/promote", headers=self.headers("admin_write")) as r,
        ):
            if r.status == 409:
                problem = await r.json(content_type=None)
                if problem.get("code") == "standby_behind":
                    raise PromotionRefused(name, problem)
            r.raise_for_status()
            answer: dict[str, Any] = await r.json()
        self.adopt_primary(name)
        return answer

    def adopt_primary(self, name: str) -> None:
        """From now on the copy `name` is the primary (and restarts as one)."""
        self.primary = name
        self.services[name].args = ()

    async def rejoin_as_standby(self, name: str, *, keep_data: bool) -> None:
        """Restart the ledger copy `name` as the standby of the current primary: with its own data
        (whose tail may have diverged) or with none (it copies the primary's whole journal)."""
        assert name != self.primary, f"{name} is the primary"
        await self.stop_service(name)
        if not keep_data:
            shutil.rmtree(self.root / f"{name}-data", ignore_errors=True)
        self.services[name].args = (
            "--standby-of",
            self.url(self.primary),
            "--replica-token-file",
            str(self.root / "secrets" / "replica.token"),
        )
        await self.start_service(name, ready=False)

    def _apply_delay_path(self, name: str) -> Path:
        return self.root / "faults" / f"{name}-apply-delay"

    def set_apply_delay(self, name: str, seconds: float) -> None:
        """Test-only fault point: every standby apply of `name` pauses `seconds` before its commit
        (0: off). Needs Cluster(fault_hooks=True)."""
        assert self.fault_hooks, "the apply delay needs Cluster(fault_hooks=True)"
        path = self._apply_delay_path(name)
        if seconds <= 0:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(str(seconds))

    async def stop(self) -> dict[str, int | None]:
        """Stop every service (edges first) and the proxies; each service's exit status."""
        statuses = {}
        for name in [*self.edge_ids, STANDBY, "ledger"]:
            if name in self.services:
                statuses[name] = await self.stop_service(name)
        for proxy in self.proxies.values():
            await proxy.stop()
        if self.database is not None and self.owns_database:
            self.owns_database = False
            await asyncio.to_thread(self.database.stop)
        return statuses

    def log_tail(self, name: str, lines: int = 30) -> str:
        return tail(self.services[name].log_path, lines)

    # --- faults ---------------------------------------------------------------------------

    def partition(self, edge_id: str, mode: str = "blackhole") -> None:
        """Cut `edge_id` off from its peers (both directions); it still reaches the ledger."""
        assert self.proxied, "partitions need Cluster(proxied=True)"
        for (src, dst), proxy in self.proxies.items():
            if dst not in ("ledger", STANDBY) and edge_id in (src, dst):
                proxy.set_mode(mode)

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.set_mode("pass")

    # --- what clients need ----------------------------------------------------------------

    def url(self, name: str) -> str:
        return self.services[name].url

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def peer_token(self, edge_id: str) -> str:
        """The peer credential of `edge_id`: with it, `/v1/sync` of any other edge accepts a hello
        as `edge_id` (and only as `edge_id`)."""
        return self.tokens[f"peer-{edge_id}"]

    def peer_headers(self, edge_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.peer_token(edge_id)}"}

    def info(self, seed: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `cluster.json` contract."""
        return {
            "ledger": {"url": self.url(self.primary)},
            **({"standby": {"url": self.url(self.standby_name)}} if self.standby or self.pair else {}),
            **({"pair": True} if self.pair else {}),
            "edges": [{"id": e, "url": self.url(e)} for e in self.edge_ids],
            "tokens": {role: self.tokens[role] for role in (*EDGE_ROLES, *LEDGER_ROLES)},
            "peer_tokens": {e: self.peer_token(e) for e in self.edge_ids},
            "seed": seed or {"players": [], "jackpots": [], "bonuses": []},
            **({"tls": self.tls_info()} if self.tls else {}),
            "backend": self.backend,
            **(
                {"postgres": {**self.database.public_info(), "dsn_file": str(self.root / "secrets" / "postgres.dsn")}}
                if self.database is not None
                else {}
            ),
        }

    def tls_info(self) -> dict[str, str]:
        """The `tls` object of `cluster.json`: the CA to trust and a client certificate to present."""
        folder = self._tls_dir()
        return {
            "ca_file": str(folder / "ca.pem"),
            "client_cert_file": str(folder / "client.pem"),
            "client_key_file": str(folder / "client.key"),
        }

    def write_info(self, seed: dict[str, Any] | None = None) -> Path:
        path = self.root / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info(seed), indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path


# --- seed data --------------------------------------------------------------------------------

JACKPOT_ID = "mega"
JACKPOT_GAMES = ("slots-1", "slots-2")
BONUS_ID = "welcome"


async def seed(
    cluster: Cluster,
    *,
    players: int = 20,
    deposit_minor: int = 1_000_000,
    currency: str = "EUR",
    bonus_requirement_minor: int = 5_000,
) -> dict[str, Any]:
    """Players with a deposit, one jackpot on the slot games, and a welcome bonus for each player."""
    ledger = cluster.url(cluster.primary)
    admin, cashier = cluster.headers("admin_write"), cluster.headers("cashier")
    player_ids = [f"p{i:03d}" for i in range(1, players + 1)]
    async with cluster.http_session(raise_for_status=True) as http:
        await http.post(
            f"{ledger}/admin/v1/jackpots",
            headers=admin,
            json={
                "jackpot_id": JACKPOT_ID,
                "currency": currency,
                "seed_minor": 100_000,
                "contribution_ppm": 10_000,
                "game_ids": list(JACKPOT_GAMES),
            },
        )
        for pid in player_ids:
            await http.post(
                f"{ledger}/admin/v1/players", headers=admin, json={"player_id": pid, "currencies": [currency]}
            )
            await http.post(
                f"{ledger}/v1/deposits",
                headers=cashier,
                json={"id": f"seed-dep-{pid}", "player_id": pid, "currency": currency, "amount_minor": deposit_minor},
            )
            await http.post(
                f"{ledger}/admin/v1/bonuses",
                headers=admin,
                json={
                    "id": f"seed-bonus-{pid}",
                    "player_id": pid,
                    "bonus_id": BONUS_ID,
                    "currency": currency,
                    "amount_minor": 1_000,
                    "wagering_requirement_minor": bonus_requirement_minor,
                    "expires_at": "2099-01-01T00:00:00Z",
                },
            )
    return {
        "players": [{"player_id": p, "currency": currency, "deposit_minor": deposit_minor} for p in player_ids],
        "jackpots": [{"jackpot_id": JACKPOT_ID, "currency": currency, "game_ids": list(JACKPOT_GAMES)}],
        "bonuses": [
            {
                "bonus_id": BONUS_ID,
                "currency": currency,
                "amount_minor": 1_000,
                "wagering_requirement_minor": bonus_requirement_minor,
            }
        ],
    }
