"""The read API: FastAPI over Redis only (never MySQL), documents served as stored."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdc_worker.api.admin import add_admin_routes
from cdc_worker.api.metrics import UNCOUNTED_PATHS, ApiMetrics
from cdc_worker.api.models import Problem, Readiness, TicketBatch, TicketDocument, TicketPage
from cdc_worker.api.pipelined_reads import PipelinedReader
from cdc_worker.api.queries import (
    LIST_SCRIPT,
    MAX_TICKET_ID,
    BadCursor,
    Filter,
    decode_cursor,
    list_arguments,
    page_from_reply,
)
from cdc_worker.api.redis_problems import RedisProblems
from cdc_worker.checkpoint import Checkpoint
from cdc_worker.observability.health import Verdict, WorkerView, verdict
from cdc_worker.settings import Settings
from cdc_worker.store import keys

JSON = "application/json"
TicketId = Annotated[int, Path(ge=1, le=MAX_TICKET_ID, description="Ticket id", examples=[1])]
REDIS_TIMEOUT_S = 5
NOT_READY = {"model": Problem, "description": "No read model yet, or Redis unreachable"}


NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(settings: Settings, client: aioredis.Redis | None = None) -> FastAPI:
    """The API, with its own metrics; ``client`` defaults to a pooled one from the settings."""
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.redis_url.get_secret_value()
        app.state.redis = client or aioredis.Redis.from_url(
            url, max_connections=64, socket_timeout=REDIS_TIMEOUT_S
        )
        app.state.single_reads = PipelinedReader(url, REDIS_TIMEOUT_S)
        app.state.redis_problems = RedisProblems(url)
        await app.state.redis_problems.check(app.state.redis)
        yield
        await app.state.single_reads.close()
        if client is None:
            await app.state.redis.aclose()

    app = FastAPI(
        title="ticket-sync read API",
        version="1",
        description="Ticket documents from the Redis read model kept by the CDC worker.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry hooks run on every request; the API exports its
        # own Prometheus metrics, so they only cost time (about 9% of a single read).
        telemetry=NO_TELEMETRY,
    )
    app.state.metrics = metrics
    _instrument(app, metrics)
    _add_ticket_routes(app, settings)
    _add_operational_routes(app, settings, metrics)
    add_admin_routes(app, settings)
    _register_schemas(app, (TicketBatch, TicketPage))
    return app


def _register_schemas(app: FastAPI, models: tuple[type[Any], ...]) -> None:
    """Routes answer raw bytes, so FastAPI does not see these models; publish them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class MetricsMiddleware:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware costs more than a Redis read)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route=route, code=str(status)).inc()


class HeaderLimits:
    """Refuse header floods with 431 before any work: the server's parser lets a single
    100 KB header through when it arrives in one read."""

    max_headers = 100
    max_header_bytes = 16_384

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers", []) if scope["type"] == "http" else []
        size = sum(len(name) + len(value) for name, value in headers)
        if len(headers) > self.max_headers or size > self.max_header_bytes:
            body = b'{"detail":"request headers too large"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _instrument(app: FastAPI, metrics: ApiMetrics) -> None:
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HeaderLimits)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        metrics.redis_errors.inc()
        request.app.state.redis_problems.report(exc)
        return JSONResponse({"detail": "read model unavailable"}, status_code=503)


def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


