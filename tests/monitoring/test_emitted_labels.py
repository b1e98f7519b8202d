"""The alerts can really fire: every metric name, and every label value, that an alert rule, a
recording rule or a dashboard query selects is emitted by the real code.

A real ledger and its standby, and real edges, run in-process on fresh registries: one edge on a
real ledger (answers and refusals), one whose ledger port is closed, one whose ledger answers 503
`ledger_unavailable`, one whose ledger answers 503 `not_primary`, one whose ledger answers too
late. What their registries hold is compared with the matchers parsed from the shipped PromQL.
(The stand-in exporter of test_prometheus_e2e.py proves the queries run; it proves nothing here.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from core_ledger.app import create_app as create_ledger
from core_ledger.standby_tailer import StandbySettings
from edge.app import create_app as create_edge
from harness.cluster import free_port
from monitoring import contract
from monitoring.promql import (
    MONITORING_DIR,
    LabelMatcher,
    all_expressions,
    label_matchers,
    metric_names,
    recorded_names,
)
from tests.support.edges import GS, edge_config
from tests.support.fake_ledger import FakeLedger
from tests.support.ledger import TOKENS, ledger_config

# Labels Prometheus attaches from the scrape config (monitoring/scrape.py), not the code.
TARGET_LABELS = frozenset({"job", "instance", "region", "service", "role"})
Samples = dict[str, list[dict[str, str]]]  # sample name -> label sets


def samples(registries: list[CollectorRegistry]) -> tuple[Samples, set[str]]:
    """(label sets per sample name, every sample name a registered metric exports)."""
    out: Samples = defaultdict(list)
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
            for s in family.samples:
                out[s.name].append(s.labels)
                names.add(s.name)
    return out, names


def scrape_jobs() -> set[str]:
    config = yaml.safe_load((MONITORING_DIR / "prometheus" / "prometheus.yml").read_text())
    return {job["job_name"] for job in config["scrape_configs"]}


def unmatched(matchers: list[LabelMatcher], emitted: Samples) -> list[str]:
    """Matchers that select a label value nothing emits (each alternative of `a|b` counts alone)."""
    problems = []
    for m in (m for m in matchers if m.selects):
        if m.metric in contract.PROMETHEUS_SERIES or m.label in TARGET_LABELS:
            if m.label == "job" and not any(m.matches(job) for job in scrape_jobs()):
                problems.append(f"{m.source}: {m.metric}{{job{m.op}{m.value!r}}} names no scrape job")
            continue
        values = {labels[m.label] for labels in emitted.get(m.metric, []) if m.label in labels}
        wanted = m.value.split("|") if m.op == "=~" and re.fullmatch(r"[\w|]+", m.value) else [m.value]
        for want in wanted:
            probe = dataclasses.replace(m, value=want)
            if not any(probe.matches(v) for v in values):
                problems.append(
                    f"{m.source}: {m.metric}{{{m.label}{m.op}{want!r}}} but the code emits {sorted(values)}"
                )
    return problems


async def stub_ledger(status: int, code: str) -> TestServer:
    """A ledger that answers every request `status` with a problem body of `code`."""

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(
            {"type": "about:blank", "title": "x", "status": status, "detail": code, "code": code},
            status=status,
            content_type="application/problem+json",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@dataclasses.dataclass
class Running:
    servers: list[TestServer]
    registries: list[CollectorRegistry]

    async def close(self) -> None:
        for server in reversed(self.servers):
            await server.close()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    run = Running([], [])
    try:
        yield run
    finally:
        await run.close()


async def start(
    run: Running, app: web.Application, registry: CollectorRegistry | None = None, port: int | None = None
) -> str:
    server = TestServer(app, host="127.0.0.1", port=port or free_port())
    await server.start_server()
    run.servers.append(server)
    if registry is not None:
        run.registries.append(registry)
    return str(server.make_url("")).rstrip("/")


async def start_edge(
    run: Running, root: Path, edge_id: str, ledger_url: str, *, peers: dict[str, int] | None = None, **overrides: Any
) -> str:
    registry = CollectorRegistry()
    port = free_port()
    cfg = edge_config(root, edge_id, 1, ledger_url, port, peers or {}, **overrides)
    return await start(run, create_edge(cfg, registry=registry), registry, port)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, role_token: str, body: Any = None, **headers: str
) -> int:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {role_token}", **headers}) as r:
        await r.read()
        return r.status


def bet(i: int) -> dict[str, Any]:
    return {
        "id": f"m-{i}",
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": 10,
        "round_id": f"r-{i}",
        "game_id": "slots",
    }


async def drive_ledger_and_standby(run: Running, root: Path, http: aiohttp.ClientSession) -> str:
    """A primary with traffic (commits, a refusal, a replay, epoch claims, an audit) and a standby
    tailing it; the primary's URL."""
    registry = CollectorRegistry()
    ledger = await start(
        run, create_ledger(ledger_config(root / "primary", http_body_timeout_s=0.3), registry=registry), registry
    )
    standby_registry = CollectorRegistry()
    settings = StandbySettings(ledger, TOKENS["replica"], poll_interval_s=0.05)
    await start(
        run,
        create_ledger(ledger_config(root / "standby"), registry=standby_registry, standby=settings),
        standby_registry,
    )
    assert (
        await call(
            http,
            "POST",
            ledger + "/admin/v1/players",
            TOKENS["admin_write"],
            {"player_id": "p1", "currencies": ["EUR"]},
        )
        == 201
    )
    assert (
        await call(
            http,
            "POST",
            ledger + "/v1/deposits",
            TOKENS["cashier"],
            {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 100},
        )
        == 201
    )
    assert await call(http, "POST", ledger + "/v1/bets", TOKENS["edge"], bet(0)) == 201
    assert await call(http, "POST", ledger + "/v1/bets", TOKENS["edge"], bet(0)) == 200  # a replay
    assert await call(http, "POST", ledger + "/v1/bets", TOKENS["edge"], {**bet(1), "amount_minor": 10**6}) == 422
    # epoch claims: from a credential that may not make one, and one no peer proves
    await call(http, "GET", ledger + "/v1/players/p1/balances", TOKENS["cashier"], **{"X-Ledger-Epoch": "7"})
    await call(http, "GET", ledger + "/v1/players/p1/balances", TOKENS["edge"], **{"X-Ledger-Epoch": "7"})
    assert await call(http, "POST", ledger + "/admin/v1/audit/verify", TOKENS["admin_write"]) == 200
    assert await slow_body_status(ledger, "/v1/bets", TOKENS["edge"]) == 408
    return ledger


