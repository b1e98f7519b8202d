"""Answer bodies of both services: what the ledger renders, what the edge parses, what the OpenAPI
documents show, and what the tests' fake ledger builds — one definition.

Answers are open (`extra="allow"`): a member added later reaches an older client unharmed, and a
client that re-serves an answer (the edge forwards the ledger's money answers to game servers)
passes every member on. Members are typed loosely enough to round-trip the JSON exactly
(timestamps stay RFC 3339 text): `dump` gives back what was parsed, no `null` added.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")

    def dump(self) -> dict[str, Any]:
        """The JSON object: the members set (parsed or given), extras included, nothing added."""
        return self.model_dump(mode="json", exclude_unset=True)


# --- problems ---------------------------------------------------------------------------------


class FieldError(Answer):
    field: str = Field(description="Dotted path of the invalid member (`body` for the whole body)")
    message: str


class Problem(Answer):
    """RFC 9457 problem details with a stable `code` (docs/API.md, "Errors")."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = Field(default=None, description="The request's X-Request-Id")
    field: str | None = Field(default=None, description="The first invalid member (400)")
    errors: list[FieldError] | None = Field(default=None, description="Every invalid member (400 validation_error)")
    replayed: bool | None = Field(default=None, description="A stored rejection answered again")


# --- money ------------------------------------------------------------------------------------


class Balance(Answer):
    player_id: str
    currency: str
    balance_minor: int
    version: int


class JackpotContribution(Answer):
    jackpot_id: str
    amount_minor: int
    epoch: int


class BonusWagering(Answer):
    bonus_id: str
    amount_minor: int


class Transaction(Answer):
    """A journaled transaction: the common members, the request's fields and what the ledger
    computed for its type (docs/API.md, "Answers of the money writes")."""

    id: str | None
    type: str
    sequence: int
    epoch: int
    ledger_epoch: int = Field(description="The epoch of the ledger copy that journaled it (orders effects)")
    committed_at: str
    via: str | None
    client_id: str | None
    outcome: Literal["committed", "rejected"]
    code: str | None = None
    player_id: str | None = None
    currency: str | None = None
    amount_minor: int | None = None
    jackpot_contributions: list[JackpotContribution] = []
    bonus_wagering: list[BonusWagering] = []
    reversed_contributions: list[JackpotContribution] = []
    reversed: bool | None = None
    bet_found: bool | None = None
    bet_via: str | None = None
    jackpot_id: str | None = None
    seed_minor: int | None = None
    external_ref: str | None = Field(default=None, description="The provider's reference, when the write sent one")
    metadata: dict[str, str] | None = Field(default=None, description="The write's labels, when it sent any")
    bet_id: str | None = Field(default=None, description="The bet a rollback reverses or a win settles")
    round_id: str | None = None


class StaleRound(Answer):
    player_id: str
    round_id: str
    client_id: str | None = Field(description="The game-server client the round is scoped to (null: before scoping)")
    game_id: str
    currency: str
    opened_at: str
    opened_sequence: int = Field(description="The sequence of the bet that opened it (the listing's order)")


class StaleRoundsAnswer(Answer):
    """Open rounds older than `older_than_s`, oldest first."""

    rounds: list[StaleRound]
    next_after_sequence: int = Field(description="Pass as `after_sequence` for the next page")
    has_more: bool
    older_than_s: float
    as_of_sequence: int


class ExternalRefAnswer(Answer):
    """The transactions journaled under one `external_ref` (committed or rejected), by sequence."""

    external_ref: str
    transactions: list[Transaction]
    next_after_sequence: int = Field(description="Pass as `after_sequence` for the next page")
    has_more: bool
    as_of_sequence: int


