"""bench/step_times.py: steps timed in place, and every function put back, even on an error."""

from __future__ import annotations

import pytest

import core_ledger.store.held_rows
import core_ledger.writer
from step_times import Step, timed_steps

DECIDE = Step("decide", "core_ledger.writer", "decide")
HOLD = Step("hold", "core_ledger.store.held_rows", "HeldRows.hold", 1)


def test_a_timed_step_counts_its_calls_and_the_original_comes_back() -> None:
    decide, hold = core_ledger.writer.decide, core_ledger.store.held_rows.HeldRows.hold
    with timed_steps((DECIDE, HOLD)) as times:
        assert core_ledger.writer.decide is not decide
        held = core_ledger.store.held_rows.HeldRows()
        held.hold({"accounts": [(("a",), {"balance_minor": 1, "version": 1})]}, 0, 1)  # through the wrapper
        assert held.count == 1 and held.head == 1  # the method ran, on its instance
        with pytest.raises(AttributeError):  # the wrapped function's own error passes through
            core_ledger.writer.decide(None, None, None)  # type: ignore[arg-type]  # no state: it raises
    assert times.calls == {"decide": 1, "hold": 1}
    assert times.nanoseconds["decide"] > 0 and times.nanoseconds["hold"] > 0
    assert core_ledger.writer.decide is decide and core_ledger.store.held_rows.HeldRows.hold is hold
    per_bet = round(times.nanoseconds["hold"] / 2000, 2)
    assert times.per_bet(2)["hold"] == {"us_per_bet": per_bet, "calls": 1, "depth": 1}


def test_an_error_in_the_block_still_puts_every_function_back() -> None:
    decide = core_ledger.writer.decide
    with pytest.raises(RuntimeError, match="in the block"), timed_steps((DECIDE,)):
        raise RuntimeError("in the block")
    assert core_ledger.writer.decide is decide


def test_a_coroutine_function_is_refused_and_nothing_stays_replaced() -> None:
    decide = core_ledger.writer.decide
    awaited = Step("load", "core_ledger.overlay", "Overlay.load")
    with pytest.raises(TypeError, match="coroutine"), timed_steps((DECIDE, awaited)):
        pass
    assert core_ledger.writer.decide is decide
