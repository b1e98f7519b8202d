"""The SQLite store creates its data directory durably: each new entry's parent is fsynced."""

import os

from core_ledger.store import sqlite


def test_each_created_directory_has_its_parent_fsynced_and_existing_ones_cost_nothing(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(sqlite.os, "fsync", recording_fsync)
    target = tmp_path / "a" / "b" / "c"
    sqlite.mkdir_durable(target)
    assert target.is_dir()
    assert synced == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    synced.clear()
    sqlite.mkdir_durable(target)
    assert synced == []
