"""aiohttp plumbing both services share: problem+json errors, auth, request metrics, request ids,
one log line per request, JSON I/O.

Handlers parse (`read_model`), call one service method, and render (`json_response`); a handler
that knows more about the caller (the `client_id` and `via` of a money action) adds it to its
request's log line with `annotate`.

Every request gets an id (shared/request_ids.py): the caller's valid `X-Request-Id`, else a new
one. It is echoed in the `X-Request-Id` header of every answer and as `request_id` in every
problem+json body, and bound for the request's duration so that every log line it causes holds it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError

from shared import auth, logs, request_ids
from shared.contract import headers
from shared.errors import (
    BadRequest,
    CroupierError,
    MalformedJson,
    PayloadTooLarge,
    RequestTimeout,
    Unauthenticated,
    Unavailable,
    problem,
    status_for,
)
from shared.metrics import HttpMetrics

log = structlog.get_logger("croupier.http")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PRINCIPAL = web.RequestKey("principal", auth.Principal)  # the authenticated caller
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
TOKENS_KEY = web.AppKey("tokens", auth.TokenStore)
HTTP_METRICS_KEY = web.AppKey("http_metrics", HttpMetrics)
BODY_TIMEOUT_KEY = web.AppKey("body_timeout_s", float)  # `read_body`'s deadline (http_body_timeout_s)
BODY_TIMEOUT_S = 15.0  # its default
REQUEST_ID = web.RequestKey("request_id", str)
LOG_FIELDS = web.RequestKey("log_fields", dict)
LOG_LINES = web.RequestKey("log_lines", logs.RequestLines)  # written together when the request ends
# A service's own check of an authenticated caller's request, run before its handler (the ledger
# judges a caller's `X-Ledger-Epoch` claim): it returns an awaitable only when it has work to do.
CallerCheck = Callable[[web.Request, auth.Principal], Awaitable[None] | None]
CALLER_CHECKS_KEY = web.AppKey("caller_checks", tuple[CallerCheck, ...])
# Headers a service adds to every answer (the ledger's epoch), set in the one prepare hook.
AnswerHeaders = Callable[[web.Request, web.StreamResponse], None]
ANSWER_HEADERS_KEY = web.AppKey("answer_headers", list[AnswerHeaders])
ERROR_CODE = web.RequestKey("error_code", str)  # the problem `code` of the answer (set when it has one)
# Set by a relay whose answer came from the process it relays to: that process measured and logged
# the request, so this one does neither (the ledger's fronts: core_ledger/front_app.py).
RELAYED = web.RequestKey("relayed", bool)
PROBLEM_TYPE = "application/problem+json"
# Polled by probes and scrapers every few seconds: their lines are debug, not info.
PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json", headers=headers)


def problem_headers(exc: CroupierError, request_headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """`Retry-After` on a 503; `WWW-Authenticate` on a 401 (RFC 6750: `error="invalid_token"` when a
    token was sent, none when it was missing)."""
    out = {}
    if isinstance(exc, Unavailable):
        out[headers.RETRY_AFTER] = str(max(1, exc.retry_after_s))
    if isinstance(exc, Unauthenticated):
        challenge = f'Bearer realm="{headers.BEARER_REALM}"'
        if request_headers is not None and request_headers.get(headers.AUTHORIZATION):
            challenge += ', error="invalid_token", error_description="the bearer token is not valid"'
        out[headers.WWW_AUTHENTICATE] = challenge
    return out


def problem_response(exc: CroupierError, request_headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(problem(exc)),
        status=status_for(exc),
        content_type="application/problem+json",
        headers=problem_headers(exc, request_headers),
    )


def validation_error(exc: ValidationError) -> BadRequest:
    """A 400 naming every invalid member: `field` and `detail` the first (as always), `errors` all."""
    errors = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "body"
        msg = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        errors.append({"field": field, "message": msg})
    first = errors[0]
    return BadRequest(f"{first['field']}: {first['message']}", field=first["field"], errors=errors)


def parse_json(raw: bytes) -> Any:
    try:
        raw.decode("utf-8")
        return orjson.loads(raw)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as e:
        raise MalformedJson(f"request body is not valid UTF-8 JSON: {e}") from None


def validate(model: type[M], value: Any) -> M:
    if not isinstance(value, dict):
        raise BadRequest(
            "body: a JSON object is required",
            field="body",
            errors=[{"field": "body", "message": "a JSON object is required"}],
        )
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise validation_error(e) from None


async def read_body(request: web.Request) -> bytes:
    """The request's body, read within the application's body deadline (`408 request_timeout`
    beyond: a client sending it a byte at a time holds a handler no longer than that)."""
    deadline_s = request.config_dict.get(BODY_TIMEOUT_KEY, BODY_TIMEOUT_S)
    try:
        async with asyncio.timeout(deadline_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {deadline_s:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("request body exceeds the size limit") from None
    except web.RequestPayloadError:  # e.g. a Content-Encoding the body does not decode with
        raise MalformedJson("request body could not be decoded") from None


async def read_json(request: web.Request) -> Any:
    return parse_json(await read_body(request))


async def read_model(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


def principal(request: web.Request) -> auth.Principal:
    p = request.get(PRINCIPAL)
    assert p is not None, "auth middleware runs before every non-public handler"
    return p


def route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def request_id(request: web.Request) -> str:
    return request.get(REQUEST_ID) or request_ids.new()


def request_lines(request: web.Request) -> logs.RequestLines:
    """This request's log lines: what is logged there is written with its `http_request` line."""
    # (A request's `get` of a missing key raises and catches a KeyError: the middleware sets the key.)
    try:
        return request[LOG_LINES]
    except KeyError:  # a handler run without the middleware (a unit test)
        lines = request[LOG_LINES] = logs.RequestLines()
        return lines


