"""The power-loss shim models a power cut exactly: a file keeps its content as of its last fsync,
a new name survives only after a directory fsync, drop_last loses exactly the last fsync, and the
disk-full flag fails writes with ENOSPC. Checked with a tiny writer process, no ledger."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.powered_ledger import Disk, materialize, shim_env

CHILD_TIMEOUT_S = 30.0
BLOCK = 4096

# Each step is commented with what must be durable afterwards. Ends by SIGKILL (the power cut).
WRITER = f"""
import os, signal, sys
d = sys.argv[1]
def fd(name): return os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o600)
old = fd("old"); os.pwrite(old, b"B" * 10, 0)                 # never fsynced: lost
new1 = fd("new1"); os.write(new1, b"x" * 10000); os.fsync(new1)
trunc = fd("trunc"); os.write(trunc, b"a" * {3 * BLOCK}); os.fsync(trunc)
dirfd = os.open(d, os.O_RDONLY); os.fsync(dirfd)              # names old, new1, trunc durable
new2 = fd("new2"); os.write(new2, b"z" * 10); os.fsync(new2)  # content synced, name never: lost
os.write(new1, b"y" * 100)                                    # appended, never fsynced: lost
shm = fd("x-shm"); os.write(shm, b"s"); os.fsync(shm)         # not modelled: absent
os.ftruncate(trunc, 0); os.pwrite(trunc, b"b", {2 * BLOCK}); os.fsync(trunc)  # zeros, then b
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_writer(shim: Path, tmp_path: Path, disk: Disk) -> dict[str, bytes]:
    data, shadow = tmp_path / "data", tmp_path / "shadow"
    data.mkdir()
    shadow.mkdir()
    (data / "old").write_bytes(b"A" * 5000)  # present at start: durable
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(data)],
        env=shim_env(shim, data, shadow, disk),
        capture_output=True,
        check=False,
        timeout=CHILD_TIMEOUT_S,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    materialize(shadow, data)
    return {p.name: p.read_bytes() for p in data.iterdir()}


def test_honest_disk_keeps_each_file_as_of_its_last_fsync_and_names_as_of_the_directory_fsync(
    shim: Path, tmp_path: Path
) -> None:
    files = run_writer(shim, tmp_path, Disk())
    assert sorted(files) == ["new1", "old", "trunc"]
    assert files["old"] == b"A" * 5000
    assert files["new1"] == b"x" * 10000
    assert files["trunc"] == b"\0" * (2 * BLOCK) + b"b"


def test_drop_last_loses_exactly_the_most_recent_fsync(shim: Path, tmp_path: Path) -> None:
    files = run_writer(shim, tmp_path, Disk(mode="drop_last"))
    assert sorted(files) == ["new1", "old", "trunc"]
    assert files["new1"] == b"x" * 10000
    assert files["trunc"] == b"a" * (3 * BLOCK)  # the truncate + rewrite was the last fsync


@pytest.mark.parametrize("watched", [True, False])
def test_disk_full_flag_fails_writes_to_watched_files_after_the_allowed_count(
    shim: Path, tmp_path: Path, watched: bool
) -> None:
    data, shadow, elsewhere = tmp_path / "data", tmp_path / "shadow", tmp_path / "elsewhere"
    for d in (data, shadow, elsewhere):
        d.mkdir()
    flag = tmp_path / "full"
    flag.write_text("1")  # one more write succeeds, then the disk is full
    target = (data if watched else elsewhere) / "f"
    script = (
        f"import os\nfd = os.open({str(target)!r}, os.O_RDWR | os.O_CREAT)\n"
        "for _ in range(2):\n"
        "    try:\n        os.write(fd, b'x'); print(0)\n    except OSError as e:\n        print(e.errno)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=shim_env(shim, data, shadow, Disk(full_flag=flag)),
        capture_output=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    assert [int(x) for x in proc.stdout.split()] == ([0, errno.ENOSPC] if watched else [0, 0])
