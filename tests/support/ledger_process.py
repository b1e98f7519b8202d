"""A real `croupier ledger serve` process for multi-process tests (loopback, free port, reaped).

The config (the test tokens of tests/support/ledger.py) is written and the process run by
`harness/launcher.py`, like every other service process the tests and tools start.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared.auth import hash_token

from harness.launcher import (
    CROUPIER,
    ServiceConfig,
    ServiceProcess,
    TokenRow,
    free_port,
    launch_environment,
    serve_command,
)
from tests.support.ledger import NAMES, ROLES, TOKENS

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
KILL_TIMEOUT_S = 10.0


def ledger_config() -> ServiceConfig:
    """A ledger on `data` beside its config, quiet logs, one credential per test role."""
    tokens = [TokenRow(NAMES[r], r, hash_token(TOKENS[r])) for r in ROLES]
    return ServiceConfig("ledger", {"data_dir": "data", "log_level": "warning"}, tokens)


class LedgerProcess:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = ledger_config().write(root / "ledger.toml")
        self.log = root / "ledger.log"
        self.process: ServiceProcess | None = None
        self.url = ""

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.popen

    async def launch(self, *, program: Sequence[str] = CROUPIER, env: Mapping[str, str] | None = None) -> None:
        """Start it on a fresh free port (`--port`) and wait for its /readyz."""
        assert self.process is None or not self.process.running, "already running"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = ServiceProcess(
            "ledger",
            serve_command("ledger", self.config, "--port", str(port), program=program),
            log_path=self.log,
            cwd=self.root,
            env=env or launch_environment(),
        ).start()
        await self.process.wait_ready(self.url + "/readyz", timeout_s=READY_TIMEOUT_S)

    async def start(self) -> None:
        await self.launch()

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill(KILL_TIMEOUT_S)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT_S; the exit status (None: it never ran)."""
        status = None if self.process is None else self.process.stop(STOP_TIMEOUT_S)
        self.process = None
        return status


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}
