"""The API's admin endpoints: ask the worker for a resync, see how it goes.

Protected by a bearer token (``CDC_ADMIN_TOKEN``) compared in constant time; without a
configured token the routes do not exist at all (404).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from starlette.types import Scope

from cdc_worker.api.limits import PathGuard, header
from cdc_worker.api.models import Problem
from cdc_worker.settings import Settings
from cdc_worker.store import keys
from cdc_worker.store.jobs import JOB_TTL_S, Job, new_job

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}}
MAX_RESYNC_TICKETS = 10_000


class ResyncRequest(BaseModel):
    """Exactly one of: ``tickets`` (repair these), ``department`` (repair its tickets) or
    ``full: true`` (rebuild the whole read model). Anything else is a 422."""

    model_config = ConfigDict(extra="forbid")

    tickets: list[Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]] | None = Field(
        default=None, min_length=1, max_length=MAX_RESYNC_TICKETS
    )
    department: Annotated[StrictInt, Field(ge=1, le=2**31)] | None = None
    full: Literal[True] | None = Field(
        default=None, description="true: a full resync (the only way to ask for one)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ResyncRequest:
        given = [self.tickets, self.department, self.full]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of tickets, department or full: true")
        return self


class JobView(BaseModel):
    """A resync job's state."""

    id: str
    kind: str
    state: str
    tickets_done: int
    tickets_total: int
    error: str = ""


def token_problem(authorization: str | None, expected: str) -> tuple[int, str] | None:
    """None when ``authorization`` carries the bearer token ``expected`` (the scheme in any
    case, RFC 9110), else the status and reason to answer."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return 401, "missing bearer token"
    if not given.strip():
        return 401, "empty bearer token"
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return 403, "wrong token"
    return None


def _guard(expected: str):  # type: ignore[no-untyped-def]
    def check(scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        problem = token_problem(header(scope, b"authorization"), expected)
        if problem is None:
            return None
        return problem[0], problem[1], {"WWW-Authenticate": "Bearer"} if problem[0] == 401 else {}

    return check


def _require_token(expected: str):  # type: ignore[no-untyped-def]
    """The same check as a dependency: it documents the header in the OpenAPI schema."""

    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        problem = token_problem(authorization, expected)
        if problem is not None:
            raise HTTPException(problem[0], problem[1], {"WWW-Authenticate": "Bearer"})

    return check


def add_admin_routes(app: FastAPI, settings: Settings) -> None:
    """Mount /admin when a token is configured."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not token:
        return
    # The guard answers from the request head, before FastAPI reads (and parses) the body.
    app.add_middleware(PathGuard, prefix="/admin", check=_guard(token))
    router = APIRouter(prefix="/admin", dependencies=[Depends(_require_token(token))])

    @router.post("/resync", status_code=202, response_model=JobView, responses=UNAUTHORIZED)
    async def request_resync(body: ResyncRequest, request: Request) -> JobView:
        if body.tickets:
            job = new_job("tickets", tuple(body.tickets))
        elif body.department is not None:
            job = new_job("department", (body.department,))
        else:
            job = new_job("full")
        client: aioredis.Redis = request.app.state.redis
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(keys.resync_job(job.id), job.encode(), ex=JOB_TTL_S)
            pipe.rpush(keys.RESYNC_QUEUE, job.id)
            await pipe.execute()
        return _view(job)

    @router.get(
        "/resync/{job_id}",
        response_model=JobView,
        responses={**UNAUTHORIZED, 404: {"model": Problem}},
    )
    async def resync_state(
        job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")], request: Request
    ) -> JobView:
        raw = await request.app.state.redis.get(keys.resync_job(job_id))
        if raw is None:
            raise HTTPException(404, f"no resync job {job_id}")
        return _view(Job.decode(raw))

    app.include_router(router)


def _view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        state=job.state,
        tickets_done=job.tickets_done,
        tickets_total=job.tickets_total,
        error=job.error,
    )
