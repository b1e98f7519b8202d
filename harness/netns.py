"""A private test network of Linux network namespaces, and network cuts inside it with nftables.

`PrivateNetwork(members).create()` makes, for one run:

- a Linux bridge `crb<token>` in the root namespace with the address `10.213.X.1/24`, where X is a
  subnet no address of this machine uses yet and no other run has claimed (a claim file under
  `CLAIM_DIR`, holding our pid, so parallel runs get different subnets and a crashed run's claim is
  taken over);
- one network namespace `cr-<token>-<member>` per member, its loopback up and one veth pair
  (`crv<token><i>` on the bridge, `eth0` inside) with the address `10.213.X.(10+i)/24`.

Nothing is routed beyond the subnet: the namespaces get no default route and the bridge no
uplink, so traffic can only go between the members and this machine's bridge address (where a
test's etcd and ledger listen). `run(member, cmd)` / `command(member, cmd)` run a command inside
a member's namespace (`ip netns exec`); processes started there inherit it.

`cut(member)` loads an nftables table (`inet croupier_cut`) into the member's namespace whose
input and output chains drop every packet that is not on its own loopback: the member keeps
running and talking to itself, and nothing reaches it or leaves it: no RST, no ICMP, as when a
cable is pulled or a switch port dies. `heal(member)` deletes that table. Links stay up.

`destroy()` removes the namespaces, the bridge, any veth left behind, and the claim; it is safe to
call more than once and after a `create()` that failed half-way (which calls it itself). Processes
still running inside a namespace keep it alive, so stop them first. Needs root, `ip` (iproute2)
and `nft` (nftables): `require_tools()` says clearly what is missing. Every command is bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("croupier.harness.netns")

SUBNET_PREFIX = "10.213"  # 10.213.X.0/24, X chosen per run
SUBNET_THIRD_OCTETS = range(1, 255)
BRIDGE_HOST = 1  # 10.213.X.1: the bridge (this machine's side: etcd, ledger)
FIRST_MEMBER_HOST = 10  # 10.213.X.10 + i: member i
CLAIM_DIR = Path("/run/croupier-netns")
COMMAND_TIMEOUT_S = 15.0
CUT_TABLE = "croupier_cut"
# Input and output both: a member that could still send would keep its TCP peers' state fresh
# (and a one-way cut is another fault). Only its own loopback stays open.
CUT_RULESET = f"""
table inet {CUT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
    }}
    chain output {{
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
    }}
}}
"""


class NetworkFailed(RuntimeError):
    """The private network could not be set up, changed or torn down; the message says why."""


def require_tools() -> None:
    """Root, `ip` and `nft`, or NetworkFailed naming what is missing and how to get it."""
    if os.geteuid() != 0:
        raise NetworkFailed("network namespaces and nftables need root (run as root)")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            raise NetworkFailed(f"`{tool}` is not installed: `make tools` installs the Debian package {package}")


def _run(cmd: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkFailed(f"{' '.join(cmd)}: {e}") from e
    if check and done.returncode != 0:
        raise NetworkFailed(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _addresses_in_use() -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The /24 networks of every IPv4 address of this machine's root namespace."""
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            iface = ipaddress.ip_interface(words[words.index("inet") + 1])
            nets.add(ipaddress.ip_network(f"{iface.ip}/24", strict=False))
    return nets


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PrivateNetwork:
    members: tuple[str, ...]
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    third_octet: int | None = None  # set by create
    created_namespaces: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)
    cut_members: set[str] = field(default_factory=set)

    # --- names and addresses ---------------------------------------------------------------

    @property
    def bridge(self) -> str:
        return f"crb{self.token}"

    def namespace(self, member: str) -> str:
        return f"cr-{self.token}-{member}"

    def _veth(self, member: str) -> str:
        return f"crv{self.token}{self.members.index(member)}"

    def _address(self, host: int) -> str:
        assert self.third_octet is not None, "create() first"
        return f"{SUBNET_PREFIX}.{self.third_octet}.{host}"

    @property
    def subnet(self) -> str:
        return self._address(0) + "/24"

    @property
    def bridge_address(self) -> str:
        """This machine's address on the private network (where etcd and the ledger are reached)."""
        return self._address(BRIDGE_HOST)

    def address(self, member: str) -> str:
        return self._address(FIRST_MEMBER_HOST + self.members.index(member))

    @property
    def _claim(self) -> Path:
        return CLAIM_DIR / f"{SUBNET_PREFIX}.{self.third_octet}"

    # --- commands inside a member ----------------------------------------------------------

    def command(self, member: str, cmd: list[str]) -> list[str]:
        """`cmd` run inside the member's namespace (for Popen)."""
        return ["ip", "netns", "exec", self.namespace(member), *cmd]

    def run(self, member: str, cmd: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside the member's namespace, bounded; NetworkFailed unless it succeeds."""
        return _run(self.command(member, cmd), stdin=stdin)

    # --- set-up and tear-down --------------------------------------------------------------

    def create(self) -> PrivateNetwork:
        require_tools()
        try:
            self._claim_subnet()
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self.created_links.append(self.bridge)
            _run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for member in self.members:
                self._add_member(member)
        except BaseException:
            self.destroy()
            raise
        log.info("netns_created", subnet=self.subnet, bridge=self.bridge, members=list(self.members))
        return self

    def _claim_subnet(self) -> None:
        CLAIM_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        taken = _addresses_in_use()
        candidates = list(SUBNET_THIRD_OCTETS)
        secrets.SystemRandom().shuffle(candidates)
        for x in candidates:
            if ipaddress.ip_network(f"{SUBNET_PREFIX}.{x}.0/24") in taken:
                continue
            claim = CLAIM_DIR / f"{SUBNET_PREFIX}.{x}"
            with contextlib.suppress(OSError, ValueError):  # a claim of a run that is gone is taken over
                if not pid_alive(int(claim.read_text())):
                    claim.unlink()
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.third_octet = x
            return
        raise NetworkFailed(f"no free subnet {SUBNET_PREFIX}.X.0/24 left (claims in {CLAIM_DIR})")

    def _add_member(self, member: str) -> None:
        ns, veth = self.namespace(member), self._veth(member)
        _run(["ip", "netns", "add", ns])
        self.created_namespaces.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        self.created_links.append(veth)
        _run(["ip", "link", "set", veth, "master", self.bridge])
        _run(["ip", "link", "set", veth, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{self.address(member)}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def destroy(self) -> None:
        """Remove what `create` made (namespaces, then links, then the claim); never raises for
        what is already gone, and reports what it could not remove."""
        leftovers: list[str] = []
        for ns in reversed(self.created_namespaces):
            done = _run(["ip", "netns", "del", ns], check=False)  # takes its end of the veth with it
            if done.returncode != 0 and "No such file" not in done.stderr:
                leftovers.append(f"netns {ns}: {done.stderr.strip()}")
        self.created_namespaces.clear()
        for link in reversed(self.created_links):  # a veth goes with its namespace, maybe while we look
            done = _run(["ip", "link", "del", link], check=False)
            if done.returncode != 0 and "Cannot find device" not in done.stderr:
                leftovers.append(f"link {link}: {done.stderr.strip()}")
        self.created_links.clear()
        self.cut_members.clear()
        if self.third_octet is not None:
            with contextlib.suppress(FileNotFoundError):
                self._claim.unlink()
            self.third_octet = None
        if leftovers:
            log.error("netns_teardown_incomplete", leftovers=leftovers)
            raise NetworkFailed("could not remove: " + "; ".join(leftovers))

    def __enter__(self) -> PrivateNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # --- faults ----------------------------------------------------------------------------

    def cut(self, member: str) -> None:
        """Drop every packet into and out of the member except on its own loopback."""
        if member in self.cut_members:
            return
        self.run(member, ["nft", "-f", "-"], stdin=CUT_RULESET)
        self.cut_members.add(member)
        log.warning("netns_cut", member=member, namespace=self.namespace(member), address=self.address(member))

    def heal(self, member: str) -> None:
        """Remove the member's cut (nothing if it has none)."""
        if member not in self.cut_members:
            return
        self.run(member, ["nft", "delete", "table", "inet", CUT_TABLE])
        self.cut_members.discard(member)
        log.info("netns_healed", member=member, namespace=self.namespace(member))

    def is_cut(self, member: str) -> bool:
        """Whether the member's namespace holds the cut table (asks nft, not our bookkeeping)."""
        done = _run(self.command(member, ["nft", "list", "table", "inet", CUT_TABLE]), check=False)
        return done.returncode == 0
