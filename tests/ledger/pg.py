"""A throwaway PostgreSQL 15 for the ledger tests, started once per test session.

`initdb` into a fresh temp dir, `pg_ctl start` on a free port bound to 127.0.0.1 only (its unix
socket in the same dir), password (scram) authentication over TCP; as the `postgres` OS user when
the tests run as root (initdb refuses root). Stopped (`pg_ctl stop -m fast`) and deleted at the end
of the session. fsync is off: these tests check semantics, not crash durability, on a shared box.
Each store gets its own schema, so tests never see each other's rows. No skip: a PostgreSQL that
cannot start fails the tests that need it, saying why.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core_ledger.store.postgres import PostgresLimits, PostgresStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # runs the server when the tests run as root
DB_USER = "croupier"
COMMAND_TIMEOUT_S = 120  # initdb, start or stop; start also waits (-t) up to START_WAIT_S
START_WAIT_S = 60
START_ATTEMPTS_MAX = 3  # a free port can be taken between probing and binding it
LOG_TAIL_CHARS = 2000
SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "max_connections": "60",
            "shared_buffers": "32MB", "listen_addresses": "127.0.0.1"}
TEST_LIMITS = PostgresLimits(pool_size_max=4)


@dataclass(frozen=True)
class PgServer:
    port: int
    password: str = field(repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/postgres"


def fresh_schema() -> str:
    return f"t_{secrets.token_hex(6)}"


def postgres_store(server: PgServer) -> PostgresStore:
    """A store of its own (a new schema) on the session's server."""
    return PostgresStore(server.dsn, TEST_LIMITS, schema=fresh_schema())


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.is_file() else "(no log)"


def _run(cmd: list[str], what: str, log: Path) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server's OS user; a test failure naming `what` if it cannot run."""
    try:
        return subprocess.run(_as_server_user(cmd), capture_output=True, check=False, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"PostgreSQL: cannot {what}: {e}\nserver log:\n{_tail(log)}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _initdb(root: Path, password: str) -> Path:
    if not (PG_BIN / "postgres").is_file():
        pytest.fail(f"PostgreSQL 15 is not installed ({PG_BIN}/postgres is missing): `make tools` installs "
                    "the Debian package postgresql-15", pytrace=False)
    pwfile, data = root / "pwfile", root / "data"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OS_USER)
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    done = _run([str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}", "-E", "UTF8",
                 "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                "initdb", root / "server.log")
    if done.returncode != 0:
        pytest.fail(f"PostgreSQL: initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}", pytrace=False)
    return data


def _start(root: Path, data: Path) -> int:
    """Start the server on a free loopback port; the port."""
    log = root / "server.log"
    options = " ".join([f"-c {k}={v}" for k, v in SETTINGS.items()] + [f"-k {root}"])
    for _ in range(START_ATTEMPTS_MAX):
        port = _free_port()
        done = _run([str(PG_BIN / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", str(START_WAIT_S),
                     "-o", f"{options} -p {port}"], "start", log)
        if done.returncode == 0:
            return port
    pytest.fail(f"PostgreSQL did not start in {START_ATTEMPTS_MAX} attempts:\n{done.stdout}{done.stderr}\n"
                f"server log:\n{_tail(log)}", pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A running PostgreSQL for the whole session, stopped and removed at its end."""
    root = Path(tempfile.mkdtemp(prefix="croupier-pg-"))
    data: Path | None = None
    try:
        password = secrets.token_hex(16)
        data = _initdb(root, password)
        yield PgServer(_start(root, data), password)
    finally:
        if data is not None and (data / "postmaster.pid").exists():
            _run([str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", str(START_WAIT_S)],
                 "stop", root / "server.log")
        shutil.rmtree(root, ignore_errors=True)
