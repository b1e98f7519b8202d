"""The batch bounds an edge respects: its own configuration, lowered to what the ledger publishes.

At start the client reads the ledger's `GET /v1/limits` (until it gets an answer) and sends
batches of at most `min(ledger_batch_max, batch_actions_max)` actions and
`min(ledger_batch_bytes_max, body_bytes_max - BODY_MARGIN_BYTES)` bytes. A ledger without the route
(404) is an older one: the configured bounds stay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from shared.contract.answers import Limits as LedgerLimits
from shared.errors import NotFound, Unavailable

from edge.config import Limits

log = structlog.get_logger("croupier.edge.ledger")

BODY_MARGIN_BYTES = 1024  # room under the ledger's body_bytes_max for the batch's own framing
LIMITS_RETRY_S = 1.0


@dataclass(frozen=True)
class BatchBounds:
    actions_max: int
    bytes_max: int


def configured_bounds(limits: Limits) -> BatchBounds:
    """The bounds before the ledger published its own."""
    return BatchBounds(limits.ledger_batch_max, limits.ledger_batch_bytes_max)


def bounds_within(limits: Limits, published: LedgerLimits) -> BatchBounds:
    """The configured bounds, lowered to the ledger's published limits (never below one)."""
    return BatchBounds(
        max(1, min(limits.ledger_batch_max, published.batch_actions_max)),
        max(1, min(limits.ledger_batch_bytes_max, published.body_bytes_max - BODY_MARGIN_BYTES)),
    )


async def learn_limits(
    read: Callable[[], Awaitable[LedgerLimits]],
    apply: Callable[[LedgerLimits], None],
    current: Callable[[], BatchBounds],
) -> None:
    """Read the ledger's published limits once (retrying while it is away) and `apply` them."""
    while True:
        try:
            published = await read()
        except NotFound:
            bounds = current()
            log.info("ledger_limits_unpublished", batch_max=bounds.actions_max, batch_bytes_max=bounds.bytes_max)
            return
        except Unavailable:
            await asyncio.sleep(LIMITS_RETRY_S)
            continue
        apply(published)
        return
