"""The private test network of harness/netns.py: namespaces on a bridge, a cut by nftables that
drops everything into and out of a member but its loopback, a heal, and a tear-down that leaves
nothing behind, even after a set-up that failed half-way. Needs root and `nft` (fails, never skips).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netns import CLAIM_DIR, NetworkFailed, PrivateNetwork, require_tools

PORT = 7000
CONNECT_TIMEOUT_S = 1.0
LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(); print('up', flush=True)\n"
    "while True: s.accept()[0].close()\n"
)
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))"


@pytest.fixture
def network() -> Iterator[PrivateNetwork]:
    try:
        require_tools()
    except NetworkFailed as e:
        pytest.fail(f"the network tests cannot run here: {e}", pytrace=False)
    net = PrivateNetwork(("m0", "m1"))
    listeners: list[subprocess.Popen[str]] = []
    try:
        net.create()
        for member in net.members:  # a TCP listener inside each member, on all its addresses
            proc = subprocess.Popen(
                net.command(member, [sys.executable, "-c", LISTENER]), stdout=subprocess.PIPE, text=True
            )
            listeners.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield net
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait(10)
        net.destroy()


def _reaches(net: PrivateNetwork, source: str | None, address: str) -> bool:
    """Whether a TCP connection from `source` (a member, or None: this machine) to address:PORT is made."""
    if source is None:
        try:
            socket.create_connection((address, PORT), timeout=CONNECT_TIMEOUT_S).close()
        except OSError:
            return False
        return True
    cmd = net.command(source, [sys.executable, "-c", CONNECT, address, str(PORT), str(CONNECT_TIMEOUT_S)])
    return subprocess.run(cmd, capture_output=True, timeout=10, check=False).returncode == 0


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def test_a_cut_drops_everything_into_and_out_of_a_member_but_its_loopback_until_healed(
    network: PrivateNetwork,
) -> None:
    a0, a1 = network.address("m0"), network.address("m1")
    assert a0.startswith("10.213.") and network.subnet.endswith(".0/24")
    assert _reaches(network, "m0", a1) and _reaches(network, None, a0) and _reaches(network, "m1", a0)

    network.cut("m0")
    assert network.is_cut("m0") and not network.is_cut("m1")
    assert not _reaches(network, "m0", a1), "m0 still sends"
    assert not _reaches(network, "m1", a0), "m0 still receives from the other member"
    assert not _reaches(network, None, a0), "m0 still receives from this machine"
    assert _reaches(network, "m0", "127.0.0.1") and _reaches(network, "m0", a0), "a cut member talks to itself"
    assert _reaches(network, None, a1), "the cut spilled over to another member"
    links = _links()
    assert f"{network.bridge}:" in links and "state UP" in links, "a cut drops packets, it downs no link"

    network.heal("m0")
    assert not network.is_cut("m0")
    assert _reaches(network, "m0", a1) and _reaches(network, None, a0)


def test_nothing_is_left_behind_after_destroy() -> None:
    try:
        require_tools()
    except NetworkFailed as e:
        pytest.fail(f"the network tests cannot run here: {e}", pytrace=False)
    net = PrivateNetwork(("m0",)).create()
    ns, bridge, claim = net.namespace("m0"), net.bridge, CLAIM_DIR / net.subnet.removesuffix(".0/24")
    assert ns in _namespaces() and bridge in _links() and claim.is_file()
    net.cut("m0")
    net.destroy()
    net.destroy()  # twice is fine
    assert ns not in _namespaces() and net.token not in _links() and not claim.exists()


def test_a_set_up_that_fails_half_way_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        require_tools()
    except NetworkFailed as e:
        pytest.fail(f"the network tests cannot run here: {e}", pytrace=False)
    net = PrivateNetwork(("m0", "m1"))
    real_add = PrivateNetwork._add_member
    claims: list[Path] = []

    def add_then_fail(self: PrivateNetwork, member: str) -> None:
        if member == "m1":
            claims.append(self._claim)
            raise NetworkFailed("injected: the second member could not be added")
        real_add(self, member)

    monkeypatch.setattr(PrivateNetwork, "_add_member", add_then_fail)
    with pytest.raises(NetworkFailed, match="injected"):
        net.create()
    assert claims and not claims[0].exists(), "the subnet's claim was left behind"
    assert net.token not in _namespaces() and net.token not in _links()
    assert net.third_octet is None and not net.created_namespaces and not net.created_links
