"""Both services serve with the same garbage-collector settings (shared/gc_tuning.py)."""

from __future__ import annotations

import subprocess
import sys


def _settings_after(code: str) -> str:
    probe = f"{code}\nimport gc\nprint(gc.get_threshold(), gc.get_freeze_count() > 0)"
    return subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()


def test_tuning_for_serving_raises_the_thresholds_and_freezes_what_start_up_built() -> None:
    assert _settings_after("") == "(700, 10, 10) False"  # the interpreter's defaults, for contrast
    assert _settings_after("from shared import gc_tuning\ngc_tuning.tune_for_serving()") == "(50000, 20, 100) True"
