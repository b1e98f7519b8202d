"""The ledger's modules keep to one job each (docs/DESIGN.md, the core_ledger module map), read
from the code: the parts of a ledger copy (writer, failover, replica apply, overlay) know nothing
of HTTP; failover never reaches into the writer or the replica apply (they ask it, not the other
way round); handlers never build the app (the composition root is core_ledger/app.py alone)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "core_ledger"

# The parts of one ledger copy, under the `LedgerService` facade: no HTTP, no app wiring.
COPY_PARTS = ("service", "writer", "failover", "replica_apply", "overlay", "watermark")
HTTP_SIDE = {
    "aiohttp",
    "core_ledger.app",
    "core_ledger.app_keys",
    "core_ledger.http",
    "core_ledger.admin_http",
    "core_ledger.query",
    "core_ledger.answers",
    "core_ledger.fencing",
    "core_ledger.standby_tailer",
}
# Who may not import whom, beyond the rule above: the dependencies between the parts point one way.
NOT_IMPORTED: dict[str, set[str]] = {
    "watermark": {
        "core_ledger.overlay",
        "core_ledger.failover",
        "core_ledger.writer",
        "core_ledger.replica_apply",
        "core_ledger.service",
    },
    "overlay": {"core_ledger.failover", "core_ledger.writer", "core_ledger.replica_apply", "core_ledger.service"},
    "failover": {"core_ledger.writer", "core_ledger.replica_apply", "core_ledger.service"},
    "writer": {"core_ledger.replica_apply", "core_ledger.service"},
    "replica_apply": {"core_ledger.writer", "core_ledger.service"},
    "http": {"core_ledger.app"},
    "admin_http": {"core_ledger.app"},
}


def modules_imported(path: Path) -> set[str]:
    """Every module an import in the file names (function-local ones too), with its parents."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


def test_the_parts_of_a_ledger_copy_know_nothing_of_http() -> None:
    wrong = {m: sorted(modules_imported(LEDGER / f"{m}.py") & HTTP_SIDE) for m in COPY_PARTS}
    assert not {m: w for m, w in wrong.items() if w}


def test_dependencies_between_the_ledger_modules_point_one_way() -> None:
    wrong = {m: sorted(modules_imported(LEDGER / f"{m}.py") & banned) for m, banned in NOT_IMPORTED.items()}
    assert not {m: w for m, w in wrong.items() if w}


def test_only_the_composition_root_builds_the_app() -> None:
    builders = sorted(
        path.name
        for path in LEDGER.glob("*.py")
        if any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "create_app"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
        )
    )
    assert builders == ["app.py"]


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from core_ledger.writer import LedgerWriter\n    import aiohttp.web\n")
    assert {"core_ledger.writer", "core_ledger.writer.LedgerWriter", "aiohttp", "aiohttp.web"} <= modules_imported(bad)
