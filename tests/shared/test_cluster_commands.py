"""`croupier demo` and a short `croupier chaos` run end to end on real processes and pass.

The demo is what `make demo` runs; the chaos run is the short form of `make chaos`: failovers of a
synchronous ledger pair, lying epoch claims, a byzantine sync peer and kill -9 of an edge before
it persists, under load, then the history checker.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
# A clean environment, but the services the run spawns import the code under test (PYTHONPATH).
ENV = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}


def croupier(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout_s,
        env=ENV,
    )


def test_demo_runs_the_scenario_and_every_invariant_holds(tmp_path):
    run = croupier("demo", "--duration", "15", "--dir", str(tmp_path), timeout_s=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all invariants hold" in run.stdout
    for moment in ("resumed on", "cut off from its peers", "healed", "jackpot mega hit"):
        assert moment in run.stdout, moment
    info = json.loads((tmp_path / "cluster.json").read_text())
    assert {e["id"] for e in info["edges"]} == {"eu", "us", "apac"}
    assert set(info["tokens"]) >= {"game_server", "edge", "peer", "cashier", "admin_read", "admin_write", "replica"}
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    for token in info["tokens"].values():
        assert token not in logs and token not in run.stdout + run.stderr


# Two short runs, each with every kind of its group (the nemesis deals every enabled kind once
# before any twice): failovers with lying ledgers, then lying edges and a byzantine sync peer.
SHORT_RUNS = {  # group: (seed, seconds, kinds); each failover kind takes several seconds of restarts
    "failover": (
        11,
        50,
        (
            "failover_kill",
            "failover_pause",
            "failover_slow_apply",
            "rejoin_diverged",
            "lie_epoch_ledger",
            "kill_edge_unpersisted",
        ),
    ),
    "byzantine": (  # eight kinds at most 6 s each (gap + hold): 48 s deals every one whatever the load
        12,
        50,
        (
            "lie_epoch_edges",
            "byz_forge_slot",
            "byz_foreign_slot",
            "byz_bad_values",
            "byz_unknown_doc",
            "byz_oversized",
            "byz_impersonate",
        ),
    ),
}


@pytest.mark.parametrize("group", sorted(SHORT_RUNS))
def test_short_chaos_run_keeps_every_guarantee(tmp_path, group):
    seed, seconds, kinds = SHORT_RUNS[group]
    root = tmp_path / "cluster"
    run = croupier(
        "chaos",
        "--duration",
        str(seconds),
        "--seed",
        str(seed),
        "--clients",
        "12",
        "--dir",
        str(root),
        "--faults",
        ",".join(("none", *kinds)),
        timeout_s=300,
    )
    failed = [line for line in run.stdout.splitlines() if "FAIL" in line]  # first: the tail may not hold them
    assert run.returncode == 0, "\n".join(failed) + "\n" + run.stdout[-4000:] + run.stderr[-3000:]
    assert not failed, failed
    assert run.stdout.count("PASS") >= 15
    faults = next(line for line in run.stdout.splitlines() if line.startswith("faults by kind: "))
    assert all(kind in faults for kind in kinds), faults  # every kind of the group was carried out
    assert f"seed {seed}: " in run.stdout and not root.exists()


def test_up_with_ledger_fronts_serves_bets_through_a_front_and_stops_it(short_dir):
    """`croupier up --ledger-fronts 1`: the ledger's address is served by a front process, which a
    bet goes through; Ctrl-C stops the cluster and its front with it. (`short_dir`: the ledger's
    private socket to its front lives under the cluster's directory, 107 bytes at most.)"""
    import signal
    import time
    import urllib.request

    root = short_dir / "cluster"
    up = subprocess.Popen(
        [sys.executable, "-m", "croupier", "up", "--dir", str(root), "--players", "2", "--ledger-fronts", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not (root / "cluster.json").exists():
            assert up.poll() is None and time.monotonic() < deadline, "croupier up did not come up"
            time.sleep(0.2)
        info = json.loads((root / "cluster.json").read_text())
        request = urllib.request.Request(
            info["ledger"]["url"] + "/v1/bets",
            data=json.dumps(
                {
                    "id": "up-front-1",
                    "player_id": "p001",
                    "currency": "EUR",
                    "amount_minor": 100,
                    "round_id": "up-round-1",
                    "game_id": "slots-1",
                }
            ).encode(),
            headers={"Authorization": f"Bearer {info['tokens']['edge']}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        log = (root / "ledger.log").read_text()
        assert '"service":"ledger-front"' in log and '"event":"ledger_front_started"' in log
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    fronts = subprocess.run(["pgrep", "-f", f"ledger front --config {root}"], capture_output=True, check=False)
    assert fronts.stdout == b"", "no front left running"
