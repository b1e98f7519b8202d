"""The pure domains (core_ledger/domain, edge/crdt) are type-checked with every flag of mypy's
`--strict`, spelled out in a pyproject override (see its comment for why not `strict = true`)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = {"core_ledger.domain", "core_ledger.domain.*", "edge.crdt", "edge.crdt.*"}


def strict_flags() -> set[str]:
    """The config names of the flags that this mypy's --strict enables (from its --help)."""
    text = subprocess.run(
        [sys.executable, "-m", "mypy", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    listed = re.search(r"--strict\s+Strict mode; enables the following flags:(.*?)\n\s{2}-", text, re.S)
    assert listed, "mypy --help no longer lists what --strict enables"
    flags = re.sub(r"\s+", "", listed.group(1)).split(",")
    return {f.removeprefix("--").replace("-", "_") for f in flags if f}


def test_the_domains_are_checked_with_every_strict_flag() -> None:
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    [override] = [o for o in mypy["overrides"] if set(o["module"]) >= DOMAINS]
    enabled = {name for name, value in {**mypy, **override}.items() if value is True}
    enabled |= {"no_implicit_reexport"} if override.get("implicit_reexport") is False else set()
    missing = strict_flags() - enabled
    assert not missing, f"add to the domains' mypy override: {sorted(missing)}"
