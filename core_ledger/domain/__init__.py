"""Pure ledger domain: commands, one spec per transaction type (`specs`: its rows, rules and fold),
`decide`, `evolve`, journal hashing, rendering. No I/O, and no HTTP: refusals carry codes only
(`outcomes`); the ledger service maps them to answers (`core_ledger.rejections`)."""

from core_ledger.domain.commands import (
    ADMIN_SCOPE,
    Command,
    Context,
    Draft,
    InvariantBroken,
    Replay,
    require,
    rfc3339,
)
from core_ledger.domain.decide import decide
from core_ledger.domain.evolve import evolve, fold
from core_ledger.domain.journal import (
    ENTRY_FORMAT,
    GENESIS_HASH,
    ChainCheck,
    entry_command,
    entry_format,
    entry_text,
    postings_balanced,
    seal,
    sealed,
)
from core_ledger.domain.outcomes import Outcome, Refusal, RefusalCode, Reject, RejectCode, Rejection
from core_ledger.domain.plan import PASSES_MAX, PLANNED_FROM, rows_needed
from core_ledger.domain.render import Answer, CommittedAnswer, RejectedAnswer, public_transaction, render
from core_ledger.domain.specs import SPECS, TRANSACTION_TYPES, TransactionSpec, spec_of
from core_ledger.domain.state import TABLES, State

__all__ = [
    "ADMIN_SCOPE",
    "ENTRY_FORMAT",
    "GENESIS_HASH",
    "PASSES_MAX",
    "PLANNED_FROM",
    "SPECS",
    "TABLES",
    "TRANSACTION_TYPES",
    "Answer",
    "ChainCheck",
    "Command",
    "CommittedAnswer",
    "Context",
    "Draft",
    "InvariantBroken",
    "Outcome",
    "Refusal",
    "RefusalCode",
    "Reject",
    "RejectCode",
    "RejectedAnswer",
    "Rejection",
    "Replay",
    "State",
    "TransactionSpec",
    "decide",
    "entry_command",
    "entry_format",
    "entry_text",
    "evolve",
    "fold",
    "postings_balanced",
    "public_transaction",
    "render",
    "require",
    "rfc3339",
    "rows_needed",
    "seal",
    "sealed",
    "spec_of",
]
