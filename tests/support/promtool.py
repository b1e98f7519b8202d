"""The promtool binary (Debian package prometheus, `make tools`), bounded in time."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROMTOOL_TIMEOUT_S = 60


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: run `make tools` (Debian package prometheus)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, check=False, text=True,
                          timeout=PROMTOOL_TIMEOUT_S)
