"""Which rows a command needs, so the writer can load a whole batch in a few queries.

Every command reads its idempotency rows and, when it names them, its player and the player's
account in the request's currency; the rest is the `plan` of its type's spec (`needs`).
`rows_needed` looks at what is already loaded: rows found in the first pass (a game's jackpots, a
bet being rolled back, a player's bonuses) name further rows for the next pass.
"""

from __future__ import annotations

from core_ledger.domain.accounts import player_account
from core_ledger.domain.commands import Command
from core_ledger.domain.needs import Need, idem_rows
from core_ledger.domain.specs import spec_of
from core_ledger.domain.state import ENTRIES, State

PASSES_MAX = 4  # idem/player/game/bet/round rows → entries/bonuses/jackpots/bets → accounts: 3 deep
# The only tables `rows_needed` reads (peeks), and it names further rows only from rows that exist:
# a command must be planned again only when a row of these tables was just found for it. (A fresh
# bet finds no idem row and no bet row: it is planned once.)
PLANNED_FROM = frozenset(
    {"idem", "players", "games", "bets", ENTRIES, "jackpots", "bonuses", "rounds", "client_rounds"}
)  # a round being settled names its bets


def rows_needed(view: State, cmd: Command) -> Need:
    r = cmd.request
    need: Need = []
    if cmd.key is not None:
        idem_rows(view, cmd.key, need)
    pid = r.get("player_id")
    if pid is not None:
        need.append(("players", (pid,)))
        if "currency" in r:
            need.append(("accounts", (player_account(pid, r["currency"]),)))
    spec_of(cmd.type).plan(view, cmd, need)
    return need
