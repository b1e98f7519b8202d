"""The chaos run always ends with a verdict: at its history bound, and when something inside it
breaks; and it removes its cluster directory unless asked to keep it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.chaos import ChaosReport, Op, Workload, run_chaos

# A clean environment, but the services the run spawns import the code under test (PYTHONPATH).
ENV = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}


class BrokenCluster:
    """A cluster whose every service lookup fails, as an unexpected error deep inside a run would."""

    edge_ids = ("eu",)
    proxies: ClassVar[dict[Any, Any]] = {}
    services: ClassVar[dict[str, Any]] = {}

    def url(self, name: str) -> str:
        raise RuntimeError(f"no such service {name}")

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": "Bearer x"}

    def heal(self) -> None:
        raise RuntimeError("heal broke")


async def test_an_unexpected_error_inside_the_run_becomes_a_failed_check_not_a_traceback() -> None:
    report = await run_chaos(
        BrokenCluster(),
        duration_s=0.5,
        seed_value=3,
        clients=2,  # type: ignore[arg-type]  # a cluster that fails on purpose
        players=["p001"],
    )
    assert not report.ok
    failed = [c for c in report.checks if not c.ok]
    assert any("no such service" in c.detail for c in failed), failed
    assert any("heal broke" in c.detail for c in failed), failed
    assert report.summary()[0].startswith("seed 3: ")


def test_the_workload_stops_issuing_at_its_bound_and_the_report_says_so() -> None:
    workload = Workload(BrokenCluster(), ["p001"], random.Random(1), history_max=3)  # type: ignore[arg-type]  # a cluster that fails on purpose
    assert not workload.exhausted
    workload.history.extend(Op("read", None, {}, "eu", 0.0, outcome="ok") for _ in range(3))
    assert workload.exhausted
    report = ChaosReport(
        7, [], workload.history, ["1.0 kill_edge 1.2s", "2.0 kill_edge 1.0s", "3.0 reset 1.0s"], history_max=3
    )
    assert not report.ok  # no check at all is no verdict of success
    assert "history bound reached" in report.summary()[0] and "reads 3" in report.summary()[0]
    assert report.summary()[1] == "faults by kind: kill_edge 2, reset 1"


@pytest.mark.slow
def test_a_run_that_hits_its_history_bound_ends_with_a_verdict_and_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "croupier",
            "chaos",
            "--duration",
            "60",
            "--seed",
            "5",
            "--clients",
            "4",
            "--history-max",
            "40",
            "--dir",
            str(root),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    out = run.stdout + run.stderr
    assert "Traceback" not in out, out[-4000:]
    assert "history bound reached" in run.stdout, out[-4000:]
    assert "PASS  history matches the journal" in run.stdout, out[-4000:]
    assert run.returncode == 0 and "chaos passed (seed 5)" in run.stdout, out[-4000:]
    assert not root.exists()
