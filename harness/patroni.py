"""A highly available PostgreSQL on loopback: one etcd and a three-member Patroni cluster, for
`croupier up --backend postgres --ha` and the failover tests.

`PatroniCluster(root).start()` starts etcd (`root/etcd`, client and peer ports on 127.0.0.1) and
three Patroni members `m0`..`m2` (`root/m<i>/`: config, data dir, unix socket, log), each with its
PostgreSQL and its REST API on free loopback ports, then waits (bounded) for a leader and for a
synchronous replica. Patroni runs in synchronous mode, strict (a commit is acknowledged only once
a synchronous replica has it, and with no replica left writes wait rather than go unprotected),
with PostgreSQL durable (`fsync`, `synchronous_commit`, `full_page_writes` on) and `pg_rewind`
so a former leader rejoins as a replica. Timings are short for a local cluster (ttl 10 s,
loop_wait 1 s): a dead leader is replaced within about ttl seconds.

The ledger connects with `dsn`: every member's host:port and `target_session_attrs=read-write`,
so a new connection finds whichever member is the leader. Faults for tests: `kill_member` (kill -9
of a member's Patroni and its postmaster: the node is gone), `switchover` (through `patronictl`).
`stop()` stops what this object started, members first, then etcd; every wait is bounded.

With `namespaced=True` each member (its Patroni, and so its PostgreSQL) runs in a network namespace
of its own on a private subnet (`harness.netns.PrivateNetwork`: a bridge on this machine, one veth
per member): PostgreSQL listens on the member's subnet address (port 5432) and on its own
loopback, the REST API on the subnet address (port 8008), etcd on the bridge address, and the DSN
names the members' subnet addresses. That adds a third fault: `cut_member` (nftables inside the
member's namespace drop all its traffic but its own loopback; `heal_member` lifts it). The
loopback mode (the default) is what `croupier up --ha` runs; namespaces need root and `nft`.

As with `harness.postgres`, PostgreSQL (and so Patroni) runs as the `postgres` OS user when we are
root. Configs are written as JSON (a subset of YAML, which Patroni reads).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from harness.netns import PrivateNetwork, pid_alive
from harness.postgres import (
    DATABASE,
    DB_USER,
    DURABLE_SETTINGS,
    PG_BIN,
    SOCKET_PATH_MAX,
    PostgresFailed,
    as_server_user,
    free_port,
    hand_to_server_user,
    require_binaries,
    tail,
)

log = structlog.get_logger("croupier.harness.patroni")

SCOPE = "croupier"
MEMBERS = 3
REPLICATOR = "replicator"
ETCD_READY_S = 30.0
CLUSTER_READY_S = 90.0  # three initdb/basebackups on a shared box
STOP_WAIT_S = 20.0
POLL_S = 0.25
HTTP_TIMEOUT_S = 2.0
PATRONICTL_TIMEOUT_S = 60.0
LOOPBACK = "127.0.0.1"
NAMESPACED_PG_PORT = 5432  # a member alone in its namespace has the usual ports to itself
NAMESPACED_API_PORT = 8008
# Patroni's dynamic settings (kept in etcd after bootstrap).
DCS_SETTINGS: dict[str, Any] = {
    "ttl": 10,
    "loop_wait": 1,
    "retry_timeout": 3,
    "maximum_lag_on_failover": 0,
    "synchronous_mode": True,
    "synchronous_mode_strict": True,
    "synchronous_node_count": 1,
}
PG_PARAMETERS: dict[str, Any] = {
    **DURABLE_SETTINGS,
    "wal_level": "replica",
    "hot_standby": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_log_hints": "on",
    "wal_keep_size": "128MB",
}


def patroni_binary(name: str) -> str:
    for folder in ("/usr/bin", "/usr/local/bin"):
        if Path(folder, name).is_file():
            return str(Path(folder, name))
    raise PostgresFailed(f"{name} is not installed: `make tools` installs the Debian packages patroni and etcd-server")


@dataclass
class Member:
    name: str
    root: Path
    pg_port: int
    api_port: int
    host: str = LOOPBACK  # where PostgreSQL and the REST API are reached (its subnet address when namespaced)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "patroni.yml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "patroni.log"

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _get_json(url: str) -> tuple[int, Any]:
    """GET a Patroni REST endpoint: (status, body); (0, None) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:  # loopback http only
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return 0, None


