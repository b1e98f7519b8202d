"""Route declarations shared by the HTTP modules and the OpenAPI generator, the app keys, and
request helpers (path ids, bounded query values, page limits, answers of the writer)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.credentials import CredentialReloader
from shared.errors import BadRequest, CroupierError
from shared.routes import Route, path_id  # noqa: F401  (re-exported for the HTTP modules)
from shared.web import dumps

from core_ledger.audit import Auditor
from core_ledger.backup_jobs import Backups
from core_ledger.config import LedgerConfig
from core_ledger.fencing import Fencing
from core_ledger.liabilities import LiabilitiesSampler
from core_ledger.reads import LedgerReads
from core_ledger.service import LedgerService
from core_ledger.standby import Standby

SERVICE = web.AppKey("ledger_service", LedgerService)
READS = web.AppKey("ledger_reads", LedgerReads)
CONFIG = web.AppKey("ledger_config", LedgerConfig)
STANDBY = web.AppKey("ledger_standby", Standby)  # present only in standby mode
AUDITOR = web.AppKey("ledger_auditor", Auditor)
FENCING = web.AppKey("ledger_fencing", Fencing)
CREDENTIALS = web.AppKey("ledger_credentials", CredentialReloader)
BACKUPS = web.AppKey("ledger_backups", Backups)
LIABILITIES = web.AppKey("ledger_liabilities", LiabilitiesSampler)


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: an integer is required", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}", field=name)
    return value


def query_bool(request: web.Request, name: str) -> bool:
    """`true` or `false` (absent: false); anything else is a 400."""
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise BadRequest(f"{name}: true or false", field=name)
    return raw == "true"


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise BadRequest(f"{name}: must be one of {', '.join(choices)}", field=name)
    return value


def answer(result: tuple[int, dict[str, Any]] | CroupierError) -> web.Response:
    """The HTTP form of one writer result (a stored rejection replays as problem+json)."""
    if isinstance(result, CroupierError):
        raise result
    status, body = result
    kind = "application/problem+json" if status >= 400 else "application/json"
    return web.Response(body=dumps(body), status=status, content_type=kind)


def page_limit(request: web.Request) -> int:
    high = request.app[CONFIG].page_limit_max
    return query_int(request, "limit", min(100, high), low=1, high=high)
