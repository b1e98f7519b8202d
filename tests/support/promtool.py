"""The promtool binary (Debian package prometheus, `make tools`), bounded in time."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# `promtool test rules` over the alert tests takes about 35 s of CPU; on a busy two-core machine that was
# nearly two minutes of wall time, so 60 s made the test fail for the load, not for the rules.
PROMTOOL_TIMEOUT_S = 240


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: run `make tools` (Debian package prometheus)"
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, check=False, text=True, timeout=PROMTOOL_TIMEOUT_S
    )
