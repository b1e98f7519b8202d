"""Searching for a cluster's clear credentials where they must never be: answers and written files.

Clear tokens live only in the cluster's secrets/ directory and cluster.json; configs hold digests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from harness.cluster import Cluster

FILE_BYTES_MAX = 64 << 20  # bounds what one scanned file may hold
LISTED_ROLES = {"game_server", "peer", "edge", "cashier", "admin_read", "admin_write"}


def cluster_tokens(cluster: Cluster) -> dict[str, str]:
    """Every clear credential of `cluster` by name: those it made and those cluster.json lists."""
    listed = json.loads((cluster.root / "cluster.json").read_text())["tokens"]
    assert set(listed) >= LISTED_ROLES, listed
    return {**cluster.tokens, **listed}


def written_files(root: Path) -> list[Path]:
    """Everything under the cluster's directory except the two homes of clear tokens."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name != "cluster.json" and "secrets" not in p.relative_to(root).parts
    )


def leaks_in_files(root: Path, tokens: dict[str, str]) -> list[str]:
    leaks = []
    for path in written_files(root):
        data = path.read_bytes()
        assert len(data) <= FILE_BYTES_MAX, path
        leaks += [f"{name} in {path.relative_to(root)}" for name, t in tokens.items() if t.encode() in data]
    return leaks


def leaks_in_bodies(bodies: Iterable[tuple[str, int, bytes]], tokens: dict[str, str]) -> list[str]:
    """`bodies` as (url, status, body)."""
    return [
        f"{name} in the {status} body of {url}"
        for url, status, body in bodies
        for name, t in tokens.items()
        if t.encode() in body
    ]
