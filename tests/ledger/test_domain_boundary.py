"""The domain knows nothing of HTTP: it refuses with its own codes, and the ledger maps them to the
errors clients see (core_ledger/rejections.py) with the statuses they always had."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.errors import BadRequest, CroupierError, NotFound, Unprocessable, error_from_code, problem, status_for

from core_ledger.domain import CommittedAnswer, Refusal, RefusalCode, RejectCode, RejectedAnswer, render
from core_ledger.rejections import as_error, journaled_error, status_and_body

DOMAIN = Path(__file__).resolve().parents[2] / "core_ledger" / "domain"
HTTP_MODULES = ("shared.errors", "aiohttp", "core_ledger.http", "core_ledger.rejections")

# What clients see for each code a decision can give: pinned (docs/API.md, error table).
STATUS_BY_CODE = {
    "round_closed": 409,
    "round_refunded": 409,
    "bet_rolled_back": 409,
    "version_conflict": 409,
    "already_claimed": 409,
    "wagering_already_claimed": 409,
    "wagering_not_met": 422,
    "bonus_expired": 422,
    "insufficient_funds": 422,
    "currency_mismatch": 422,
    "balance_limit_exceeded": 422,
    "report_limit_exceeded": 422,
    "account_frozen": 423,
    "validation_error": 400,
    "not_found": 404,
    "idempotency_key_reused": 422,
}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("module", sorted(p.name for p in DOMAIN.glob("*.py")))
def test_the_domain_imports_nothing_http_flavoured(module: str) -> None:
    imported = imported_modules(DOMAIN / module)
    assert not {m for m in imported if m.startswith(HTTP_MODULES)}, imported


def test_every_domain_code_keeps_the_status_clients_see() -> None:
    codes = {c.value for c in RejectCode} | {c.value for c in RefusalCode}
    assert codes == set(STATUS_BY_CODE)
    for code in RejectCode:  # journaled: the stored code gets its status at the boundary (rejections.py)
        status, _ = status_and_body(RejectedAnswer(code.value, "x", 1, "t1"), replayed=False)
        assert status == STATUS_BY_CODE[code.value], code
    for refusal_code in RefusalCode:
        assert status_for(as_error(Refusal(refusal_code, "x"))) == STATUS_BY_CODE[refusal_code.value]


@pytest.mark.parametrize(
    ("refusal", "before"),
    [
        (
            Refusal(RefusalCode.NOT_FOUND, "player 'p9' not found", field="player_id"),
            NotFound("player 'p9' not found", field="player_id"),
        ),
        (
            Refusal(RefusalCode.INVALID, "round 'r' belongs to game 'g'", field="game_id"),
            BadRequest("round 'r' belongs to game 'g'", field="game_id"),
        ),
        (
            Refusal(RefusalCode.IDEMPOTENCY_KEY_REUSED, "id 'x' was already used", field="type"),
            Unprocessable("id 'x' was already used", code="idempotency_key_reused", field="type"),
        ),
    ],
)
def test_a_refusal_is_answered_as_the_error_the_domain_raised_before(refusal: Refusal, before: CroupierError) -> None:
    error = as_error(refusal)
    assert type(error) is type(before) and problem(error) == problem(before)


def rejected_entry(code: str) -> dict:
    transaction = {
        "id": "b2",
        "type": "bet",
        "outcome": "rejected",
        "code": code,
        "detail": "only 50 left",
        "request": {"amount_minor": 100},
        "result": {},
    }
    return {"sequence": 4, "epoch": 1, "transaction": transaction}


def test_the_domain_renders_a_journaled_refusal_as_its_code_only() -> None:
    assert render(rejected_entry("insufficient_funds")) == RejectedAnswer("insufficient_funds", "only 50 left", 4, "b2")


@pytest.mark.parametrize("code", sorted(c.value for c in RejectCode))
def test_a_journaled_refusal_is_answered_as_the_error_table_says_first_time_and_replayed(code: str) -> None:
    """The bytes clients always got: the problem+json of the code's error, `replayed` last."""
    before = error_from_code(code, "only 50 left", sequence=4, transaction_id="b2")
    for replayed in (False, True):
        status, body = status_and_body(render(rejected_entry(code)), replayed=replayed)
        assert status == status_for(before) == STATUS_BY_CODE[code]
        assert list(body.items()) == [*problem(before).items(), ("replayed", replayed)]
    assert problem(journaled_error(RejectedAnswer(code, "only 50 left", 4, "b2"))) == problem(before)


def test_a_committed_answer_is_201_first_and_200_replayed_with_replayed_last() -> None:
    answer = CommittedAnswer({"transaction": {"id": "d1"}, "balance": {"balance_minor": 7}})
    assert status_and_body(answer, replayed=False) == (201, {**answer.body, "replayed": False})
    status, body = status_and_body(answer, replayed=True)
    assert status == 200 and list(body) == ["transaction", "balance", "replayed"] and body["replayed"] is True


def test_account_names_are_built_in_one_place_and_split_back() -> None:
    from core_ledger.domain.accounts import (
        is_player_account,
        jackpot_account,
        player_account,
        player_of,
        system_account,
    )

    assert player_account("p:1", "EUR") == "player:p:1:EUR" and player_of("player:p:1:EUR") == "p:1"
    assert system_account("house", "EUR") == "house:EUR" and jackpot_account("j1") == "jackpot:j1"
    assert is_player_account(player_account("p", "EUR")) and not is_player_account(system_account("cashier", "EUR"))
    with pytest.raises(ValueError, match="not a player account"):
        player_of(jackpot_account("j1"))


def test_no_account_name_is_built_outside_the_accounts_module() -> None:
    root = DOMAIN.parents[1]
    built = re.compile(r"""f["'](player|jackpot|house|cashier|bonus):\{""")
    offenders = [
        f"{p.relative_to(root)}:{n}"
        for folder in ("core_ledger", "edge", "tests/ledger", "tests/edge")
        for p in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if built.search(line) and "ADMIN_SCOPE" not in line
    ]
    # (ADMIN_SCOPE, "player:<id>") is the idempotency key of an admin write: an id, not an account name
    assert offenders == []
