"""Request ids (`X-Request-Id`): accepted from the caller when safe, generated otherwise.

A caller's id is kept only if it is 1..64 characters of `A-Z a-z 0-9 . _ : -`: nothing that could
break a log line, a header or a shell grep. Anything else is replaced by a fresh id (32 hex digits),
silently: the answer's `X-Request-Id` tells the caller which id its request got.

The id of the request being served lives in a context variable (set by the HTTP middleware), so the
code a request runs — the edge's ledger client forwarding its money action, every log line — can
read it without passing it through every call.
"""

from __future__ import annotations

import contextvars
import os
import random
import re

from shared.contract.headers import REQUEST_ID as HEADER  # noqa: F401  (re-exported)

LENGTH_MAX = 64
VALID = re.compile(rf"[A-Za-z0-9._:-]{{1,{LENGTH_MAX}}}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("croupier_request_id", default=None)

# Our own generator, seeded from the system's randomness (and again in a forked child): a
# `random.seed(n)` elsewhere in the process (a test, a benchmark driver) must not replay ids.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new() -> str:
    """32 hex digits from this module's generator: unique, and not a secret (a caller may choose
    its own id), so not worth a system call per request."""
    return f"{_ids.getrandbits(128):032x}"


def is_valid(value: object) -> bool:
    return isinstance(value, str) and VALID.fullmatch(value) is not None


def accept(raw: str | None) -> str:
    """The caller's id if it is valid, else a new one."""
    return raw if raw is not None and is_valid(raw) else new()


def current() -> str | None:
    """The id of the request this code runs for (None outside a request)."""
    return _current.get()


def bind(request_id: str) -> contextvars.Token[str | None]:
    return _current.set(request_id)


def unbind(token: contextvars.Token[str | None]) -> None:
    _current.reset(token)