def _free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PatroniCluster:
    root: Path
    members_count: int = MEMBERS
    password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    replication_password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    members: list[Member] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0
    namespaced: bool = False  # each member in a network namespace of its own (see the module doc)
    network: PrivateNetwork | None = None  # the private network of a namespaced cluster, once created

    @property
    def etcd_host(self) -> str:
        return self.network.bridge_address if self.network is not None else LOOPBACK

    # --- what clients need ---------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """Every member, and only the read-write one is taken: it holds the password (0600 file only)."""
        hosts = ",".join(f"{m.host}:{m.pg_port}" for m in self.members)
        return f"postgresql://{DB_USER}:{self.password}@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def member_dsn(self, name: str) -> str:
        """One member, whatever its role (for checks of a replica)."""
        m = self.member(name)
        return f"postgresql://{DB_USER}:{self.password}@{m.host}:{m.pg_port}/{DATABASE}"

    def public_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "ha": "patroni",
            "scope": SCOPE,
            "user": DB_USER,
            "database": DATABASE,
            "target_session_attrs": "read-write",
            "etcd": f"http://{self.etcd_host}:{self.etcd_port}",
            "members": [
                {"name": m.name, "host": m.host, "port": m.pg_port, "api": m.api, "config": str(m.config_path)}
                for m in self.members
            ],
        }
        if self.network is not None:
            info["network"] = {
                "subnet": self.network.subnet,
                "bridge": self.network.bridge,
                "namespaces": {m.name: self.network.namespace(m.name) for m in self.members},
            }
        return info

    def write_dsn_file(self, path: Path) -> Path:
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.dsn + "\n")
        return path

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def cluster_state(self) -> list[dict[str, Any]]:
        """Patroni's view (`GET /cluster` of any member that answers): name, role, state, lag, timeline.
        Members whose network is cut are asked last (they cannot answer)."""
        cut = self.network.cut_members if self.network is not None else set()
        for m in sorted(self.members, key=lambda m: m.name in cut):
            if m.proc is not None and m.proc.poll() is None:
                status, body = _get_json(m.api + "/cluster")
                if status == 200 and isinstance(body, dict):
                    return list(body.get("members", []))
        return []

    def leader(self) -> str | None:
        """The member running as leader (PostgreSQL read-write), as Patroni says."""
        for m in self.cluster_state():
            if m.get("role") == "leader" and m.get("state") == "running":
                return str(m["name"])
        return None

    def sync_standby(self) -> str | None:
        for m in self.cluster_state():
            if m.get("role") == "sync_standby" and m.get("state") in ("running", "streaming"):
                return str(m["name"])
        return None

    def wait_for(self, what: str, check: Any, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(POLL_S)
        raise PostgresFailed(
            f"Patroni: {what} not seen within {timeout_s}s; state: {self.cluster_state()}\n"
            + "\n".join(f"{m.name}:\n{tail(m.log_path)}" for m in self.members)
        )

    def wait_for_leader(self, *, other_than: str | None = None, timeout_s: float = CLUSTER_READY_S) -> str:
        def new_leader() -> str | None:
            name = self.leader()
            return name if name is not None and name != other_than else None

        return str(
            self.wait_for("a leader" + (f" other than {other_than}" if other_than else ""), new_leader, timeout_s)
        )

    def wait_for_sync_standby(self, timeout_s: float = CLUSTER_READY_S) -> str:
        return str(self.wait_for("a synchronous replica", self.sync_standby, timeout_s))

    # --- set-up --------------------------------------------------------------------------

    def start(self) -> None:
        require_binaries()
        patroni, etcd = patroni_binary("patroni"), patroni_binary("etcd")
        self.root.mkdir(parents=True, exist_ok=True)
        hand_to_server_user(self.root)
        names = tuple(f"m{i}" for i in range(self.members_count))
        if self.namespaced:
            self.network = PrivateNetwork(names).create()
        self._start_etcd(etcd)
        for name in names:
            if self.network is not None:
                member = Member(
                    name, self.root / name, NAMESPACED_PG_PORT, NAMESPACED_API_PORT, self.network.address(name)
                )
            else:
                member = Member(name, self.root / name, free_port(), free_port())
            if len(str(member.root.resolve())) > SOCKET_PATH_MAX:
                raise PostgresFailed(f"{member.root} is too long for a unix socket path: use a shorter --dir")
            member.root.mkdir(exist_ok=True)
            member.config_path.write_text(json.dumps(self._config(member), indent=2))
            member.config_path.chmod(0o600)
            hand_to_server_user(member.root)
            hand_to_server_user(member.config_path)
            self.members.append(member)
        for member in self.members:  # one wins the initialize key in etcd and bootstraps; the others clone it
            member.proc = self._spawn(patroni, member)
        self.wait_for_leader()
        self.wait_for_sync_standby()

    def _start_etcd(self, binary: str) -> None:
        self.etcd_port, peer = _free_port_on(self.etcd_host), _free_port_on(self.etcd_host)
        log = (self.root / "etcd.log").open("ab")
        client, peer_url = f"http://{self.etcd_host}:{self.etcd_port}", f"http://{self.etcd_host}:{peer}"
        self.etcd = subprocess.Popen(
            [
                binary,
                "--name",
                "e0",
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"e0={peer_url}",
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def healthy() -> bool:
            if self.etcd is not None and self.etcd.poll() is not None:
                raise PostgresFailed(f"etcd exited ({self.etcd.returncode}):\n{tail(self.root / 'etcd.log')}")
            status, body = _get_json(client + "/health")
            return status == 200 and isinstance(body, dict) and body.get("health") == "true"

        self.wait_for("etcd healthy", healthy, ETCD_READY_S)

    def _config(self, m: Member) -> dict[str, Any]:
        auth = {
            "superuser": {"username": DB_USER, "password": self.password},
            "replication": {"username": REPLICATOR, "password": self.replication_password},
            "rewind": {"username": DB_USER, "password": self.password},
        }
        networks = [f"{LOOPBACK}/32"] + ([self.network.subnet] if self.network is not None else [])
        listen = LOOPBACK if m.host == LOOPBACK else f"{m.host},{LOOPBACK}"  # and its own loopback
        return {
            "scope": SCOPE,
            "namespace": "/croupier/",
            "name": m.name,
            "log": {"level": "INFO", "dir": str(m.root), "file_num": 2, "file_size": 10_000_000},
            "restapi": {"listen": f"{m.host}:{m.api_port}", "connect_address": f"{m.host}:{m.api_port}"},
            "etcd3": {"hosts": [f"{self.etcd_host}:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    **DCS_SETTINGS,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": PG_PARAMETERS},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
                "pg_hba": [
                    "local all all trust",
                    *(f"host replication {REPLICATOR} {net} scram-sha-256" for net in networks),
                    *(f"host all all {net} scram-sha-256" for net in networks),
                ],
            },
            "postgresql": {
                "listen": f"{listen}:{m.pg_port}",
                "connect_address": f"{m.host}:{m.pg_port}",
                "data_dir": str(m.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(m.root / "pgpass"),
                "authentication": auth,
                "parameters": {
                    "unix_socket_directories": str(m.root.resolve()),
                    "password_encryption": "scram-sha-256",
                },
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def _spawn(self, binary: str, m: Member) -> subprocess.Popen[bytes]:
        log = (m.root / "patroni.out").open("ab")
        cmd = as_server_user([binary, str(m.config_path)])
        if self.network is not None:  # `ip netns exec` execs the command: the pid stays the same
            cmd = self.network.command(m.name, cmd)
        try:
            return subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=m.root,
                start_new_session=True,
            )
        finally:
            log.close()

    # --- faults --------------------------------------------------------------------------

    def kill_member(self, name: str) -> None:
        """kill -9 of the member's Patroni and its PostgreSQL: the node is gone (until `restart_member`)."""
        m = self.member(name)
        postmaster = m.postmaster_pid()
        if m.proc is not None and m.proc.poll() is None:
            os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait(STOP_WAIT_S)
        if postmaster is not None and pid_alive(postmaster):
            os.kill(postmaster, signal.SIGKILL)

    def cut_member(self, name: str) -> None:
        """A network cut of the member (nftables in its namespace drop everything but its loopback):
        it keeps running, nothing reaches it and nothing it sends leaves (`heal_member` ends it)."""
        self._network("cut a member's network").cut(name)

    def heal_member(self, name: str) -> None:
        self._network("heal a member's network").heal(name)

    def _network(self, what: str) -> PrivateNetwork:
        if self.network is None:
            raise PostgresFailed(f"cannot {what}: the Patroni cluster runs on loopback (namespaced=False)")
        return self.network

    def restart_member(self, name: str) -> None:
        m = self.member(name)
        assert m.proc is None or m.proc.poll() is not None, f"{name} is running"
        m.proc = self._spawn(patroni_binary("patroni"), m)

    def patronictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`patronictl -c <a member's config> ...`, bounded."""
        cmd = as_server_user([patroni_binary("patronictl"), "-c", str(self.members[0].config_path), *args])
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=PATRONICTL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise PostgresFailed(f"patronictl {' '.join(args)} did not finish in {PATRONICTL_TIMEOUT_S}s") from e

    def switchover(self, candidate: str | None = None) -> str:
        """A planned leader change through `patronictl switchover`; the new leader's name."""
        leader = self.wait_for_leader()
        if candidate is None:
            candidate = self.wait_for_sync_standby()
        done = self.patronictl("switchover", SCOPE, "--leader", leader, "--candidate", candidate, "--force")
        if done.returncode != 0:
            raise PostgresFailed(f"patronictl switchover failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return self.wait_for_leader(other_than=leader, timeout_s=STOP_WAIT_S * 2)

    # --- tear-down -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every member (Patroni stops its PostgreSQL), then etcd, then the private network
        (cut members healed first, so they stop as fast as the others); bounded, then by force."""
        if self.network is not None:
            for name in sorted(self.network.cut_members):
                try:
                    self.network.heal(name)
                except Exception as e:  # noqa: BLE001 (the namespace goes with the network: stop the processes)
                    log.error("patroni_heal_before_stop_failed", member=name, error=repr(e))
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                os.killpg(m.proc.pid, signal.SIGTERM)
        for m in self.members:
            self._reap_member(m)
        if self.etcd is not None:
            if self.etcd.poll() is None:
                self.etcd.terminate()
                try:
                    self.etcd.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    self.etcd.kill()
                    self.etcd.wait(STOP_WAIT_S)
            self.etcd = None
        if self.network is not None:  # last: processes inside a namespace keep it alive
            self.network.destroy()
            self.network = None

    def _reap_member(self, m: Member) -> None:
        if m.proc is not None:
            try:
                m.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(m.proc.pid, signal.SIGKILL)
                m.proc.wait(STOP_WAIT_S)
        postmaster = m.postmaster_pid()  # left behind by a killed Patroni: stop it too
        if postmaster is not None and pid_alive(postmaster):
            subprocess.run(
                as_server_user(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "stop",
                        "-D",
                        str(m.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        str(int(STOP_WAIT_S)),
                    ]
                ),
                capture_output=True,
                timeout=STOP_WAIT_S * 2,
                check=False,
            )
