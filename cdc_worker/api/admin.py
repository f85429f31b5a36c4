"""The API's admin endpoints: ask the worker for a resync, see how it goes.

Protected by a bearer token (``CDC_ADMIN_TOKEN``) compared in constant time; without a
configured token the routes do not exist at all (404).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request
from pydantic import BaseModel, Field

from cdc_worker.api.models import Problem
from cdc_worker.settings import Settings
from cdc_worker.store import keys
from cdc_worker.store.jobs import JOB_TTL_S, Job, new_job

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}}


class ResyncRequest(BaseModel):
    """Empty: a full resync. ``tickets`` or ``department``: a targeted repair."""

    tickets: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, max_length=10_000
    )
    department: Annotated[int, Field(ge=1, le=2**31)] | None = None


class JobView(BaseModel):
    """A resync job's state."""

    id: str
    kind: str
    state: str
    tickets_done: int
    tickets_total: int
    error: str = ""


def _require_token(expected: str):  # type: ignore[no-untyped-def]
    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        given = authorization.removeprefix("Bearer ").strip()
        if not given:
            raise HTTPException(401, "empty bearer token", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(403, "wrong token")

    return check


def add_admin_routes(app: FastAPI, settings: Settings) -> None:
    """Mount /admin when a token is configured."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not token:
        return
    router = APIRouter(prefix="/admin", dependencies=[Depends(_require_token(token))])

    @router.post("/resync", status_code=202, response_model=JobView, responses=UNAUTHORIZED)
    async def request_resync(body: ResyncRequest, request: Request) -> JobView:
        if body.tickets and body.department:
            raise HTTPException(422, "give tickets or a department, not both")
        if body.tickets:
            job = new_job("tickets", tuple(body.tickets))
        elif body.department:
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
