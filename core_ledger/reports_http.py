"""The finance report API (`GET /admin/v1/reports/{ggr,cash,liabilities}`): query-string parsing,
the three representations (JSON by default; CSV with `Accept: text/csv` or `format=csv`; NDJSON with
`Accept: application/x-ndjson` or `format=ndjson`) and the route table. Role `admin_read`: reports
are an operator's (finance's) read of the whole ledger, like the operator lists
(docs/decisions/reports-maintained-by-the-writer.md). The reads are in core_ledger/reports.py.

Every representation names the journal sequence the figures include everything up to: a member of
the JSON answer, a column of every CSV row and a member of every NDJSON line (a row copied out of a
file still says what it was computed up to).
"""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any, Final

import orjson
from aiohttp import web

from shared import auth
from shared.contract.answers import CashReport, GgrReport, LiabilitiesReport
from shared.errors import BadRequest
from shared.routes import Route
from shared.web import json_response

from core_ledger.admin_http import ADMIN_READ_CODES
from core_ledger.query import query_id
from core_ledger.reports import CASH_DIMENSIONS, PLAY_DIMENSIONS, LedgerReports, Report

REPORTS = web.AppKey("reports", LedgerReports)
CSV: Final = "text/csv"
NDJSON: Final = "application/x-ndjson"
JSON: Final = "application/json"
FORMATS: Final = {"json": JSON, "csv": CSV, "ndjson": NDJSON}
MEDIA: Final = (CSV, NDJSON)  # besides JSON
REPORT_CODES: Final = (*ADMIN_READ_CODES, "report_too_large")
RANGE_QUERY: Final = {"from": "string", "to": "string", "currency": "string", "group_by": "string", "format": "string"}


def _day(request: web.Request, name: str) -> str:
    raw = request.query.get(name)
    try:
        if raw is not None and len(raw) == 10:
            return date.fromisoformat(raw).isoformat()
    except ValueError:
        pass
    raise BadRequest(f"{name}: a UTC day (YYYY-MM-DD) is required", field=name)


def _currency(request: web.Request) -> str | None:
    value = request.query.get("currency")
    if value is not None and not (len(value) == 3 and value.isascii() and value.isupper()):
        raise BadRequest("currency: a 3-letter currency code is required", field="currency")
    return value


def _group_by(request: web.Request, dimensions: tuple[str, ...]) -> tuple[str, ...]:
    """The dimensions to sum by, in the table's order; currency always (amounts of two currencies
    are never added). Absent: every dimension (one row per stored row)."""
    raw = request.query.get("group_by")
    if raw is None:
        return dimensions
    asked = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(asked - set(dimensions))
    if unknown or len(raw) > 200:
        raise BadRequest(f"group_by: a comma-separated list of {', '.join(dimensions)}", field="group_by")
    return tuple(d for d in dimensions if d in asked or d == "currency")


def _range(request: web.Request) -> tuple[str, str]:
    day_from, day_to = _day(request, "from"), _day(request, "to")
    if day_from > day_to:
        raise BadRequest("from: must not be after to", field="from")
    return day_from, day_to


def _media(request: web.Request) -> str:
    """The representation asked: `format` wins; else the first of CSV/NDJSON/JSON in `Accept`."""
    asked = request.query.get("format")
    if asked is not None:
        if asked not in FORMATS:
            raise BadRequest(f"format: one of {', '.join(FORMATS)}", field="format")
        return FORMATS[asked]
    accept = request.headers.get("Accept", "")
    ranked = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for media in ranked:
        if media in (CSV, NDJSON, JSON):
            return media
    return JSON


def _cell(value: Any) -> Any:
    return "" if value is None else value


def render(report: Report, media: str, header: dict[str, Any]) -> web.Response:
    """The report in `media`; `header` holds the JSON answer's members besides `rows`."""
    if media == CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([*report.columns, "up_to_sequence"])
        for row in report.rows:
            writer.writerow([*(_cell(row[c]) for c in report.columns), report.up_to_sequence])
        return web.Response(body=out.getvalue().encode(), content_type=CSV, charset="utf-8")
    if media == NDJSON:
        lines = b"".join(orjson.dumps({**row, "up_to_sequence": report.up_to_sequence}) + b"\n" for row in report.rows)
        return web.Response(body=lines, content_type=NDJSON)
    return json_response(
        {"report": report.name, **header, "up_to_sequence": report.up_to_sequence, "rows": report.rows}
    )


def _ranged_header(day_from: str, day_to: str, group_by: tuple[str, ...]) -> dict[str, Any]:
    return {"from": day_from, "to": day_to, "group_by": list(group_by)}


@auth.roles("admin_read")
async def ggr(request: web.Request) -> web.Response:
    media = _media(request)
    day_from, day_to = _range(request)
    group_by = _group_by(request, PLAY_DIMENSIONS)
    equals = {
        name: value
        for name, value in (
            ("currency", _currency(request)),
            ("game_id", query_id(request, "game_id")),
            ("client_id", query_id(request, "client_id")),
        )
        if value is not None
    }
    report = await request.app[REPORTS].ggr(day_from=day_from, day_to=day_to, equals=equals, group_by=group_by)
    return render(report, media, _ranged_header(day_from, day_to, group_by))


@auth.roles("admin_read")
async def cash(request: web.Request) -> web.Response:
    media = _media(request)
    day_from, day_to = _range(request)
    group_by = _group_by(request, CASH_DIMENSIONS)
    currency = _currency(request)
    equals = {} if currency is None else {"currency": currency}
    report = await request.app[REPORTS].cash(day_from=day_from, day_to=day_to, equals=equals, group_by=group_by)
    return render(report, media, _ranged_header(day_from, day_to, group_by))


@auth.roles("admin_read")
async def liabilities(request: web.Request) -> web.Response:
    media = _media(request)
    report = await request.app[REPORTS].liabilities(currency=_currency(request))
    return render(report, media, {})


ROUTES: list[Route] = [
    Route(
        "GET",
        "/admin/v1/reports/ggr",
        ggr,
        "GGR and NGR per UTC day, currency, game and client (or summed by group_by), from the journal "
        "up to up_to_sequence; JSON, CSV or NDJSON",
        query={**RANGE_QUERY, "game_id": "string", "client_id": "string"},
        answer=GgrReport,
        media=MEDIA,
        codes=REPORT_CODES,
        tag="reports",
    ),
    Route(
        "GET",
        "/admin/v1/reports/cash",
        cash,
        "Cash in (deposits) and out (withdrawals) per UTC day and currency, with adjustments and "
        "jackpot seeds; JSON, CSV or NDJSON",
        query=RANGE_QUERY,
        answer=CashReport,
        media=MEDIA,
        codes=REPORT_CODES,
        tag="reports",
    ),
    Route(
        "GET",
        "/admin/v1/reports/liabilities",
        liabilities,
        "Jackpot liability, bonus liability, house position and player balances per currency, as of "
        "now; JSON, CSV or NDJSON",
        query={"currency": "string", "format": "string"},
        answer=LiabilitiesReport,
        media=MEDIA,
        codes=ADMIN_READ_CODES,
        tag="reports",
    ),
]
