"""Metrics every Croupier process exports besides its own: the process, platform and garbage
collector collectors of prometheus_client (CPU, memory, open files; Python version; GC), the build
(`croupier_build_info{version,service}` = 1), and sizes of files on disk read at scrape time.

Values read at scrape time (file sizes, free space, queue depth) are gauges with a function: they
cost nothing between scrapes and can never be stale.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector

from shared.logs import version

SERVICES = ("ledger", "edge")


def register_runtime_collectors(registry: CollectorRegistry, service: str) -> None:
    """process_* (CPU seconds, resident memory, open and max file descriptors, start time),
    python_info and python_gc_* on `registry`, and croupier_build_info for `service`."""
    assert service in SERVICES, service
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge(
        "croupier_build_info",
        "Always 1: the running version of this Croupier service.",
        ["version", "service"],
        registry=registry,
    ).labels(version(), service).set(1)


def file_bytes(path: Path) -> float:
    """The size of a file, 0 while it does not exist (a WAL file comes and goes)."""
    try:
        return float(os.stat(path).st_size)
    except FileNotFoundError:
        return 0.0


def free_bytes(directory: Path) -> Callable[[], float]:
    """Bytes free for an unprivileged writer on the file system holding `directory` (NaN if unreadable)."""

    def read() -> float:
        try:
            return float(shutil.disk_usage(directory).free)
        except OSError:
            return float("nan")

    return read


def sqlite_files(db_path: Path) -> dict[str, Path]:
    """The files of a SQLite database in WAL mode, by the `file` label value that names them."""
    return {"db": db_path, "wal": db_path.with_name(db_path.name + "-wal")}
