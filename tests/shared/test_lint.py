"""The tree passes its own linters: `ruff check .`, `ruff format --check .` and `mypy` with the settings
in pyproject.toml (ruff's rule set and import groups; mypy over core_ledger, edge, shared, monitoring and bench, strict
for the domains). Each runs as a child process of this interpreter; their caches (.ruff_cache,
.mypy_cache) keep a rerun to a second or two."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_TIMEOUT_S = 300


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, check=False, text=True, timeout=LINT_TIMEOUT_S
    )


def test_ruff_format_finds_nothing_to_change() -> None:
    done = run_tool("ruff", "format", "--check", ".")
    assert done.returncode == 0, f"ruff format --check . failed (run `ruff format .`):\n{done.stdout}{done.stderr}"


def test_ruff_finds_nothing() -> None:
    done = run_tool("ruff", "check", "--no-fix", ".")
    assert done.returncode == 0, f"ruff check . failed:\n{done.stdout}{done.stderr}"


def test_mypy_finds_nothing() -> None:
    done = run_tool("mypy")
    assert done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"


def test_no_task_of_the_services_waits_with_asyncio_wait_for() -> None:
    """On Python 3.11 `asyncio.wait_for` returns the inner result when a cancellation meets the
    inner wait's completion: a task stopped at that moment goes on (an edge whose sync task was
    stopped so never finished stopping). The services, and the chaos harness and benchmarks that
    stop tasks of their own, wait with `asyncio.timeout`."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("core_ledger", "edge", "shared", "croupier", "harness", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line
    ]
    assert found == []