async def slow_body_status(base: str, path: str, token: str) -> int:
    """The status answered to a request whose body stops half-way (the body deadline's 408)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{".encode()
        )
        status_line = await asyncio.wait_for(reader.readline(), 5)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_every_name_and_label_value_the_monitoring_selects_is_emitted_by_the_real_code(running, tmp_path):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        ledger = await drive_ledger_and_standby(running, tmp_path, http)
        unavailable = await stub_ledger(503, "ledger_unavailable")
        not_primary = await stub_ledger(503, "not_primary")
        full = await stub_ledger(503, "too_many_connections")
        slow = FakeLedger(delay_s=2.0)
        slow_url = await start(running, slow.app())
        running.servers += [unavailable, not_primary, full]
        edges = {
            # A peer (never started): the per-peer sync series exist as soon as a peer is configured.
            "real": await start_edge(
                running, tmp_path, "real", ledger, peers={"zz-peer": free_port()}, ledger_token=TOKENS["edge"]
            ),
            "closed": await start_edge(running, tmp_path, "closed", f"http://127.0.0.1:{free_port()}"),
            "503": await start_edge(running, tmp_path, "e503", str(unavailable.make_url("")).rstrip("/")),
            "not_primary": await start_edge(running, tmp_path, "np", str(not_primary.make_url("")).rstrip("/")),
            "full": await start_edge(running, tmp_path, "full", str(full.make_url("")).rstrip("/")),
            "slow": await start_edge(running, tmp_path, "slow", slow_url),
        }
        statuses = await asyncio.gather(
            *(call(http, "POST", url + "/v1/bets", GS, bet(10 + i)) for i, url in enumerate(edges.values()))
        )
        assert await call(http, "GET", edges["real"] + "/v1/players/nobody/balances", GS) == 404
        await asyncio.sleep(0.3)  # the standby's next poll: its lag gauges are set
    assert dict(zip(edges, statuses, strict=True)) == {
        "real": 201,
        "closed": 503,
        "503": 503,
        "not_primary": 503,
        "full": 503,
        "slow": 503,
    }

    emitted, names = samples(running.registries)
    # the outcomes that tell "no usable answer" apart, each from the path that produces it
    outcomes = {labels["outcome"] for labels in emitted["edge_ledger_request_duration_seconds_count"]}
    assert outcomes == set(contract.EDGE_LEDGER_OUTCOMES)
    # the operations metrics carry the label values docs/DESIGN.md promises
    assert {labels["file"] for labels in emitted["ledger_db_bytes"]} == {"db", "wal"}
    assert {labels["file"] for labels in emitted["edge_db_bytes"]} == {"db", "wal"}
    assert {labels["service"] for labels in emitted["croupier_build_info"]} == {"ledger", "edge"}
    assert {labels["url_index"] for labels in emitted["edge_ledger_breaker_open"]} == {"0"}
    assert {labels["code"] for labels in emitted["edge_money_errors_total"]} == {"ledger_unavailable", "other"}
    expressions = all_expressions()
    assert unmatched(label_matchers(expressions), emitted) == []
    used = set().union(*(metric_names(e.expr) for e in expressions))
    assert used - names - recorded_names() - contract.PROMETHEUS_SERIES == set()
    # A counter an alert watches must have its series before the first failure: `increase()` does
    # not count the step from an absent series to 1, so the first failure would never fire it.
    watched = set().union(*(metric_names(e.expr) for e in expressions if e.source.startswith("croupier-alerts")))
    assert {n for n in watched if n.endswith("_total")} - set(emitted) == set()
    assert contract.exported_sample_names() - names == set()  # the contract holds no name the code lacks


def test_a_matcher_on_a_label_value_nothing_emits_is_reported():
    emitted: Samples = {"edge_ledger_request_duration_seconds_count": [{"outcome": "error"}, {"outcome": "ok"}]}
    stale = LabelMatcher("rule", "edge_ledger_request_duration_seconds_count", "outcome", "=", "unavailable")
    partial = LabelMatcher("rule", "edge_ledger_request_duration_seconds_count", "outcome", "=~", "error|timeout")
    fine = LabelMatcher("rule", "edge_ledger_request_duration_seconds_count", "outcome", "=~", "err.*")
    unknown_job = LabelMatcher("rule", "up", "job", "=", "croupier-nothing")
    assert unmatched([fine, LabelMatcher("rule", "up", "job", "=~", "croupier-.*")], emitted) == []
    assert len(unmatched([stale], emitted)) == 1 and "unavailable" in unmatched([stale], emitted)[0]
    assert ["'timeout'" in p for p in unmatched([partial], emitted)] == [True]
    assert len(unmatched([unknown_job], emitted)) == 1
