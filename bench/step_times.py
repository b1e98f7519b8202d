"""Wall time of named steps of the writer, timed in place around each call (`ledger_writer.py --steps`).

A profiler samples where the time goes; this counts it exactly for a few chosen calls: each step
is a function looked up by name at call time (a module's global, or a class's method), replaced for
the run by a wrapper that adds the call's wall time and count, and put back after. Steps nest (the
commit holds the derived rows' write, which holds their parameters): each figure includes the
steps under it. The wrappers cost about 0.3 us a call, so a run with them is not one to compare
throughput with. Only synchronous functions: an awaited step would count its waits.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    label: str  # as printed; nesting shown by the caller's order and `depth`
    module: str
    name: str  # a global of `module`, or `Class.method`
    depth: int = 0


# The SQLite writer's steps, in the order of a bet's path (see docs/OPERATIONS.md).
WRITER_STEPS = (
    Step("decide", "core_ledger.writer", "decide"),
    Step("evolve", "core_ledger.writer", "evolve"),
    Step("render (the answer)", "core_ledger.domain.evolve", "render", 1),
    Step("sorted_keys", "core_ledger.domain.render", "sorted_keys", 2),
    Step("sealed", "core_ledger.writer", "sealed"),
    Step("commit (_commit_sync)", "core_ledger.store.sqlite", "_commit_sync"),
    Step("derived rows written", "core_ledger.store.sqlite", "_write_derived", 1),
    Step("their parameters", "core_ledger.store.sqlite", "_stored_rows", 2),
    Step("journal entry deflated", "core_ledger.store.sqlite", "stored_entry", 1),
    Step("rows inserted (journal and derived)", "core_ledger.store.sqlite", "_insert_rows", 1),
    Step("held rows kept", "core_ledger.store.held_rows", "HeldRows.hold", 1),
    Step("members checked", "core_ledger.store.sqlite", "_check_members", 1),
    Step("flush when idle (_flush_sync)", "core_ledger.store.sqlite", "_flush_sync"),
)


@dataclass
class StepTimes:
    steps: tuple[Step, ...]
    nanoseconds: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Start counting again (after a warm-up)."""
        self.nanoseconds = {s.label: 0 for s in self.steps}
        self.calls = {s.label: 0 for s in self.steps}

    def per_bet(self, bets: int) -> dict[str, dict[str, float]]:
        """Each step's microseconds per bet over `bets`, and its calls, in the steps' order."""
        return {
            s.label: {
                "us_per_bet": round(self.nanoseconds[s.label] / 1000 / bets, 2),
                "calls": self.calls[s.label],
                "depth": s.depth,
            }
            for s in self.steps
        }

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.nanoseconds[label] += time.perf_counter_ns() - started
                self.calls[label] += 1

        return timed


def _owner(step: Step) -> tuple[Any, str]:
    """The object holding the step's function, and the attribute's name on it."""
    owner: Any = importlib.import_module(step.module)
    *path, attribute = step.name.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attribute


@contextmanager
def timed_steps(steps: tuple[Step, ...] = WRITER_STEPS) -> Iterator[StepTimes]:
    """Time `steps` until the block ends; every function is put back after, even on an error."""
    times = StepTimes(steps)
    times.reset()
    replaced: list[tuple[Any, str, Any]] = []
    try:
        for step in steps:
            owner, attribute = _owner(step)
            fn = getattr(owner, attribute)
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"{step.module}.{step.name} is a coroutine function: its waits would be counted")
            replaced.append((owner, attribute, fn))
            setattr(owner, attribute, times._wrap(step.label, fn))
        yield times
    finally:
        for owner, attribute, fn in reversed(replaced):
            setattr(owner, attribute, fn)
