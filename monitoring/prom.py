"""Run a real Prometheus (Debian's `prometheus`) against a cluster directory and ask it questions.

Used by the end-to-end checks: every dashboard query returns data, and every metric name the rules
and dashboards use is served by a live target (`scraped_names`). Loopback only; every wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from monitoring.promql import (
    Expression,
    exposition_sample_names,
    longest_group_interval_s,
    substitute_grafana_variables,
)
from monitoring.scrape import write_prometheus_dir

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.25
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)


@contextlib.asynccontextmanager
async def running_prometheus(cluster_dir: Path, port: int, scrape_interval_s: int = 1) -> AsyncIterator[str]:
    """Starts Prometheus on 127.0.0.1:port scraping the cluster; yields its URL; always stops it."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus missing: run `make tools` (Debian package prometheus)"
    config = write_prometheus_dir(cluster_dir, scrape_interval_s)
    log = (cluster_dir / "prometheus" / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={cluster_dir / 'prometheus' / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait(lambda http: _ready(http, url), READY_TIMEOUT_S, "prometheus ready")
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)


async def _wait(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        while time.monotonic() < deadline:
            try:
                if await check(http):
                    return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{what}: not after {timeout_s}s")


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(f"{url}/-/ready") as r:
        return r.status == 200


async def wait_targets_up(url: str, expected: int, timeout_s: float = READY_TIMEOUT_S) -> None:
    async def all_up(http: aiohttp.ClientSession) -> bool:
        async with http.get(f"{url}/api/v1/targets") as r:
            active = (await r.json())["data"]["activeTargets"]
        return len(active) == expected and all(t["health"] == "up" for t in active)

    await _wait(all_up, timeout_s, f"{expected} targets up")


async def query(http: aiohttp.ClientSession, url: str, expr: str) -> list[dict]:
    async with http.get(f"{url}/api/v1/query", params={"query": substitute_grafana_variables(expr)}) as r:
        body = await r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def rule_data_wait_s() -> float:
    """How long a recorded series may take to appear once its inputs have data: a rule group with an
    interval of its own (the SLO group: 30 s) evaluates once per interval, and its first evaluation
    may come before a rate has its two scrapes; the next one is a whole interval later."""
    return 2 * longest_group_interval_s() + 5.0


async def expressions_without_data(
    url: str, expressions: list[Expression], timeout_s: float = READY_TIMEOUT_S
) -> list[str]:
    """Sources of the expressions that still return no series after timeout_s, or after
    `rule_data_wait_s` if that is longer (rates need 2 scrapes, recordings their group's turn)."""
    pending = list(expressions)
    deadline = time.monotonic() + max(timeout_s, rule_data_wait_s())
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        while pending and time.monotonic() < deadline:
            pending = [e for e in pending if not await query(http, url, e.expr)]
            if pending:
                await asyncio.sleep(POLL_S * 4)
    return [e.source for e in pending]


async def scraped_names(target_urls: list[str], token: str) -> set[str]:
    """Sample names served on /metrics by the given processes (what a live cluster exports)."""
    names: set[str] = set()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT, raise_for_status=True) as http:
        for target in target_urls:
            async with http.get(f"{target}/metrics", headers=headers) as r:
                names |= exposition_sample_names(await r.text())
    return names
