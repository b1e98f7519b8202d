"""Clusters on a local PostgreSQL (and on Patroni): real processes, each test in a short temp dir
(PostgreSQL's unix socket lives there and its path is limited to 107 bytes)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cr-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
