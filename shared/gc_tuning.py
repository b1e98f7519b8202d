"""How a long-running service sets Python's cyclic garbage collector: one definition for the
ledger and the edge.

Both keep many long-lived small objects (the ledger's overlay of rows, the edge's CRDT documents and
their kept facts) and allocate many short-lived ones per request, none of them in a cycle. With the
default thresholds a young-generation collection runs every 700 net allocations and an older one
every ten of those, rescanning what is alive: in profiles that was up to a third of the ledger's CPU
per bet and 12-17% of the edge's CPU per admitted peer update (bench/admission.py with the collector
off). Raised thresholds keep cycles collected, only less often; `gc.freeze()` moves what start-up
built (modules, models, routes) out of every later scan.
"""

from __future__ import annotations

import gc

SERVICE_THRESHOLDS = (50_000, 20, 100)  # young generation, then every 20 of those, every 100 of those


def tune_for_serving() -> None:
    """Call once, after start-up built what lives for good and before serving."""
    gc.set_threshold(*SERVICE_THRESHOLDS)
    gc.freeze()