class TransactionAnswer(Answer):
    """The answer to a journaled write (money or admin): 201 first, 200 with `replayed` after."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "transaction": {
                        "id": "b-1",
                        "type": "bet",
                        "sequence": 5,
                        "epoch": 1,
                        "ledger_epoch": 1,
                        "committed_at": "2026-11-23T10:00:00.000000Z",
                        "via": "eu",
                        "client_id": "gs",
                        "outcome": "committed",
                        "player_id": "p1",
                        "currency": "EUR",
                        "amount_minor": 500,
                        "round_id": "r-1",
                        "game_id": "slots-1",
                        "jackpot_contributions": [{"jackpot_id": "mega", "amount_minor": 5, "epoch": 1}],
                        "bonus_wagering": [{"bonus_id": "welcome", "amount_minor": 500}],
                    },
                    "balance": {"player_id": "p1", "currency": "EUR", "balance_minor": 9500, "version": 2},
                    "replayed": False,
                }
            ]
        },
    )

    transaction: Transaction
    balance: Balance | None = None
    player: dict[str, Any] | None = None
    jackpot: dict[str, Any] | None = None
    bonus: dict[str, Any] | None = None
    replayed: bool


class BatchResult(Answer):
    status: int
    # Tried in order, first match wins: a body is one or the other (a transaction answer needs
    # `transaction` and `replayed`, a problem `type`, `title`, `status`, `detail`, `code`), and pydantic's
    # default "smart" mode validated every body against both, about 3x the cost of an edge's parse of
    # a batch answer. Same JSON schema.
    body: TransactionAnswer | Problem = Field(union_mode="left_to_right")


class BatchAnswer(Answer):
    results: list[BatchResult]


# --- ledger reads -----------------------------------------------------------------------------


class AccountBalance(Answer):
    currency: str
    balance_minor: int
    version: int


class BalancesAnswer(Answer):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"player_id": "p1", "balances": [{"currency": "EUR", "balance_minor": 9500, "version": 2}]}]
        },
    )

    player_id: str
    balances: list[AccountBalance]


class Round(Answer):
    player_id: str
    round_id: str
    client_id: str | None = None
    game_id: str
    currency: str
    status: str
    bets_minor: int
    wins_minor: int


class RoundsAnswer(Answer):
    rounds: list[Round]


class LedgerJackpot(Answer):
    jackpot_id: str
    currency: str
    pool_minor: int
    seed_minor: int
    epoch: int
    contributions_by_edge: dict[str, int]
    as_of_sequence: int
    as_of_epoch: int | None = None


class LedgerBonus(Answer):
    bonus_id: str
    currency: str
    wagered_minor: int
    wagered_by_edge: dict[str, int]
    status: str


class LedgerBonuses(Answer):
    player_id: str
    bonuses: list[LedgerBonus]
    as_of_sequence: int
    as_of_epoch: int | None = None


class Limits(Answer):
    """What a client of the ledger must respect (`GET /v1/limits`)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "batch_actions_max": 256,
                    "body_bytes_max": 65536,
                    "page_limit_max": 1000,
                    "journal_wait_ms_max": 5000,
                    "reason_chars_max": 500,
                    "currencies_max": 16,
                    "game_ids_max": 1000,
                }
            ]
        },
    )

    batch_actions_max: int = Field(description="Actions per POST /v1/batch")
    body_bytes_max: int = Field(description="Bytes of one request body")
    page_limit_max: int = Field(description="Largest `limit` of a paged read")
    journal_wait_ms_max: int = Field(description="Largest `wait_ms` of GET /v1/journal")
    reason_chars_max: int = Field(description="Characters of an admin `reason`")
    currencies_max: int = Field(description="Currencies of one player")
    game_ids_max: int = Field(description="Games of one jackpot")


class Health(Answer):
    status: Literal["ok"]


class LedgerReady(Answer):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "role": "primary",
                    "epoch": 1,
                    "fenced": False,
                    "head_sequence": 42,
                    "head_hash": "9f" * 32,
                }
            ]
        },
    )

    status: Literal["ready", "unavailable", "fenced", "halted"]
    role: str
    epoch: int
    fenced: bool
    head_sequence: int
    head_hash: str
    promoting: bool | None = Field(
        default=None, description="A promote request is under way on this copy (absent from older ledgers)"
    )
    instance: str | None = Field(
        default=None, description="This process's random id: a ledger reading it among its peers is reading itself"
    )


# --- admin ------------------------------------------------------------------------------------


class PlayerAnswer(Answer):
    player_id: str
    currencies: list[str]
    frozen: bool
    balances: list[AccountBalance]


class StatementAnswer(Answer):
    player_id: str
    currency: str
    entries: list[dict[str, Any]]
    next_after_sequence: int
    as_of_sequence: int


