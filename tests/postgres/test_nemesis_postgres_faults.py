"""The Patroni fault kinds of the nemesis: never in the default set (a SQLite cluster has no
Patroni), refused with a clear error on a cluster without one, and dealt to a Patroni cluster
(the network cut only to one whose members run in network namespaces)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.nemesis import DEFAULT_FAULTS, KINDS, POSTGRES_HA_FAULTS, Nemesis, parse_faults


class FakePatroni:
    def __init__(self, *, namespaced: bool = True) -> None:
        self.calls: list[Any] = []
        self.leader = "m0"
        self.network = object() if namespaced else None  # a PrivateNetwork when the members run in namespaces

    def wait_for_leader(self, *, other_than: str | None = None, timeout_s: float = 0) -> str:
        if other_than is not None:
            self.leader = "m1"
        return self.leader

    def wait_for_sync_standby(self) -> str:
        return "m1"

    def kill_member(self, name: str) -> None:
        self.calls.append(("kill", name))

    def restart_member(self, name: str) -> None:
        self.calls.append(("restart", name))

    def cut_member(self, name: str) -> None:
        self.calls.append(("cut", name))

    def heal_member(self, name: str) -> None:
        self.calls.append(("heal", name))

    def switchover(self) -> str:
        self.calls.append(("switchover",))
        return "m2"


def test_patroni_kinds_are_known_but_never_default() -> None:
    assert set(POSTGRES_HA_FAULTS) <= set(KINDS) and not set(POSTGRES_HA_FAULTS) & set(DEFAULT_FAULTS)
    assert parse_faults("none,pg_kill_leader") == ("pg_kill_leader",)


async def test_a_patroni_fault_on_a_cluster_without_patroni_is_refused(tmp_path: Path) -> None:
    nemesis = Nemesis(Cluster(tmp_path), random.Random(1), kinds=("pg_switchover",))
    with pytest.raises(RuntimeError, match="--backend postgres --ha"):
        await nemesis.inject("pg_switchover", 0.0)


async def test_patroni_faults_kill_the_leader_then_bring_it_back_and_switch_over(tmp_path: Path) -> None:
    patroni = FakePatroni()
    nemesis = Nemesis(Cluster(tmp_path, database=patroni), random.Random(1), kinds=POSTGRES_HA_FAULTS)
    assert await nemesis.inject("pg_kill_leader", 0.0) == "m0 killed, m1 promoted"
    assert await nemesis.inject("pg_switchover", 0.0) == "leader now m2"
    assert patroni.calls == [("kill", "m0"), ("restart", "m0"), ("switchover",)]


async def test_the_network_cut_fault_cuts_the_leader_off_then_heals_it(tmp_path: Path) -> None:
    patroni = FakePatroni()
    nemesis = Nemesis(Cluster(tmp_path, database=patroni), random.Random(1), kinds=POSTGRES_HA_FAULTS)
    assert await nemesis.inject("pg_cut_leader", 0.0) == "m0 cut off, m1 promoted, m0 healed"
    assert patroni.calls == [("cut", "m0"), ("heal", "m0")]


async def test_the_network_cut_fault_on_patroni_without_namespaces_is_refused_and_touches_nothing(
    tmp_path: Path,
) -> None:
    patroni = FakePatroni(namespaced=False)
    nemesis = Nemesis(Cluster(tmp_path, database=patroni), random.Random(1), kinds=POSTGRES_HA_FAULTS)
    with pytest.raises(RuntimeError, match="network namespaces"):
        await nemesis.inject("pg_cut_leader", 0.0)
    assert patroni.calls == []
