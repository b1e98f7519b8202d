"""The bench scripts run as `python bench/<script>.py`, importing their siblings by plain name
(`from common import ...`); tests import them the same way, so bench/ goes on the path here."""

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
