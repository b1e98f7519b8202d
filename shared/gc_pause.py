"""`CollectionsPaused`: Python's cyclic garbage collector off for a bulk fold, collected by the caller.

A bulk fold (seeding a journal, replaying one in a rebuild) allocates millions of small dicts and
tuples that it keeps for a while (a group's rows) and then drops; none of them is in a cycle, so
reference counting frees them all. With the collector on, every few hundred thousand allocations
trigger a collection that scans every object still alive (a group's rows): a quarter of a seeder's
CPU went there (bench/ledger_scale.py). Paused, the fold asks for one collection at a point of its
choosing (`collect`, after a group is committed and dropped: whatever cycle the event loop left
is freed there), so memory stays bounded by what it holds between two such points.
"""

from __future__ import annotations

import gc
from types import TracebackType


class CollectionsPaused:
    """`with CollectionsPaused() as gc_points: ... gc_points.collect() ...`: the collector is off
    inside (unless it was off already) and back as it was after, even on an error."""

    def __init__(self) -> None:
        self._was_enabled = False

    def __enter__(self) -> CollectionsPaused:
        self._was_enabled = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._was_enabled:
            gc.enable()

    def collect(self) -> None:
        """A collection of the young generations now (the caller just dropped what it held): what
        survives it (rows still held) moves to the oldest generation and is not scanned again.
        A full collection each time rescanned everything held: a rebuild took 6% more CPU."""
        gc.collect(1)
