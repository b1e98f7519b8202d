"""The domain knows nothing of HTTP: it refuses with its own codes, and the ledger maps them to the
errors clients see (core_ledger/rejections.py) with the statuses they always had."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.errors import BadRequest, CroupierError, NotFound, Unprocessable, error_from_code, problem, status_for

from core_ledger.domain import Refusal, RefusalCode, RejectCode
from core_ledger.rejections import as_error

DOMAIN = Path(__file__).resolve().parents[2] / "core_ledger" / "domain"
# render.py turns a journaled entry into the HTTP answer that replays repeat byte for byte; it is
# the one module of the package that speaks HTTP (it is slated to leave the domain).
RENDERING = {"render.py"}
HTTP_MODULES = ("shared.errors", "aiohttp", "core_ledger.http", "core_ledger.rejections")

# What clients see for each code a decision can give: pinned (docs/API.md, error table).
STATUS_BY_CODE = {
    "round_closed": 409, "round_refunded": 409, "bet_rolled_back": 409, "version_conflict": 409,
    "already_claimed": 409, "wagering_already_claimed": 409, "wagering_not_met": 422, "bonus_expired": 422,
    "insufficient_funds": 422, "currency_mismatch": 422, "balance_limit_exceeded": 422, "account_frozen": 423,
    "validation_error": 400, "not_found": 404, "idempotency_key_reused": 422,
}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("module", sorted(p.name for p in DOMAIN.glob("*.py") if p.name not in RENDERING))
def test_the_domain_imports_nothing_http_flavoured(module: str) -> None:
    imported = imported_modules(DOMAIN / module)
    assert not {m for m in imported if m.startswith(HTTP_MODULES)}, imported


def test_every_domain_code_keeps_the_status_clients_see() -> None:
    codes = {c.value for c in RejectCode} | {c.value for c in RefusalCode}
    assert codes == set(STATUS_BY_CODE)
    for code in RejectCode:  # journaled: rendered from the stored code (domain/render.py)
        assert status_for(error_from_code(code.value, "x")) == STATUS_BY_CODE[code.value], code
    for refusal_code in RefusalCode:
        assert status_for(as_error(Refusal(refusal_code, "x"))) == STATUS_BY_CODE[refusal_code.value]


@pytest.mark.parametrize(("refusal", "before"), [
    (Refusal(RefusalCode.NOT_FOUND, "player 'p9' not found", field="player_id"),
     NotFound("player 'p9' not found", field="player_id")),
    (Refusal(RefusalCode.INVALID, "round 'r' belongs to game 'g'", field="game_id"),
     BadRequest("round 'r' belongs to game 'g'", field="game_id")),
    (Refusal(RefusalCode.IDEMPOTENCY_KEY_REUSED, "id 'x' was already used", field="type"),
     Unprocessable("id 'x' was already used", code="idempotency_key_reused", field="type")),
])
def test_a_refusal_is_answered_as_the_error_the_domain_raised_before(refusal: Refusal, before: CroupierError) -> None:
    error = as_error(refusal)
    assert type(error) is type(before) and problem(error) == problem(before)


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
    offenders = [f"{p.relative_to(root)}:{n}" for folder in ("core_ledger", "edge", "tests/ledger", "tests/edge")
                 for p in sorted((root / folder).rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if built.search(line) and "ADMIN_SCOPE" not in line]
    # (ADMIN_SCOPE, "player:<id>") is the idempotency key of an admin write: an id, not an account name
    assert offenders == []