def annotate(request: web.Request, **fields: Any) -> None:
    """Fields for this request's log line (e.g. client_id, via)."""
    try:
        request[LOG_FIELDS].update(fields)
    except KeyError:  # a handler run without the middleware (a unit test)
        request[LOG_FIELDS] = dict(fields)


def stamp_problem(resp: web.StreamResponse, rid: str) -> str | None:
    """Add `request_id` to a problem+json body not yet sent; its `code`. (A problem answer is an
    error: a success is not looked into, which spares parsing its content type.)"""
    if resp.status < 400:
        return None
    if not isinstance(resp, web.Response) or resp.content_type != PROBLEM_TYPE or not isinstance(resp.body, bytes):
        return None
    try:
        body = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    body["request_id"] = rid
    resp.body = dumps(body)
    code = body.get("code")
    return code if isinstance(code, str) else None


def log_request(
    request: web.Request,
    status: int,
    code: str | None,
    duration_s: float,
    route: str | None = None,
    who: auth.Principal | None = None,
) -> None:
    """The request's `http_request` line (`who`: its authenticated caller, if any), written with the
    lines it logged before (`request_lines`)."""
    route = route or route_name(request)
    if route in PROBE_ROUTES:
        method = "debug"
    elif status >= 500:
        method = "error" if status == 500 else "warning"
    else:
        method = "info"
    lines = request.get(LOG_LINES) or logs.RequestLines()
    lines.log(
        log,
        method,
        "http_request",
        method=request.method,
        route=route,
        status=status,
        code=code,
        duration_ms=round(duration_s * 1000, 3),
        principal=who.name if who is not None else None,
        request_id=request.get(REQUEST_ID),
        **(request.get(LOG_FIELDS) or {}),
    )
    lines.flush()


def framework_problem(exc: web.HTTPException) -> web.Response:
    """aiohttp's own answers (no such route, method not taken) as problem+json; a 405 lists the
    methods the path takes in `Allow` (RFC 9110)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
    err = CroupierError(exc.reason, code=code)
    extra: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        extra[headers.ALLOW] = ", ".join(sorted(exc.allowed_methods))
    return web.Response(
        body=dumps({**problem(err), "status": exc.status, "title": exc.reason}),
        status=exc.status,
        content_type=PROBLEM_TYPE,
        headers=extra,
    )


async def answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer's `X-Request-Id`, then the service's own headers (ANSWER_HEADERS_KEY): one hook."""
    response.headers[request_ids.HEADER] = request_id(request)
    for add in request.app[ANSWER_HEADERS_KEY]:
        add(request, response)


