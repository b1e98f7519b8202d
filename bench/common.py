"""Helpers the benchmark scripts share: run `wrk`, read its figures, measure a process's CPU time.

Servers are started as every service process is: `harness/launcher.py` (`ServiceProcess` for any
command, `Cluster` for a Croupier cluster).

The load generator is `wrk` (Debian package; `make tools` installs it): one C process with an
event loop per thread, far faster than the servers measured here, so it is not the bottleneck
(a Python aiohttp client tops out near 3.4k req/s on one core of the reference machine).

A wrk Lua script used with `run_wrk` must load `bench/wrk/report.lua` (see `bench/wrk/bets.lua`):
that file counts answers by status and prints the one `WRK_JSON {...}` line parsed here.
Nothing here is specific to the ledger: any script and URL will do.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.cluster import LEDGER_KEYS_THE_HARNESS_LOCATES_BY

T = TypeVar("T")

WRK_DIR = Path(__file__).resolve().parent / "wrk"
WRK_MARKER = "WRK_JSON "
WRK_TIMEOUT_S = 10  # a request slower than this counts as a wrk timeout error
WRK_EXTRA_WALL_S = 30.0  # wall-clock allowance beyond the run itself before wrk is killed


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured. Latencies are in milliseconds."""

    duration_s: float
    requests: int  # answered requests
    statuses: dict[int, int]  # answers by HTTP status
    socket_errors: dict[str, int]  # connect/read/write/timeout counts from wrk
    latency_ms: dict[str, float]  # mean, max, p50, p90, p99, p999
    first_error: str | None  # status and start of the body of the first non-2xx answer

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status <= 299)

    @property
    def non_2xx(self) -> int:
        return self.requests - self.ok

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors: a run with any is not a clean measurement."""
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s

    def figures(self) -> dict[str, Any]:
        return {
            "ok_per_s": round(self.ok_per_s, 1),
            "p50_ms": self.latency_ms["p50"],
            "p99_ms": self.latency_ms["p99"],
            "max_ms": self.latency_ms["max"],
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors,
            "first_error": self.first_error,
            "duration_s": round(self.duration_s, 3),
        }


def parse_wrk_output(stdout: str) -> WrkResult:
    """The figures of the `WRK_JSON` line that `bench/wrk/report.lua` prints."""
    lines = [line for line in stdout.splitlines() if line.startswith(WRK_MARKER)]
    if len(lines) != 1:
        raise ValueError(f"expected one {WRK_MARKER.strip()} line in wrk's output, got {len(lines)}:\n{stdout}")
    raw = json.loads(lines[0][len(WRK_MARKER) :])
    latency_ms = {name: round(us / 1000.0, 3) for name, us in raw["latency_us"].items()}
    return WrkResult(
        duration_s=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        statuses={int(k): v for k, v in raw["statuses"].items()},
        socket_errors=raw["socket_errors"],
        latency_ms=latency_ms,
        first_error=raw["first_error"],
    )


def run_wrk(
    url: str, *, script: Path, script_args: Sequence[str], threads: int, connections: int, duration_s: float
) -> WrkResult:
    """Run wrk against `url` for `duration_s` seconds and return what it measured."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + WRK_EXTRA_WALL_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}\n{done.stdout}")
    return parse_wrk_output(done.stdout)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used so far (Linux /proc).

    CPU per answered request is steadier than requests/s on a shared machine: others' work
    slows a server down but does not add to its own CPU time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds a live process and its children have used so far: its own time, the time of
    its children that ended (and were waited for) and of those still running (Linux /proc).

    For a server that forks a process per connection (PostgreSQL's postmaster): the difference
    of two readings is the server's whole CPU time in between, connections opened or closed
    between them included."""

    def stat_fields(path: Path) -> list[str]:
        return path.read_text().rsplit(")", 1)[1].split()

    own = stat_fields(Path(f"/proc/{pid}/stat"))
    ticks = int(own[11]) + int(own[12]) + int(own[13]) + int(own[14])  # utime stime cutime cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_fields(stat)
        except OSError:  # ended since listed
            continue
        if int(fields[1]) == pid:  # ppid
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_s(stat: str | None = None) -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, summed over its CPUs, from the text
    of Linux's /proc/stat (read now when not given). Busy is everything but idle and I/O wait: time
    stolen by the hypervisor counts as busy, since this machine's work could not run then either."""
    text = Path("/proc/stat").read_text() if stat is None else stat
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in text.split("\n", 1)[0].split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    total = user + nice + system + idle + iowait + irq + softirq + steal  # (guest time is inside user)
    return (total - idle - iowait) / tick, total / tick


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's CPU time that was busy between two `machine_cpu_s` readings:
    near 1, every process measured was also queueing for a CPU."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else 0.0


def median_by(items: Sequence[T], key: Callable[[T], float]) -> T:
    """The item of median `key` (the lower of the middle two of an even count): one real run with
    its own latencies and checks, not a blend of several, so one stall does not decide a ratio."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def load_average() -> float:
    """The 1-minute load average: other work on a shared machine skews every figure."""
    return round(os.getloadavg()[0], 2)


def ledger_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """`--ledger-set KEY=VALUE` options as `[ledger]` settings, each VALUE read as a TOML value
    (`derived_flush_groups=8`, `group_commit=false`, `backend="postgres"`), else as text. The
    ledger checks them at start as it checks any config file; ValueError for a malformed pair or
    a key the harness itself sets."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        if key in LEDGER_KEYS_THE_HARNESS_LOCATES_BY:
            raise ValueError(f"{key} is set by the harness")
        try:
            settings[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            settings[key] = text
    return settings
