"""The `croupier ledger` command in a child process (this interpreter, so this checkout's code)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

CLI = [sys.executable, "-c", "from croupier.cli import main; main()", "ledger"]
CLI_TIMEOUT_S = 60


async def ledger_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`croupier ledger ARGS` in a child process, waited for off the event loop."""
    return await asyncio.to_thread(
        subprocess.run, [*CLI, *args], capture_output=True, check=False, text=True, timeout=CLI_TIMEOUT_S
    )
