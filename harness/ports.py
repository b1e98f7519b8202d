"""Ports for the services a harness starts, chosen so that nothing else takes them meanwhile.

A port is chosen before the service that will listen on it starts (its config names it, and other
services' configs name it too), so there is a window in which someone else may take it. Asking the
kernel for a free port (`bind(("127.0.0.1", 0))`) hands out a port from the *ephemeral* range, the
very range every outgoing connection on the machine takes its local port from: a test that opens
hundreds of client connections (wrk, the edges' links, the suite's own clients) can take the
chosen port as a source port before the service binds it ("address already in use").

So `free_port()` picks at random among the ports just *below* the ephemeral range
(`/proc/sys/net/ipv4/ip_local_port_range`), which the kernel never hands to outgoing connections,
checks that nothing listens on it right now, and does not hand the same port out twice in one
process while others are left. Only the standard library.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_LOW_DEFAULT = 32768  # Linux's default low bound, when the file cannot be read
POOL_SIZE = 12_000  # ports below the ephemeral range that `free_port` picks from
POOL_LOW_MIN = 1024  # never a privileged port
TRIES_MAX = 200  # random picks before falling back to the kernel's choice

_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()  # not the tests' seeded `random`: two processes must not agree


def ephemeral_low(path: Path = EPHEMERAL_RANGE_FILE) -> int:
    """The lowest port the kernel gives outgoing connections (Linux; the default elsewhere)."""
    try:
        low = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_LOW_DEFAULT
    return low if POOL_LOW_MIN < low <= 65535 else EPHEMERAL_LOW_DEFAULT


def pool(low_of_ephemeral: int) -> range:
    """The ports `free_port` picks from: up to POOL_SIZE ports just below the ephemeral range."""
    return range(max(POOL_LOW_MIN, low_of_ephemeral - POOL_SIZE), low_of_ephemeral)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_choice() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range and
    not handed out before by this process (until every port of the pool has been)."""
    candidates = pool(ephemeral_low())
    with _lock:
        if len(_handed_out) >= len(candidates) // 2:  # a long session: start over
            _handed_out.clear()
        for _ in range(TRIES_MAX):
            port = _random.choice(candidates)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    return _kernel_choice()  # a crowded pool: the old way rather than no port
