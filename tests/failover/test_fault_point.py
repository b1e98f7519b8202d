"""The ledger's test-only fault point (the chaos run's slow standby apply): off by default, named
in config only, exported as `ledger_fault_point_enabled`, and it slows a standby's apply while
its file holds a number of seconds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from core_ledger import config as ledger_config_file
from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE
from core_ledger.standby_tailer import StandbySettings
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config
from tests.support.polling import wait_for


def test_the_fault_point_is_off_unless_configured_and_its_file_is_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "ledger.toml"
    path.write_text("[ledger]\n")
    assert ledger_config_file.load(path).fault_apply_delay_file is None
    path.write_text('[ledger]\nfault_apply_delay_file = "faults/delay"\n')
    assert ledger_config_file.load(path).fault_apply_delay_file == (tmp_path / "faults" / "delay").resolve()


async def test_a_standby_apply_pauses_while_the_fault_file_holds_seconds(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    primary_registry = CollectorRegistry()
    primary_app = create_app(ledger_config(tmp_path / "primary"), clock=clock, registry=primary_registry)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    fault_file = tmp_path / "apply-delay"
    settings = StandbySettings(str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.02)
    standby_app = create_app(
        ledger_config(tmp_path / "standby", fault_apply_delay_file=fault_file),
        clock=clock,
        standby=settings,
        registry=registry,
    )
    await aiohttp_client(standby_app)
    assert registry.get_sample_value("ledger_fault_point_enabled") == 1
    assert primary_registry.get_sample_value("ledger_fault_point_enabled") == 0

    await primary.player(deposit=1000)
    await wait_for(lambda: standby_app[SERVICE].head == primary_app[SERVICE].head, 5)  # no file: no pause

    fault_file.write_text("0.4")
    assert (await primary.post("edge", "/v1/bets", bet("slow", 10)))[0] == 201
    started = time.monotonic()
    await wait_for(lambda: standby_app[SERVICE].head == primary_app[SERVICE].head, 5)
    assert time.monotonic() - started >= 0.3

    fault_file.unlink()
    assert (await primary.post("edge", "/v1/bets", bet("fast", 10)))[0] == 201
    started = time.monotonic()
    await wait_for(lambda: standby_app[SERVICE].head == primary_app[SERVICE].head, 5)
    assert time.monotonic() - started < 0.3