def _add_ticket_routes(app: FastAPI, settings: Settings) -> None:
    @app.get(
        "/tickets/{ticket_id}",
        response_class=Response,
        responses={
            200: {"model": TicketDocument, "description": "The document as stored"},
            404: {"model": Problem, "description": "No such ticket (or soft-deleted)"},
            503: NOT_READY,
        },
        summary="One ticket's document",
    )
    async def get_ticket(ticket_id: TicketId, request: Request) -> Response:
        single_reads: PipelinedReader = request.app.state.single_reads
        raw = await single_reads.hget(keys.DOCUMENTS, str(ticket_id))
        if raw is None:
            raise HTTPException(404, f"ticket {ticket_id} not found")
        return Response(raw, media_type=JSON)

    @app.get(
        "/tickets",
        response_class=Response,
        responses={
            200: {
                "description": "With ids: TicketBatch (order as asked). Else: TicketPage.",
                "content": {JSON: {"schema": {"anyOf": [_ref(TicketBatch), _ref(TicketPage)]}}},
            },
            422: {"model": Problem, "description": "Malformed ids, filters or cursor"},
            503: NOT_READY,
        },
        summary="Many tickets by id, or a filtered, paginated listing",
    )
    async def list_tickets(
        request: Request,
        ids: Annotated[
            str | None,
            Query(
                max_length=2100,
                pattern=r"^[0-9]{1,19}(,[0-9]{1,19})*$",
                description="Comma-separated ids",
                examples=["1,2,3"],
            ),
        ] = None,
        status_id: Annotated[int | None, Query(ge=1, le=2**31)] = None,
        department_id: Annotated[int | None, Query(ge=1, le=2**31)] = None,
        assignee_id: Annotated[
            int | None, Query(ge=0, le=2**31, description="0: unassigned tickets")
        ] = None,
        requester_email: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
        tag: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
        limit: Annotated[int, Query(ge=1, le=settings.api_max_limit)] = 50,
        cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> Response:
        filters = _filters(status_id, department_id, assignee_id, requester_email, tag)
        if ids is not None:
            if filters or cursor:
                raise HTTPException(422, "ids cannot be combined with filters or a cursor")
            return await _batch(_redis(request), _parse_ids(ids, settings.api_max_ids))
        return await _page(_redis(request), filters, limit, cursor)


def _ref(model: type[Any]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _parse_ids(raw: str, max_ids: int) -> list[int]:
    parts = raw.split(",")
    if len(parts) > max_ids:
        raise HTTPException(422, f"at most {max_ids} ids per call")
    parsed = []
    for part in parts:
        text = part.strip()
        if not text.isdigit() or len(text) > 19 or not 1 <= int(text) <= MAX_TICKET_ID:
            raise HTTPException(422, "ids must be positive integers, comma-separated")
        parsed.append(int(text))
    return parsed


def _filters(
    status_id: int | None,
    department_id: int | None,
    assignee_id: int | None,
    requester_email: str | None,
    tag: str | None,
) -> list[Filter]:
    chosen = [
        Filter("status", str(status_id)) if status_id is not None else None,
        Filter("department", str(department_id)) if department_id is not None else None,
        Filter("assignee", str(assignee_id)) if assignee_id is not None else None,
        Filter("requester", requester_email, "user-email") if requester_email else None,
        Filter("tag", tag, "tag-name") if tag else None,
    ]
    return [f for f in chosen if f is not None]


async def _batch(client: aioredis.Redis, ids: list[int]) -> Response:
    found = await client.hmget(keys.DOCUMENTS, [str(i) for i in ids])
    docs = [doc for doc in found if isinstance(doc, bytes)]
    missing = [i for i, doc in zip(ids, found, strict=True) if doc is None]
    body = b'{"tickets":[' + b",".join(docs) + b'],"missing":' + orjson.dumps(missing) + b"}"
    return Response(body, media_type=JSON)


async def _page(
    client: aioredis.Redis, filters: list[Filter], limit: int, cursor: str | None
) -> Response:
    try:
        after = decode_cursor(cursor) if cursor else 0
    except BadCursor as exc:
        raise HTTPException(422, str(exc)) from None
    reply = await client.eval(
        LIST_SCRIPT, 2, keys.CHECKPOINT, keys.DOCUMENTS, *list_arguments(after, limit, filters)
    )
    page = page_from_reply(reply)
    if page is None:
        raise HTTPException(503, "no read model yet")
    body = b'{"tickets":[' + b",".join(page.documents) + b'],"next_cursor":'
    return Response(body + orjson.dumps(page.next_cursor) + b"}", media_type=JSON)


def _add_operational_routes(app: FastAPI, settings: Settings, metrics: ApiMetrics) -> None:
    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready, with the reasons"}},
        summary="Redis reachable, read model present, worker alive and caught up",
    )
    async def readyz(request: Request) -> JSONResponse:
        result = await _readiness(request, settings, metrics)
        body = Readiness(
            ready=result.ready,
            reasons=list(result.reasons),
            lag_s=result.lag_s,
            position=result.position,
            gtid=result.gtid,
        )
        return JSONResponse(body.model_dump(), status_code=200 if result.ready else 503)

    view = WorkerView()

    @app.get("/metrics", response_class=Response, include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        result = await _readiness(request, settings, metrics, view)
        metrics.ready.set(1 if result.ready else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _readiness(
    request: Request, settings: Settings, metrics: ApiMetrics, view: WorkerView | None = None
) -> Verdict:
    """The readiness verdict from Redis; with ``view``, the worker gauges are updated too."""
    try:
        checkpoint, heartbeat = await _redis(request).mget(keys.CHECKPOINT, keys.HEARTBEAT)
    except RedisError as exc:
        metrics.redis_errors.inc()
        checkpoint = heartbeat = None
        result = Verdict(False, (request.app.state.redis_problems.report(exc),))
    else:
        now_s, max_age_s = time.time(), settings.heartbeat_max_age_s
        result = verdict(checkpoint, heartbeat, now_s, settings.max_lag_s, max_age_s)
    if view is not None:
        age_s = view.heartbeat_age_s(heartbeat, time.time())
        committed_at_s = Checkpoint.decode(checkpoint).committed_at_s if checkpoint else None
        behind_s = view.source_behind_s(committed_at_s, age_s, settings.heartbeat_max_age_s)
        metrics.heartbeat_age.set(age_s)
        metrics.source_behind.set(behind_s)
    return result
