"""Power loss under concurrent money traffic: the SQLite ledger loses no acknowledged transaction.

A real `croupier ledger serve` runs on the simulated disk of `powerloss/shim.c`; deposits and bets
flow over HTTP from concurrent clients; the power is cut (SIGKILL, then only what was fsynced
survives); the ledger boots on what survived and `workload.check` compares it with every answer the
clients were given. The same scenario on a ledger with synchronous=NORMAL, or on a disk that loses
the last fsync, must report lost acknowledged transactions: the check has teeth.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.crash_workload import HTTP_TIMEOUT, Ack, Load, Report, check, deposit, open_accounts, send
from tests.support.powered_ledger import Disk, PoweredLedger

pytestmark = pytest.mark.slow

WORKERS = 12
ACKS_BEFORE_CUT = 300
TAIL_MAX = 5  # sequential deposits until one commits without a checkpoint; two always suffice


async def quiet_tail(http: aiohttp.ClientSession, powered: PoweredLedger) -> list[Ack]:
    """Sequential acknowledged deposits until the last one did not also checkpoint (fsync ledger.db).

    Then the last acknowledged commit is the last write before the cut, so a disk or a setting that
    does not make a commit durable before acknowledging it must lose that commit (a checkpoint
    right after it would make it durable by accident, and the teeth runs flaky)."""
    acks = []
    for i in range(TAIL_MAX):
        synced_before = len(powered.syncs())
        req = deposit(f"tail-{i}", "p0", 11)
        status, _, body = await send(http, powered.url, req)
        assert status == 201, body
        acks.append(Ack(req, body))
        if not any(name.endswith(".ledger.db") for name in powered.syncs()[synced_before:]):
            return acks
    raise AssertionError(f"every one of {TAIL_MAX} sequential commits checkpointed")


async def traffic_then_power_cut(powered: PoweredLedger, disk: Disk, *, mid_flight: bool) -> tuple[list[Ack], Report]:
    """Load, cut the power (mid-flight, or after the load settled and a quiet tail), reboot, check."""
    await powered.start(disk)
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        acks = await open_accounts(http, powered.url)
        load = Load(powered.url, WORKERS)
        tasks = await load.run_until(http, ACKS_BEFORE_CUT)
        if mid_flight:  # requests are queued, being judged and being committed right now
            powered.power_cut()
            await load.finish(tasks)
        else:
            await load.finish(tasks)
            acks += await quiet_tail(http, powered)
            powered.power_cut()
        acks += load.acks
    syncs = powered.syncs()
    assert any(name.endswith(".ledger.db-wal") for name in syncs), f"the shim saw no WAL fsync: {syncs[:5]}"
    await powered.start(Disk())
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        return acks, await check(http, powered.url, acks)


async def test_power_cut_mid_flight_loses_no_acknowledged_transaction(powered: PoweredLedger) -> None:
    _acks, report = await traffic_then_power_cut(powered, Disk(), mid_flight=True)
    assert report.acknowledged >= ACKS_BEFORE_CUT
    assert report.clean, report
    assert report.journaled >= report.acknowledged


@pytest.mark.parametrize(
    "disk, loses",
    [
        pytest.param(Disk(), False, id="synchronous=FULL-honest-disk"),
        pytest.param(Disk(synchronous="NORMAL"), True, id="synchronous=NORMAL"),
        pytest.param(Disk(mode="drop_last"), True, id="disk-drops-last-fsync"),
    ],
)
async def test_power_cut_detects_lost_acknowledgements_exactly_when_commits_are_not_durable(
    powered: PoweredLedger, disk: Disk, loses: bool
) -> None:
    acks, report = await traffic_then_power_cut(powered, disk, mid_flight=False)
    tail = [a.request.id for a in acks if a.request.id.startswith("tail-")]
    if not loses:
        assert report.clean, report
        return
    assert tail[-1] in report.lost, report
    assert tail[-1] in "".join(report.changed_on_retry), report
    assert not report.duplicated and not report.fold_problems and report.chain_ok, report
    if disk.mode == "drop_last":  # one fsync lost: exactly the last acknowledged commit
        assert report.lost == [tail[-1]], report