class TraceAnswer(Answer):
    id: str
    entries: list[dict[str, Any]]


class AuditReport(Answer):
    ok: bool


class Head(Answer):
    sequence: int
    hash: str


class ReplicationAnswer(Answer):
    role: str
    epoch: int
    fenced: bool
    head: Head
    standbys: list[dict[str, Any]]


class Promoted(Answer):
    role: Literal["primary"]
    epoch: int
    head: Head


class BackupTaken(Answer):
    pass


# --- edge -------------------------------------------------------------------------------------


class EdgeJackpot(Answer):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "jackpot_id": "mega",
                    "currency": "EUR",
                    "display_minor": 1005,
                    "epoch": 1,
                    "seed_minor": 1000,
                    "by_edge": {"eu": 5},
                    "as_of": "2026-11-23T10:00:00.000Z",
                }
            ]
        },
    )

    jackpot_id: str
    currency: str | None
    display_minor: int
    epoch: int
    seed_minor: int | None
    by_edge: dict[str, int]
    as_of: str


class EdgeJackpots(Answer):
    jackpots: list[EdgeJackpot]


class BonusProgressItem(Answer):
    bonus_id: str
    wagered_minor: int
    by_edge: dict[str, int]


class BonusProgress(Answer):
    player_id: str
    bonuses: list[BonusProgressItem]


class SavedGame(Answer):
    state: dict[str, Any]
    updated_at: str
    edge: str


class SessionAnswer(Answer):
    player_id: str
    open_rounds: list[Round]
    open_rounds_available: bool
    games: dict[str, SavedGame]


class SessionSaved(SavedGame):
    player_id: str
    game_id: str


class EdgeReady(Answer):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"status": "ready", "store": True, "ledger": True, "peers_connected": ["us"], "background_failing": []}
            ]
        },
    )

    status: Literal["ready", "unavailable"]
    store: bool
    ledger: bool
    peers_connected: list[str]
    background_failing: list[str]


# --- signed checkpoints and the event stream (core_ledger/audit_http.py, events_http.py) -------------


class Checkpoint(Answer):
    sequence: int
    hash: str
    epoch: int
    time: str
    key_id: str
    signature: str  # base64 Ed25519 over the canonical {kind, sequence, hash, epoch, time}


class CheckpointsAnswer(Answer):
    checkpoints: list[Checkpoint]
    next_cursor: str | None
    has_more: bool
    key_id: str | None = None
    public_key: str | None = None  # PEM


class CheckpointTaken(Answer):
    checkpoint: Checkpoint | None


class ConsumerCursor(Answer):
    name: str
    acked_sequence: int
    lag_entries: int


class Consumer(ConsumerCursor):
    """A named event consumer (never its webhook secret: `webhook_secret_set` says whether one is set)."""

    webhook_url: str | None = None
    webhook_secret_set: bool | None = None


class ConsumersAnswer(Answer):
    consumers: list[Consumer]
    acknowledged_sequence: int


class ConsumerDeleted(Answer):
    name: str
    deleted: bool


class DeadLetterReplayed(Answer):
    name: str
    letter_id: str
    delivered: bool
    error: str | None = None


# --- operator queries (core_ledger/queries.py) ---------------------------------------------------


class PageFields(Answer):
    """What every paged listing carries: pass `next_cursor` back as `cursor` for the next page (also
    in the `Link: <...>; rel="next"` header) while `has_more`."""

    next_cursor: str | None = Field(description="Opaque; null on the last page")
    has_more: bool
    as_of_sequence: int = Field(description="The journal head this page was read at")


class PlayerListed(Answer):
    player_id: str
    currencies: list[str]
    frozen: bool
    status: Literal["active", "frozen"]
    created_sequence: int | None = Field(default=None, description="With a creation range only")
    created_at: str | None = Field(default=None, description="With a creation range only")


class PlayersPage(PageFields):
    players: list[PlayerListed]


class AccountListed(Answer):
    account: str
    kind: str = Field(description="player, house, jackpot, bonus or cashier")
    currency: str | None = Field(description="null for a jackpot pool (see its jackpot)")
    balance_minor: int
    version: int
    player_id: str | None = None
    jackpot_id: str | None = None


