"""The ledger client's circuit breaker: opens after consecutive failures, lets one probe through
after the open period, closes on success."""

from edge.breaker import Breaker


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
