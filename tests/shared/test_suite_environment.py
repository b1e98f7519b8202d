"""The suite runs the same from any working directory: child processes import the code under test
(tests/conftest.py puts this repository first on their PYTHONPATH), not another installed copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "core_ledger", "edge", "harness", "croupier")


def test_a_child_process_started_elsewhere_imports_every_package_from_this_repository(tmp_path: Path) -> None:
    script = "import importlib, sys; print('\\n'.join(importlib.import_module(p).__file__ for p in sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", script, *PACKAGES],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    files = [Path(line) for line in run.stdout.splitlines()]
    assert len(files) == len(PACKAGES)
    assert all(f.is_relative_to(REPO) for f in files), files
