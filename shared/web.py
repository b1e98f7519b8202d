"""aiohttp plumbing both services share: problem+json errors, auth, request metrics, JSON I/O.

Handlers parse (`read_model`), call one service method, and render (`json_response`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError

from shared import auth
from shared.errors import (
    BadRequest,
    CroupierError,
    MalformedJson,
    PayloadTooLarge,
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


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", headers=headers
    )


def problem_response(exc: CroupierError) -> web.Response:
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    return web.Response(
        body=dumps(problem(exc)),
        status=status_for(exc),
        content_type="application/problem+json",
        headers=headers,
    )


def validation_error(exc: ValidationError) -> BadRequest:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    return BadRequest(f"{field}: {msg}", field=field)


def parse_json(raw: bytes) -> Any:
    try:
        raw.decode("utf-8")
        return orjson.loads(raw)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as e:
        raise MalformedJson(f"request body is not valid UTF-8 JSON: {e}") from None


def validate(model: type[M], value: Any) -> M:
    if not isinstance(value, dict):
        raise BadRequest("body: a JSON object is required", field="body")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise validation_error(e) from None


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("request body exceeds the size limit") from None
    except web.RequestPayloadError:  # e.g. a Content-Encoding the body does not decode with
        raise MalformedJson("request body could not be decoded") from None
    return parse_json(raw)


async def read_model(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


def principal(request: web.Request) -> auth.Principal:
    p = request.get(PRINCIPAL)
    assert p is not None, "auth middleware runs before every non-public handler"
    return p


def route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def edge_of_app(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: metrics, errors → problem+json, auth."""
    started = time.perf_counter()
    status = 500
    try:
        try:
            match_handler = request.match_info.handler
            # aiohttp's 404/405 handlers are not ours: let them through to render below.
            if request.match_info.http_exception is None:
                header = request.headers.get("Authorization")
                if not getattr(match_handler, "croupier_public", False):
                    request[PRINCIPAL] = request.app[TOKENS_KEY].authenticate(header)
                auth.check(match_handler, request.get(PRINCIPAL))
            resp = await handler(request)
        except CroupierError as exc:
            resp = problem_response(exc)
        except web.HTTPRequestEntityTooLarge:
            resp = problem_response(PayloadTooLarge("request body too large"))
        except web.HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            err = CroupierError(exc.reason, code=code)
            resp = web.Response(
                body=dumps({**problem(err), "status": exc.status, "title": exc.reason}),
                status=exc.status,
                content_type="application/problem+json",
            )
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            # A bug, not an operating error: logged with its traceback, answered without details.
            log.exception("unhandled error", route=route_name(request), method=request.method)
            resp = problem_response(CroupierError("an internal error occurred; it has been logged"))
        status = resp.status
        return resp
    finally:
        request.app[HTTP_METRICS_KEY].request_duration_seconds.labels(
            route_name(request), request.method, str(status)
        ).observe(time.perf_counter() - started)


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
) -> web.Application:
    """An application with the shared middleware, `/healthz` and `/metrics` wired in."""
    app = web.Application(middlewares=[edge_of_app], client_max_size=body_bytes_max)
    app[TOKENS_KEY] = tokens
    app[REGISTRY_KEY] = registry
    app[HTTP_METRICS_KEY] = HttpMetrics(registry)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    return app
