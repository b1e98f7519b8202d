"""The harness's ports: below the kernel's ephemeral range, free when chosen, not handed out twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ports


@pytest.fixture(autouse=True)
def fresh_hand_outs() -> Iterator[None]:
    saved = set(ports._handed_out)
    ports._handed_out.clear()
    yield
    ports._handed_out.clear()
    ports._handed_out.update(saved)


def test_ports_come_from_below_the_ephemeral_range_so_no_outgoing_connection_takes_one() -> None:
    low = ports.ephemeral_low()
    chosen = [ports.free_port() for _ in range(300)]
    assert all(ports.POOL_LOW_MIN <= p < low for p in chosen)
    assert len(set(chosen)) == len(chosen)  # none handed out twice


def test_the_ephemeral_low_bound_is_read_from_the_kernel_and_a_garbled_file_is_not_believed(tmp_path: Path) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    assert ports.ephemeral_low(ranges) == 40000
    assert ports.pool(40000) == range(40000 - ports.POOL_SIZE, 40000)
    for garbled in ("", "not a number", "80\t60999", "70000 70001"):
        ranges.write_text(garbled)
        assert ports.ephemeral_low(ranges) == ports.EPHEMERAL_LOW_DEFAULT
    assert ports.ephemeral_low(tmp_path / "absent") == ports.EPHEMERAL_LOW_DEFAULT
    assert ports.pool(2000) == range(ports.POOL_LOW_MIN, 2000)  # never a privileged port


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy])
        monkeypatch.setattr(ports._random, "choice", lambda seq: next(picks, seq[0]))
        assert ports.free_port() != busy


def test_a_crowded_pool_falls_back_to_the_kernels_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_bindable", lambda port: False)
    port = ports.free_port()
    with socket.socket() as s:  # the kernel's choice was free a moment ago
        s.bind(("127.0.0.1", port))
