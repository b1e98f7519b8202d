"""A throwaway PostgreSQL 15 for a benchmark run, durable as in production (fsync on,
synchronous_commit on, full_page_writes on), on a free loopback port, removed afterwards.

`local_postgres(root)` is a context manager yielding the DSN. As the `postgres` OS user when run as
root (initdb refuses root). The tests start theirs in tests/support/local_postgres.py (fsync off: they check
semantics); a benchmark must pay for durability like the SQLite store does.
"""

from __future__ import annotations

import os
import pwd
import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
DB_USER = "croupier"
COMMAND_TIMEOUT_S = 120
START_WAIT_S = 60
SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "40",
    "shared_buffers": "128MB",
    "listen_addresses": "127.0.0.1",
}


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, check=False, text=True, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL {what} failed ({done.returncode}): {done.stdout}{done.stderr}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_postgres(root: Path) -> Iterator[str]:
    """initdb into `root`, start, yield the DSN; stopped at the end (the caller removes `root`)."""
    if not (PG_BIN / "postgres").is_file():
        raise RuntimeError(f"PostgreSQL 15 is not installed ({PG_BIN}/postgres is missing)")
    password = secrets.token_hex(16)
    pwfile, data = root / "pwfile", root / "data"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OS_USER)
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    _run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
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
    )
    port = _free_port()
    options = " ".join([f"-c {k}={v}" for k, v in SETTINGS.items()] + [f"-k {root}", f"-p {port}"])
    _run(
        [
            str(PG_BIN / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            str(START_WAIT_S),
            "-o",
            options,
        ],
        "start",
    )
    try:
        yield f"postgresql://{DB_USER}:{password}@127.0.0.1:{port}/postgres"
    finally:
        _run([str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", str(START_WAIT_S)], "stop")
