"""Suite-wide settings, and the fixtures several directories use (`pg_server`, `short_dir`); every
other fixture lives in the conftest.py of the directory that uses it.

Every answer of an in-process ledger or edge is checked against its OpenAPI document
(tests/support/answer_check.py, loaded as a plugin).

Child processes (`python -m croupier ...`, started by the cluster harness in a temporary directory)
import the code under test: the repository holding this file goes first on their PYTHONPATH, so
the suite runs the same from any directory and never picks up another installed copy.

`--test-order` runs the collected tests in another order, to show that no test depends on another
having run first:

    python -m pytest -n 0 tests/ledger --test-order=reverse
    python -m pytest -n 0 tests/ledger --test-order=shuffle --test-order-seed=7

`shuffle` keeps each directory's and each module's tests together (package- and module-scoped
fixtures stay set up once) and shuffles the directories, the modules in each and the tests in each
module (tests/support/ordering.py); the seed, random unless given, is printed before and after the
run, so a failing order is rerun with the same seed.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_postgres import PgServer, running_postgres
from tests.support.ordering import shuffled_by_module

pytest_plugins = ["tests.support.answer_check"]

REPO = Path(__file__).resolve().parents[1]
ORDERS = ("given", "reverse", "shuffle")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("croupier", "Croupier test suite")
    group.addoption(
        "--test-order",
        choices=ORDERS,
        default="given",
        help="run the tests as collected, reversed, or shuffled (default: given)",
    )
    group.addoption(
        "--test-order-seed",
        type=int,
        default=None,
        help="seed of --test-order=shuffle (default: a random one, printed)",
    )


def pytest_configure(config: pytest.Config) -> None:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])
    if config.getoption("test_order") == "shuffle" and config.getoption("test_order_seed") is None:
        config.option.test_order_seed = random.SystemRandom().randrange(1 << 32)


def describe_order(config: pytest.Config) -> str | None:
    order = config.getoption("test_order")
    if order == "shuffle":
        return f"test order: shuffle, --test-order-seed={config.getoption('test_order_seed')}"
    return None if order == "given" else f"test order: {order}"


def pytest_report_header(config: pytest.Config) -> str | None:
    return describe_order(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    described = describe_order(config)
    if described:
        terminalreporter.write_line(described)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = config.getoption("test_order")
    if order == "reverse":
        items.reverse()
    elif order == "shuffle":
        items[:] = shuffled_by_module(items, random.Random(config.getoption("test_order_seed")))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One running PostgreSQL for the whole session (started only when a test asks), stopped and
    removed at its end."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp dir of a short path, removed after the test: for what puts a unix socket under it
    (PostgreSQL's, a ledger's private socket to its fronts), whose path is limited to 107 bytes.
    `tmp_path` is longer under pytest-xdist (a `popen-gwN` level more)."""
    path = Path(tempfile.mkdtemp(prefix="cr-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