class AccountsPage(PageFields):
    accounts: list[AccountListed]


class TransactionListed(Answer):
    sequence: int
    id: str | None
    type: str
    outcome: str
    client_id: str | None
    via: str | None
    committed_at: str
    player_id: str | None
    game_id: str | None
    round_id: str | None
    currency: str | None


class TransactionsPage(PageFields):
    transactions: list[TransactionListed]


class RoundListed(Round):
    opened_sequence: int | None = None


class RoundsPage(PageFields):
    rounds: list[RoundListed]


class JackpotListed(Answer):
    jackpot_id: str
    currency: str
    pool_minor: int
    seed_minor: int
    epoch: int
    contribution_ppm: int
    game_ids: list[str]
    contributions_by_edge: dict[str, int]


class JackpotsPage(PageFields):
    jackpots: list[JackpotListed]


class BonusListed(Answer):
    player_id: str
    bonus_id: str
    currency: str
    amount_minor: int
    wagered_minor: int
    status: Literal["active", "claimed", "expired"]
    expires_at: str


class BonusesPage(PageFields):
    bonuses: list[BonusListed]


class BalanceAsOf(Answer):
    currency: str
    balance_minor: int
    last_sequence: int | None = Field(description="The entry that last changed it by then (null: none)")


class BalancesAsOfAnswer(Answer):
    player_id: str
    as_of_sequence: int
    balances: list[BalanceAsOf]


# --- finance reports (GET /admin/v1/reports/...) --------------------------------------------------


class ReportFields(Answer):
    """What every report carries: the journal sequence its figures include everything up to (and
    nothing after), read in one snapshot with them."""

    report: str = Field(description="ggr, cash or liabilities")
    up_to_sequence: int = Field(description="The journal head the figures were read at")


class RangedReportFields(ReportFields):
    from_: str = Field(alias="from", description="First UTC day included (YYYY-MM-DD)")
    to: str = Field(description="Last UTC day included (YYYY-MM-DD)")
    group_by: list[str] = Field(description="The dimensions rows are summed by (currency always)")


class GgrRow(Answer):
    """Sums of one group (a dimension not grouped by is absent); minor units of its currency."""

    day: str | None = None
    currency: str
    game_id: str | None = Field(default=None, description="null: no game (bonus claims)")
    client_id: str | None = None
    bets_minor: int
    bet_count: int
    wins_minor: int
    win_count: int
    rollbacks_minor: int
    rollback_count: int
    refunds_minor: int = Field(description="Bets given back by round refunds (interrupted rounds)")
    refund_count: int
    jackpot_contributions_minor: int = Field(description="Stake shares moved to jackpot pools, net of reversals")
    jackpot_payouts_minor: int = Field(description="Paid out of pools (not part of GGR: counted when contributed)")
    jackpot_payout_count: int
    bonus_cost_minor: int = Field(description="Bonus money credited to players by claims")
    bonus_claim_count: int
    ggr_minor: int = Field(description="bets - wins - rollbacks - refunds - jackpot contributions")
    ngr_minor: int = Field(description="GGR - bonus cost")


class GgrReport(RangedReportFields):
    rows: list[GgrRow]


class CashRow(Answer):
    day: str | None = None
    currency: str
    deposits_minor: int
    deposit_count: int
    withdrawals_minor: int
    withdrawal_count: int
    adjustments_minor: int = Field(description="Operator adjustments to players (signed), paid by the house")
    adjustment_count: int
    jackpot_seeds_minor: int = Field(description="Jackpot pools (re)seeded by the house")
    net_cash_minor: int = Field(description="deposits - withdrawals")


class CashReport(RangedReportFields):
    rows: list[CashRow]


class LiabilitiesRow(Answer):
    currency: str
    player_balances_minor: int = Field(description="Everything players hold")
    jackpot_liability_minor: int = Field(description="The jackpot pools: owed to future winners")
    bonus_liability_minor: int = Field(description="Bonus money credited to players (part of their balances)")
    house_position_minor: int = Field(description="The house account's balance")
    cash_held_minor: int = Field(description="Deposits minus withdrawals, all time")


class LiabilitiesReport(ReportFields):
    rows: list[LiabilitiesRow]
