"""Bearer-token authentication and role checks.

Tokens are configured as sha256 hashes (never in clear), looked up by hash and compared in
constant time. Each route declares the roles it admits with `@roles(...)`; a route without a
declaration admits nobody (deny by default) unless it is marked `@public`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from shared.errors import Forbidden, Unauthenticated

# `events`: a downstream system reading the ledger's event stream (GET /v1/events) and acknowledging
# it; read-only, accepted by the ledger only (edge/config.py ACCEPTED_ROLES refuses it).
ROLES = frozenset(
    {"game_server", "edge", "peer", "cashier", "admin_read", "admin_write", "replica", "metrics", "events"}
)

F = TypeVar("F", bound=Callable[..., object])


CLIENT_ROLES = frozenset({"edge", "game_server"})  # whose names an edge may act for as `client_id`


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    # An edge's: the names of the credentials of other roles than edges and game servers this
    # service accepts. An edge may not name one as the client it acts for: it would share that
    # credential's idempotency keys, rounds and report rows (squat a cashier's deposit ids, say).
    reserved_client_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    sha256: str  # hex digest of the token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class TokenStore:
    """Resolves a presented bearer token to its principal."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._by_hash: dict[str, tuple[str, Principal]] = {}  # sha256 hex -> (itself, its principal)
        self.replace(entries)

    def replace(self, entries: Iterable[TokenEntry]) -> None:
        """Accept exactly `entries` from now on (a credential reload): a removed token stops working."""
        entries = tuple(entries)
        by_hash: dict[str, tuple[str, Principal]] = {}
        others = frozenset(e.name for e in entries if e.role not in CLIENT_ROLES)
        for e in entries:
            assert e.role in ROLES, e.role
            # The principal is made once per entry (it is frozen), not once per request.
            reserved = others if e.role == "edge" else frozenset()
            by_hash[e.sha256.lower()] = (e.sha256.lower(), Principal(e.name, e.role, reserved))
        self._by_hash = by_hash  # one assignment: a request sees the old set or the new one
        self.entries = entries  # a new tuple per reload: what the ledger pushes to its fronts

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, header: str | None) -> Principal:
        if not header or not header.startswith("Bearer "):
            raise Unauthenticated("a bearer token is required")
        digest = hash_token(header[7:].strip())
        found = self._by_hash.get(digest)
        # The dict lookup is by a hash of the secret; the constant-time compare guards the final check.
        if found is None or not hmac.compare_digest(found[0], digest):
            raise Unauthenticated("the bearer token is not valid")
        return found[1]


def roles(*allowed: str) -> Callable[[F], F]:
    assert allowed and set(allowed) <= ROLES, allowed

    def mark(handler: F) -> F:
        handler.croupier_roles = frozenset(allowed)  # type: ignore[attr-defined]  # a marker read back by getattr
        return handler

    return mark


def public(handler: F) -> F:
    handler.croupier_public = True  # type: ignore[attr-defined]  # a marker read back by getattr
    return handler


def check(handler: object, principal: Principal | None) -> None:
    """Raise unless `principal` may call `handler`."""
    if getattr(handler, "croupier_public", False):
        return
    if principal is None:
        raise Unauthenticated("a bearer token is required")
    allowed: frozenset[str] = getattr(handler, "croupier_roles", frozenset())
    if principal.role not in allowed:
        raise Forbidden(f"role {principal.role!r} may not call this route")
