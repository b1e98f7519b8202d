"""A real `croupier ledger serve` process on a simulated disk that can lose power.

The process runs with the LD_PRELOAD shim of `powerloss/shim.c` (built here with gcc), which keeps
a durable shadow of every file of the data directory as of its last fsync. `power_cut()` kills the
process with SIGKILL and replaces the data directory by what the shim says survived; the next
`start()` boots on it. Each boot gets a fresh shadow directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.launcher import CROUPIER, launch_environment
from tests.support.ledger_process import LedgerProcess

SHIM_SOURCE = Path(__file__).parents[1] / "durability" / "powerloss" / "shim.c"
GCC_TIMEOUT_S = 60.0
PRODUCT_SYNCHRONOUS = "PRAGMA synchronous=FULL"

# Runs the ledger CLI with the SQLite `synchronous` pragma replaced (teeth runs only): fails loudly
# if the product no longer sets FULL, rather than silently testing something else.
_WITH_SYNCHRONOUS = f"""
import sys
import core_ledger.store.sqlite as sqlite_store
wanted = 'PRAGMA synchronous=' + sys.argv.pop(1)
assert {PRODUCT_SYNCHRONOUS!r} in sqlite_store.PRAGMAS, sqlite_store.PRAGMAS
sqlite_store.PRAGMAS = tuple(wanted if p == {PRODUCT_SYNCHRONOUS!r} else p for p in sqlite_store.PRAGMAS)
from croupier.cli import main
main()
"""


def build_shim(out_dir: Path) -> Path:
    """Compile the shim; -Werror so that a warning on the CI compiler is a failure, not a surprise."""
    target = out_dir / "powerloss.so"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-format-truncation",
            "-shared",
            "-fPIC",
            "-o",
            str(target),
            str(SHIM_SOURCE),
            "-ldl",
            "-lpthread",
        ],
        check=True,
        capture_output=True,
        timeout=GCC_TIMEOUT_S,
    )
    return target


@dataclass(frozen=True)
class Disk:
    """How the simulated disk behaves during one boot."""

    mode: str = "honest"  # or "drop_last": the most recent fsync never becomes durable
    synchronous: str | None = None  # None: the product's own setting (FULL); else e.g. "NORMAL"
    full_flag: Path | None = None  # while this file exists, writes to the database files fail ENOSPC


def shim_variables(shim: Path, watched: Path, shadow: Path, disk: Disk) -> dict[str, str]:
    """The environment variables that load the shim over `watched` and say how the disk behaves."""
    env = {
        "LD_PRELOAD": str(shim),
        "CROUPIER_POWERLOSS_DIR": os.path.realpath(watched),
        "CROUPIER_POWERLOSS_SHADOW": str(shadow),
        "CROUPIER_POWERLOSS_MODE": disk.mode,
    }
    if disk.full_flag is not None:
        env["CROUPIER_POWERLOSS_FULL_FLAG"] = str(disk.full_flag)
    return env


def shim_env(shim: Path, watched: Path, shadow: Path, disk: Disk) -> dict[str, str]:
    """This process's environment with the shim loaded (for a child that is not a service)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **shim_variables(shim, watched, shadow, disk)}


def materialize(shadow: Path, target: Path) -> list[str]:
    """Make `target` hold exactly what the shim's manifest says survived; returns the file names."""
    for child in target.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    names = []
    for line in (shadow / "manifest").read_text().splitlines():
        name, copy = line.split("\t")
        shutil.copyfile(shadow / copy, target / name)
        names.append(name)
    return names


class PoweredLedger(LedgerProcess):
    """`LedgerProcess` (config, tokens, log, graceful stop) booted under the shim."""

    def __init__(self, root: Path, shim: Path) -> None:
        super().__init__(root)
        self.shim = shim
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.boots = 0
        self.shadow = root / "shadow-0"

    async def start(self, disk: Disk = Disk()) -> None:  # type: ignore[override]  # the start of a process on a simulated disk
        assert self.proc is None, "already running"
        self.boots += 1
        self.shadow = self.root / f"shadow-{self.boots}"
        self.shadow.mkdir()
        program = CROUPIER if disk.synchronous is None else (sys.executable, "-c", _WITH_SYNCHRONOUS, disk.synchronous)
        await self.launch(
            program=program, env=launch_environment(shim_variables(self.shim, self.data, self.shadow, disk))
        )

    def syncs(self) -> list[str]:
        """Every fsync the shim saw in this boot, in order: shadow names, "." for the directory."""
        return (self.shadow / "synclog").read_text().splitlines()

    def power_cut(self) -> list[str]:
        """SIGKILL, then keep only what was durable; returns the surviving file names."""
        assert self.proc is not None, "not running"
        self.kill9()
        self.process = None
        return materialize(self.shadow, self.data)
