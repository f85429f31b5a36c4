"""The read API: FastAPI over Redis only (never MySQL), documents served as stored."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdc_worker.api.admin import add_admin_routes
from cdc_worker.api.board import add_board_routes
from cdc_worker.api.feed import add_feed_routes
from cdc_worker.api.limits import BodyLimit, HeaderLimits
from cdc_worker.api.metrics import UNCOUNTED_PATHS, ApiMetrics
from cdc_worker.api.models import Readiness, TicketBatch, TicketPage
from cdc_worker.api.pipelined_reads import PipelinedReader
from cdc_worker.api.redis_problems import RedisProblems
from cdc_worker.api.replicas import read_resolver, reads_go_to_replicas, replica_lag_s
from cdc_worker.api.tickets import add_ticket_routes
from cdc_worker.checkpoint import Checkpoint
from cdc_worker.observability.health import Verdict, WorkerView, verdict
from cdc_worker.settings import Settings
from cdc_worker.store import keys
from cdc_worker.store.connect import async_clients, close_client, sentinel_of

REDIS_TIMEOUT_S = 5
# /readyz and /metrics answer within this even when Redis is frozen (probe and scrape
# timeouts are a few seconds).
PROBE_TIMEOUT_S = 2.0


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
        primary, reads = _clients(settings, client)
        app.state.redis, app.state.reads = primary, reads
        resolver = read_resolver(settings, sentinel_of(primary))
        app.state.single_reads = PipelinedReader(url, REDIS_TIMEOUT_S, resolver)
        app.state.redis_problems = RedisProblems(url)
        await app.state.redis_problems.check(app.state.redis)
        yield
        await app.state.single_reads.close()
        if client is None:
            for opened in {id(primary): primary, id(reads): reads}.values():
                await close_client(opened)

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
    add_ticket_routes(app, settings)
    _add_operational_routes(app, settings, metrics)
    # Middleware added later wraps what came before: the body limit runs innermost, the
    # admin token guard around it, then the header limits, and the metrics see every answer.
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    add_admin_routes(app, settings)
    add_feed_routes(app, settings)
    metrics.event_streams.set_function(lambda: app.state.open_streams)  # read at each scrape
    metrics.event_streams_max.set(settings.api_max_streams)
    add_board_routes(app, settings)
    _instrument(app, metrics)
    _register_schemas(app, (TicketBatch, TicketPage))
    return app


def _clients(
    settings: Settings, client: aioredis.Redis | None
) -> tuple[aioredis.Redis, aioredis.Redis]:
    """(primary, replica-or-primary): the given client, else the settings' own."""
    if client is not None:
        return client, client
    return async_clients(settings, REDIS_TIMEOUT_S)


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


def _instrument(app: FastAPI, metrics: ApiMetrics) -> None:
    app.add_middleware(HeaderLimits)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        metrics.redis_errors.inc()
        request.app.state.redis_problems.report(exc)
        return JSONResponse({"detail": "read model unavailable"}, status_code=503)


def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


def _reads(request: Request) -> aioredis.Redis:
    """Where a replica-mode /readyz measures the lag: a replica, or the primary."""
    client: aioredis.Redis = request.app.state.reads
    return client


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
            source=result.source,
        )
        body.active_worker = result.active_worker
        if reads_go_to_replicas(settings):
            await _check_replica(request, body, settings.max_lag_s)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

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
    # On the shared pipelined connection: a busy pool must not read as "unreachable".
    single_reads: PipelinedReader = request.app.state.single_reads
    # Bounded, so a frozen Redis cannot hold the probe or the scrape past their own timeouts
    # (the gauges then vanish); bounded by Redis's silence, not by the wall clock, so a
    # flood that slows this event loop does not read as "Redis did not answer".
    try:
        checkpoint, heartbeat = await single_reads.call_within(
            PROBE_TIMEOUT_S, "MGET", keys.CHECKPOINT, keys.HEARTBEAT
        )
    except TimeoutError:
        metrics.redis_errors.inc()
        checkpoint = heartbeat = None
        result = Verdict(False, (f"redis did not answer within {PROBE_TIMEOUT_S:g} s",))
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


async def _check_replica(request: Request, body: Readiness, max_lag_s: float) -> None:
    """Add the replica's lag to a readiness verdict; too far behind is not ready."""
    try:
        heartbeat = await _redis(request).get(keys.HEARTBEAT)
        body.replica_lag_s = await replica_lag_s(_reads(request), heartbeat)
    except RedisError:
        body.ready, body.reasons = False, [*body.reasons, "replica unreachable"]
        return
    if body.replica_lag_s is not None and body.replica_lag_s > max_lag_s:
        body.ready = False
        body.reasons.append(f"replica {body.replica_lag_s:.1f} s behind the primary")
