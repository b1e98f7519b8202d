"""The ledger client's circuit breaker: opens after consecutive failures, lets one probe through
after the open period, closes on success; what counts as a failure."""

from edge.breaker import Breaker
from edge.config import Limits
from edge.ledger_failover import LedgerFailover
from edge.ledger_problems import refused_outcome


def test_breaker_opens_probes_once_and_closes_on_success():
    now = [100.0]
    b = Breaker(failures_max=3, open_s=2.0, clock=lambda: now[0])
    for _ in range(2):
        b.failure()
    assert b.allow(), "still closed below the threshold"
    b.failure()
    assert not b.allow() and b.retry_after_s() == 2
    now[0] += 2.1
    assert b.allow(), "half-open: one probe"
    assert not b.allow(), "only one probe at a time"
    b.failure()
    assert not b.allow(), "a failed probe opens it again"
    now[0] += 2.1
    assert b.allow()
    b.success()
    assert b.allow() and b.allow(), "closed after a successful probe"


def test_a_ledger_at_its_connection_limit_does_not_open_the_circuit_nor_pin_the_edge():
    """A ledger holding `http_connections_max` connections answers a new one 503
    `too_many_connections` at once: the connections the edge already holds to it still serve.
    Counted as failures, such answers opened the circuit for every call; they are `busy`, which
    never counts against the breaker. What a copy that lies with `busy` cannot do: keep the edge
    from the next URL (a promoted standby), nor open its circuit."""
    full = b'{"code": "too_many_connections", "status": 503}'
    assert refused_outcome(503, full) == "busy"
    assert refused_outcome(503, b'{"code": "not_primary"}') == "not_primary"
    assert refused_outcome(503, b'{"code": "ledger_unavailable"}') == "error"
    assert refused_outcome(502, full) == "error"  # a proxy's 502 says nothing of the ledger

    failover = LedgerFailover(["http://old", "http://promoted"], Limits(breaker_failures=3), clock=lambda: 0.0)
    for _ in range(10):  # the old copy says busy every time: the next attempt goes to the other URL
        index = failover.pick()
        failover.record(index, "busy" if index == 0 else "ok", "batch")
        assert failover.pick() == 1
    assert not failover.breaker_open(0) and not failover.breaker_open(1)
    # A busy primary is back after one not_primary of its standby, its circuit still closed.
    failover = LedgerFailover(["http://primary", "http://standby"], Limits(breaker_failures=3), clock=lambda: 0.0)
    for _ in range(10):
        failover.record(failover.pick(), "busy", "batch")
        failover.record(failover.pick(), "not_primary", "batch")
        assert failover.current == 0
    assert not failover.breaker_open(0) and not failover.breaker_open(1)
    for _ in range(3):  # real failures still open it and move on
        failover.record(0, "error", "batch")
    assert failover.breaker_open(0) and failover.current == 1
