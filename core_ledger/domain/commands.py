"""What the ledger is asked to do (`Command`), when (`Context`), and the outcome types of `decide`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from core_ledger.domain.outcomes import Refusal, Reject, Rejection
from core_ledger.domain.records import Posting, Transaction

if TYPE_CHECKING:  # render imports state, which imports this module
    from core_ledger.domain.render import Answer

__all__ = [
    "ADMIN_SCOPE",
    "Command",
    "Context",
    "Draft",
    "InvariantBroken",
    "Refusal",
    "Reject",
    "Rejection",
    "Replay",
    "present",
    "require",
    "rfc3339",
]

# Idempotency scope of admin writes keyed by a natural id (player, jackpot): the same whichever
# admin sends them. Client ids from the wire match shared.ids.ID_PATTERN, which has no "@".
ADMIN_SCOPE = "@admin"
T = TypeVar("T")


@dataclass(frozen=True)
class Command:
    type: str
    request: dict[str, Any]  # JSON-ready request fields, without via/client_id
    principal: str  # the credential name that sent it
    key: tuple[str, str] | None  # (client_id, id): the idempotency key; None: not idempotent
    via: str | None = None

    @property
    def required_key(self) -> tuple[str, str]:
        """`key` of a command that always has one (every money command): its absence is a bug."""
        return present(self.key, f"the idempotency key of a {self.type} command")


@dataclass(frozen=True)
class Context:
    now: datetime
    now_text: str = field(init=False)  # formatted once per batch, not per command

    def __post_init__(self) -> None:
        object.__setattr__(self, "now_text", rfc3339(self.now))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Draft:
    """A decided transaction not yet on the chain (no sequence, no hash)."""

    transaction: Transaction
    postings: list[Posting] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    """The command repeats a stored one exactly: answer what was answered then."""

    answer: Answer


class InvariantBroken(Exception):
    """A money invariant does not hold (double entry, a missing row that must exist, a negative
    player balance...): a bug or corrupt state, never the caller's fault. The writer stops taking
    writes (fail-stop) rather than answer a retryable error that every retry would hit again."""


def require(condition: bool, what: str) -> None:
    """An explicit invariant check (unlike `assert`, it also runs under `python -O`)."""
    if not condition:
        raise InvariantBroken(what)


def present(row: T | None, what: str) -> T:
    """A row that must exist (an explicit check, and it narrows the type)."""
    if row is None:
        raise InvariantBroken(f"{what} is missing")
    return row
