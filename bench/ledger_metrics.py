"""The ledger's own metrics around a benchmark's load: every sample of its /metrics (`ledger_samples`),
one gauge (`ledger_gauge`), and what its histograms counted between two scrapes (`store_figures`:
the writer's side of a load: commits, how long and how many bets each, and on SQLite the WAL
checkpoints beside them). `bench/ledger_scale.py` and `bench/ledger_throughput.py` report them
per load, so a figure comes with where its time went."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness.cluster import Cluster


async def ledger_samples(cluster: Cluster) -> list[Sample]:
    """Every sample of the ledger's /metrics."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(raise_for_status=True, timeout=timeout) as http,
        http.get(cluster.url("ledger") + "/metrics", headers=cluster.headers("admin_read")) as answer,
    ):
        return samples_of(await answer.text())


def samples_of(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


async def ledger_gauge(cluster: Cluster, name: str) -> float:
    """A gauge without labels from the ledger's /metrics (NaN when it is not there)."""
    for sample in await ledger_samples(cluster):
        if sample.name == name and not sample.labels:
            return float(sample.value)
    return math.nan


def histogram_between(before: list[Sample], after: list[Sample], name: str, over_s: tuple[float, ...]) -> dict:
    """What a histogram without labels counted between two scrapes: how many, their mean, and how
    many took longer than each bound of `over_s` (bucket bounds, in seconds)."""

    def value(samples: list[Sample], suffix: str, le: float | None = None) -> float:
        for sample in samples:
            if sample.name == name + suffix and (le is None or float(sample.labels["le"]) == le):
                return float(sample.value)
        return 0.0

    count = value(after, "_count") - value(before, "_count")
    total = value(after, "_sum") - value(before, "_sum")
    over = {
        f"over_{round(bound * 1000)}ms": round(
            count - (value(after, "_bucket", bound) - value(before, "_bucket", bound))
        )
        for bound in over_s
    }
    return {"count": round(count), "mean": round(total / count, 4) if count else None, **over}


def store_figures(before: list[Sample], after: list[Sample]) -> dict[str, Any]:
    """The writer's side of a load, from the ledger's own histograms: commits (how long, how many
    bets each) and, on SQLite, the background WAL checkpoints beside them and the writer's part of
    them, which commits wait for (`mean` in seconds)."""
    slow = (0.01, 0.025, 0.05, 0.1)
    return {
        "commits": histogram_between(before, after, "ledger_commit_duration_seconds", slow),
        "commit_group": histogram_between(before, after, "ledger_commit_batch_size", ()),
        "wal_checkpoints": histogram_between(before, after, "ledger_wal_checkpoint_duration_seconds", slow),
        "wal_checkpoint_writer": histogram_between(before, after, "ledger_wal_checkpoint_writer_seconds", slow),
    }
