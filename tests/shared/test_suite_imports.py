"""The test suite's own layering: test modules never import each other.

A helper two test modules need lives in `tests/support/` (named for what it holds); a fixture lives in the
conftest.py of the directory that uses it and arrives by name, never by import. So any test module runs alone,
in any order, and moving or deleting one test module breaks no other.

Checked here, from the code (every import, function-local ones and relative ones included, and
`importlib.import_module("tests....")`): test modules, conftest files and tests/support import from `tests` only
`tests.support.*` and the modules of `NOT_YET_MOVED`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = "tests.support"
# Helper modules still beside the tests that use them, because they are being rewritten in parallel; each moves
# to tests/support/ and leaves this list. Shrink it, never grow it.
NOT_YET_MOVED: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def imported_modules(source: str, importer: str) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in `source`, the module `importer`."""
    package = importer.rsplit(".", 1)[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from tests import support` imports the module `tests.support`
            found += (
                [(f"{module}.{a.name}", node.lineno) for a in node.names]
                if module == "tests"
                else [(module, node.lineno)]
            )
        elif isinstance(node, ast.Call) and (name := literally_imported(node)):
            found.append((name, node.lineno))
    return found


def literally_imported(call: ast.Call) -> str:
    """The module `call` imports if it is `importlib.import_module("...")`, `import_module("...")` or
    `__import__("...")` with a literal name; else ""."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    arg = call.args[0] if call.args else None
    if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return ""


def forbidden(module: str) -> bool:
    """Whether a test module, conftest or support module may not import `module`."""
    if module != "tests" and not module.startswith("tests."):
        return False
    return not (module == SUPPORT or module.startswith(SUPPORT + ".") or module in NOT_YET_MOVED)


def checked_files() -> list[Path]:
    return sorted({*TESTS.rglob("test_*.py"), *TESTS.rglob("conftest.py"), *(TESTS / "support").rglob("*.py")})


def violations(path: Path) -> list[str]:
    importer = module_name(path)
    return [
        f"{path.relative_to(TESTS.parent)}:{line} imports {module}"
        for module, line in imported_modules(path.read_text(), importer)
        if forbidden(module)
    ]


def test_no_test_module_conftest_or_support_module_imports_another_test_module() -> None:
    files = checked_files()
    assert len(files) > 100 and TESTS / "support" / "__init__.py" in files
    found = [v for path in files for v in violations(path)]
    assert found == [], "move what they share to tests/support/ (fixtures: to a conftest.py):\n" + "\n".join(found)


def test_every_module_not_yet_moved_still_exists_so_the_list_only_shrinks() -> None:
    for module in sorted(NOT_YET_MOVED):
        assert (TESTS.parent / (module.replace(".", "/") + ".py")).is_file(), f"{module} moved: drop it from the list"


@pytest.mark.parametrize(
    ("source", "importer", "expected"),
    [
        ("from tests.ledger.test_standby import wait_for", "tests.failover.test_x", ["tests.ledger.test_standby"]),
        ("from tests.edge.conftest import GS", "tests.edge.test_x", ["tests.edge.conftest"]),
        ("import tests.security.test_bad_input", "tests.security.test_x", ["tests.security.test_bad_input"]),
        ("from .test_config import CONFIG", "tests.edge.test_x", ["tests.edge.test_config"]),
        ("from ..ledger import conftest", "tests.edge.test_x", ["tests.ledger"]),
        (
            "def f():\n    from tests.monitoring.test_rules import promtool",
            "tests.monitoring.test_x",
            ["tests.monitoring.test_rules"],
        ),
        ("importlib.import_module('tests.edge.test_config')", "tests.edge.test_x", ["tests.edge.test_config"]),
        ("from tests.support.polling import wait_for", "tests.failover.test_x", []),
        ("from tests.support import polling", "tests.failover.test_x", []),
        ("from tests import support", "tests.failover.test_x", []),
        ("from tests import edge", "tests.failover.test_x", ["tests.edge"]),
        ("from tests.support.local_postgres import pg_server", "tests.ledger.conftest", []),
        ("from core_ledger.store import Store\nimport pytest", "tests.ledger.test_x", []),
    ],
)
def test_the_check_sees_every_form_of_import_between_test_modules(
    source: str, importer: str, expected: list[str]
) -> None:
    assert [m for m, _ in imported_modules(source, importer) if forbidden(m)] == expected
