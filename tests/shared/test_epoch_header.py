"""`X-Ledger-Epoch` at both ends (shared/contract/headers.py `epoch_of`): a caller's claim read by
the ledger, and a ledger's announcement read by an edge. Only ASCII digits name an epoch: `isdigit`
alone also takes "²" (which `int` refuses: a 500 on the ledger) and "١٢" (which `int` reads as 12)."""

from __future__ import annotations

import pytest

from shared.contract.headers import EPOCH_DIGITS_MAX, LEDGER_EPOCH, epoch_of
from shared.errors import BadRequest

from core_ledger.fencing import claimed_epoch
from edge.config import Limits
from edge.ledger_failover import LedgerFailover

NOT_EPOCHS = ["", "x", "12x", "-1", "+7", " 7", "7 ", "1_000", "²", "١٢", "٣", "1" * (EPOCH_DIGITS_MAX + 1)]


@pytest.mark.parametrize("raw", ["0", "7", "0012", "9" * EPOCH_DIGITS_MAX])
def test_ascii_digits_name_an_epoch(raw: str) -> None:
    assert epoch_of(raw) == int(raw)
    assert claimed_epoch(raw) == int(raw)


@pytest.mark.parametrize("raw", NOT_EPOCHS)
def test_anything_else_names_none_and_a_claim_of_it_is_a_validation_error(raw: str) -> None:
    assert epoch_of(raw) is None
    with pytest.raises(BadRequest) as refused:  # a 400 validation_error, never a 500
        claimed_epoch(raw)
    assert refused.value.code == "validation_error" and refused.value.extra["field"] == LEDGER_EPOCH


@pytest.mark.parametrize("raw", NOT_EPOCHS)
def test_an_edge_ignores_an_announced_epoch_that_is_not_one(raw: str) -> None:
    failover = LedgerFailover(["http://127.0.0.1:1"], Limits(), clock=lambda: 0.0)
    failover.learn_epoch({LEDGER_EPOCH: "3"})
    failover.learn_epoch({LEDGER_EPOCH: raw})  # "١٢" would have raised it to 12
    assert failover.epoch_seen == 3
