"""Pure ledger domain: commands, rules (`decide`), the fold (`evolve`), journal hashing, rendering."""

from core_ledger.domain.commands import (
    ADMIN_SCOPE,
    Command,
    Context,
    Draft,
    InvariantBroken,
    Reject,
    Replay,
    require,
    rfc3339,
)
from core_ledger.domain.decide import decide
from core_ledger.domain.evolve import evolve
from core_ledger.domain.journal import (
    ENTRY_FORMAT,
    GENESIS_HASH,
    ChainCheck,
    entry_format,
    entry_text,
    postings_balanced,
    seal,
)
from core_ledger.domain.plan import PASSES_MAX, PLANNED_FROM, rows_needed
from core_ledger.domain.render import public_transaction, render
from core_ledger.domain.state import TABLES, State

__all__ = [
    "ADMIN_SCOPE",
    "ENTRY_FORMAT",
    "GENESIS_HASH",
    "PASSES_MAX",
    "PLANNED_FROM",
    "TABLES",
    "ChainCheck",
    "Command",
    "Context",
    "Draft",
    "InvariantBroken",
    "Reject",
    "Replay",
    "State",
    "decide",
    "entry_format",
    "entry_text",
    "evolve",
    "postings_balanced",
    "public_transaction",
    "render",
    "require",
    "rfc3339",
    "rows_needed",
    "seal",
]
