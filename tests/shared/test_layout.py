"""The house's layering, read from the code: which package may import which.

    shared  <-  core_ledger, edge  <-  harness, monitoring  <-  croupier, bench, tests

`shared` holds only what both services import; the two services never import each other; the tools that run
Croupier (`harness`: cluster launcher, demo, chaos, fault proxy, verifier) and the `croupier` command sit above
them. `python tests/shared/test_layout.py` prints the package-level import graph with counts.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "core_ledger", "edge", "harness", "monitoring", "croupier")
# What each package may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    "shared": set(),
    "core_ledger": {"shared"},
    "edge": {"shared"},
    "monitoring": {"shared", "harness"},
    "harness": {"shared", "core_ledger", "edge", "monitoring"},
    "croupier": {"shared", "core_ledger", "edge", "harness"},
}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(top-level project package, line) for every import in the file, including function-local ones."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [(n.split(".")[0], node.lineno) for n in names if n.split(".")[0] in PACKAGES]
    return found


def graph() -> Counter[tuple[str, str]]:
    edges: Counter[tuple[str, str]] = Counter()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for target, _ in imports_of(path):
                if target != package:
                    edges[(package, target)] += 1
    return edges


def test_no_package_imports_against_the_layering() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for target, line in imports_of(path)
        if target != package and target not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from harness.cluster import Cluster\n    import croupier.cli\n")
    assert imports_of(bad) == [("harness", 2), ("croupier", 3)]


def test_every_project_package_is_in_the_table() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk - {"tests", "bench"} == set(PACKAGES)


if __name__ == "__main__":
    for (source, target), count in sorted(graph().items()):
        sys.stdout.write(f"{source:12} -> {target:12} {count:4} imports\n")
