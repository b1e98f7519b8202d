"""A real `croupier ledger serve` process for multi-process tests (loopback, free port, reaped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.auth import hash_token

from harness.cluster import free_port, wait_until_ready
from tests.ledger.conftest import NAMES, ROLES, TOKENS

READY_TIMEOUT_S = 30.0


class LedgerProcess:
    def __init__(self, root: Path) -> None:
        self.config = root / "ledger.toml"
        tokens = "".join(f'[[tokens]]\nname = "{NAMES[r]}"\nrole = "{r}"\nsha256 = "{hash_token(TOKENS[r])}"\n'
                         for r in ROLES)
        self.config.write_text(f'[ledger]\ndata_dir = "data"\nlog_level = "warning"\n{tokens}')
        self.log = root / "ledger.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from croupier.cli import main; main()", "ledger", "serve",
                 "--config", str(self.config), "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        await wait_until_ready(self.url + "/readyz", self.proc, timeout_s=READY_TIMEOUT_S,
                               describe=self.log.read_text)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}