@web.middleware
async def edge_of_app(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: request id, metrics, the request's log line, errors → problem+json, auth."""
    started = time.perf_counter()
    status, code = 500, None
    rid = request_ids.accept(request.headers.get(request_ids.HEADER))
    request[REQUEST_ID] = rid
    request[LOG_FIELDS] = {}
    request[LOG_LINES] = logs.RequestLines()
    who: auth.Principal | None = None
    bound = request_ids.bind(rid)
    try:
        try:
            match_handler = request.match_info.handler
            # aiohttp's 404/405 handlers are not ours: let them through to render below.
            if request.match_info.http_exception is None:
                header = request.headers.get(headers.AUTHORIZATION)
                if not getattr(match_handler, "croupier_public", False):
                    who = request[PRINCIPAL] = request.app[TOKENS_KEY].authenticate(header)
                auth.check(match_handler, who)
                if who is not None:
                    for check in request.app[CALLER_CHECKS_KEY]:
                        pending = check(request, who)
                        if pending is not None:
                            await pending
            resp = await handler(request)
        except CroupierError as exc:
            resp = problem_response(exc, request.headers)
        except web.HTTPRequestEntityTooLarge:
            resp = problem_response(PayloadTooLarge("request body too large"))
        except web.HTTPException as exc:
            resp = framework_problem(exc)
        except (asyncio.CancelledError, ConnectionResetError):
            code = "client_disconnected"  # the caller went away: logged so, counted as before
            raise
        except Exception:
            # A bug, not an operating error: logged with its traceback, answered without details.
            log.exception("unhandled error", route=route_name(request), method=request.method)
            resp = problem_response(CroupierError("an internal error occurred; it has been logged"))
        status = resp.status
        code = stamp_problem(resp, rid)
        return resp
    finally:
        if not request.get(RELAYED):  # else the process it was relayed to measured and logged it
            elapsed = time.perf_counter() - started
            if code is not None:
                request[ERROR_CODE] = code
            route = route_name(request)
            request.app[HTTP_METRICS_KEY].request_duration(route, request.method, status).observe(elapsed)
            log_request(request, 499 if code == "client_disconnected" else status, code, elapsed, route, who)
        request_ids.unbind(bound)


@auth.roles("metrics", "admin_read")
async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@auth.public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def make_app(
    *,
    tokens: auth.TokenStore,
    registry: CollectorRegistry,
    body_bytes_max: int,
    body_timeout_s: float = BODY_TIMEOUT_S,
    outer_middlewares: Sequence[Any] = (),
    caller_check: CallerCheck | None = None,
    probes: bool = True,
) -> web.Application:
    """An application with the shared middleware, `/healthz` and `/metrics` wired in; `outer_middlewares`
    (tracing) run around it; `caller_check` sees every authenticated request before its handler (its
    errors are answered as the handler's); `app[ANSWER_HEADERS_KEY]` takes the service's own headers.
    `probes=False` leaves `/healthz` and `/metrics` out (a relay serves another process's)."""
    app = web.Application(middlewares=[*outer_middlewares, edge_of_app], client_max_size=body_bytes_max)
    app[TOKENS_KEY] = tokens
    app[REGISTRY_KEY] = registry
    app[HTTP_METRICS_KEY] = HttpMetrics(registry)
    app[BODY_TIMEOUT_KEY] = body_timeout_s
    app[CALLER_CHECKS_KEY] = (caller_check,) if caller_check is not None else ()
    app[ANSWER_HEADERS_KEY] = []
    app.on_response_prepare.append(answer_headers)
    if probes:
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics_handler)
    return app
