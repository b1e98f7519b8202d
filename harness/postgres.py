"""A local PostgreSQL 15 on loopback in a directory of its own: what `croupier up --backend postgres`,
the demo and the tests run the ledger on.

`LocalPostgres(root).start()` runs `initdb` into `root/data` (password authentication over TCP,
the password in `root/pwfile` and in the DSN only), then `pg_ctl start` on a free 127.0.0.1 port
with its unix socket in `root`, durable by default (`fsync=on`, `synchronous_commit=on`,
`full_page_writes=on`); `stop()` stops exactly the server it started (`pg_ctl stop -m fast`).
Every wait is bounded. PostgreSQL refuses to run as root: when we are root, its tools run as the
`postgres` OS user (`runuser`), `root` is handed to that user, and its ancestors get search (x)
permission for others where they lack it, so that user can reach the directory.

The DSN holds the password: `dsn` is for the ledger's DSN file (`write_dsn_file`, mode 0600);
`public_info()` is what may be shown (host, port, user, database, no password).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # runs the server when we run as root (initdb and postgres refuse root)
DB_USER = "croupier"
DATABASE = "postgres"
COMMAND_TIMEOUT_S = 120.0  # initdb, start or stop as a whole
START_WAIT_S = 60  # pg_ctl -t: how long start and stop wait for the server
START_ATTEMPTS_MAX = 3  # a free port can be taken between probing and binding it
LOG_TAIL_CHARS = 2000
SOCKET_PATH_MAX = 90  # a unix socket path is at most 107 bytes; "/.s.PGSQL.<port>" adds up to 16
# Durable: a commit is acknowledged once it is on disk (what the ledger's contract needs).
DURABLE_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "100",
    "shared_buffers": "32MB",
}


class PostgresFailed(RuntimeError):
    """The local PostgreSQL could not be set up, started or stopped; the message says why (with
    the tail of its log)."""


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_server_user(cmd: list[str]) -> list[str]:
    """`cmd` as the OS user that may run PostgreSQL (ourselves unless we are root)."""
    return ["runuser", "-u", OS_USER, "--", *cmd] if running_as_root() else cmd


def hand_to_server_user(path: Path) -> None:
    """When root: `path` belongs to the server's OS user and every ancestor lets others search it
    (x only: nothing becomes listable or readable)."""
    if not running_as_root():
        return
    owner = pwd.getpwnam(OS_USER)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.is_file() else "(no log)"


def run_tool(
    cmd: list[str], what: str, log: Path, *, timeout_s: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server's OS user, bounded; PostgresFailed if it cannot run."""
    try:
        return subprocess.run(as_server_user(cmd), capture_output=True, check=False, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PostgresFailed(f"PostgreSQL: cannot {what}: {e}\nlog:\n{tail(log)}") from e


def require_binaries() -> None:
    if not (PG_BIN / "postgres").is_file():
        raise PostgresFailed(
            f"PostgreSQL 15 is not installed ({PG_BIN}/postgres is missing): `make tools` "
            "installs the Debian package postgresql-15"
        )


@dataclass
class LocalPostgres:
    root: Path
    settings: Mapping[str, str] = field(default_factory=lambda: dict(DURABLE_SETTINGS))
    password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    port: int | None = None  # set by start
    started: bool = False  # this object started the server (and so stops it)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        """The ledger's DSN: it holds the password, so it goes only into a 0600 file."""
        assert self.port is not None, "start() first"
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def public_info(self) -> dict[str, Any]:
        """What may be shown (cluster.json, logs): no password."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": DB_USER,
            "database": DATABASE,
            "socket_dir": str(self.root),
            "data_dir": str(self.data_dir),
        }

    def write_dsn_file(self, path: Path) -> Path:
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.dsn + "\n")
        return path

    def initdb(self) -> None:
        require_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password)
        hand_to_server_user(self.root)
        hand_to_server_user(pwfile)
        done = run_tool(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            "initdb",
            self.log_path,
        )
        if done.returncode != 0:
            raise PostgresFailed(f"PostgreSQL: initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """initdb (once), then start on a free loopback port; raises PostgresFailed saying why."""
        if not (self.data_dir / "PG_VERSION").is_file():
            self.initdb()
        socket_dir = str(self.root.resolve())
        if len(socket_dir) > SOCKET_PATH_MAX:
            raise PostgresFailed(f"{socket_dir} is too long for a unix socket path: use a shorter --dir")
        settings = {**self.settings, "listen_addresses": "127.0.0.1"}
        options = " ".join([f"-c {k}={v}" for k, v in settings.items()] + [f"-k {socket_dir}"])
        done: subprocess.CompletedProcess[str] | None = None
        for _ in range(START_ATTEMPTS_MAX):
            port = free_port()
            done = run_tool(
                [
                    str(PG_BIN / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(START_WAIT_S),
                    "-o",
                    f"{options} -p {port}",
                ],
                "start",
                self.log_path,
            )
            if done.returncode == 0:
                self.port, self.started = port, True
                return
        assert done is not None
        raise PostgresFailed(
            f"PostgreSQL did not start in {START_ATTEMPTS_MAX} attempts:\n{done.stdout}"
            f"{done.stderr}\nlog:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the server this object started (fast shutdown, bounded); nothing otherwise."""
        if not self.started or not (self.data_dir / "postmaster.pid").exists():
            self.started = False
            return
        done = run_tool(
            [str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(START_WAIT_S)],
            "stop",
            self.log_path,
        )
        self.started = False
        if done.returncode != 0:
            raise PostgresFailed(f"PostgreSQL did not stop ({done.returncode}):\n{done.stdout}{done.stderr}")


BACKENDS = ("sqlite", "postgres")


async def start_database(root: Path, backend: str, *, ha: bool = False) -> Any:
    """Start the database a cluster in `root` runs its ledgers on (`root/postgres`): one local
    PostgreSQL, or with `ha` a Patroni cluster; stopped again if it does not come up."""
    if backend not in BACKENDS or backend == "sqlite":
        raise ValueError(f"backend {backend!r}: a database is started only for 'postgres'")
    if ha:
        from harness.patroni import PatroniCluster

        database: Any = PatroniCluster(root / "postgres")
    else:
        database = LocalPostgres(root / "postgres")
    try:
        await asyncio.to_thread(database.start)
    except BaseException:
        await asyncio.to_thread(database.stop)
        raise
    return database
