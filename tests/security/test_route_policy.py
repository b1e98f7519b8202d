"""Every route of both services declares who may call it, and the declarations are exactly the
access policy of docs/API.md (read from apps built by the services' own factories, never started)."""

from __future__ import annotations

import pytest

from tests.support.route_policy import EDGE_POLICY, LEDGER_POLICY, PUBLIC_PATHS, edge_routes, ledger_routes

TABLES = {"ledger": (ledger_routes, LEDGER_POLICY), "edge": (edge_routes, EDGE_POLICY)}


@pytest.mark.parametrize("service", sorted(TABLES))
def test_every_route_declares_roles_or_is_one_of_the_public_probes(service, tmp_path):
    routes = TABLES[service][0](tmp_path)
    assert len(routes) >= 10, "the route table was not read"
    undeclared = [r.label for r in routes if not r.public and not r.roles]
    assert undeclared == [], f"routes without @auth.roles(...): {undeclared}"
    wrongly_public = [r.label for r in routes if r.public and r.path not in PUBLIC_PATHS]
    assert wrongly_public == [], f"routes marked @auth.public beyond the probes: {wrongly_public}"


@pytest.mark.parametrize("service", sorted(TABLES))
def test_route_declarations_are_exactly_the_reviewed_access_policy(service, tmp_path):
    build, policy = TABLES[service]
    declared = {(r.method, r.path): r.access for r in build(tmp_path)}
    new = sorted(f"{m} {p}" for m, p in declared.keys() - policy.keys())
    gone = sorted(f"{m} {p}" for m, p in policy.keys() - declared.keys())
    assert new == [], f"routes not in the reviewed policy (add them to tests/support/route_policy.py): {new}"
    assert gone == [], f"routes of the policy that the app no longer serves: {gone}"
    changed = {f"{m} {p}": (declared[m, p], policy[m, p]) for m, p in policy if declared[m, p] != policy[m, p]}
    assert changed == {}, f"(declared, reviewed) access differs: {changed}"
