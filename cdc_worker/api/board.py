"""``GET /board?department_id=N``: a live board of one department's tickets.

One self-contained page (plain JavaScript, nothing loaded from elsewhere, see
``static/board.html``): it lists the department's tickets from ``/tickets``, then follows
``/tickets/events`` from the feed entry read before the listing, so no change falls between.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from cdc_worker.api.feed_hub import newest_id
from cdc_worker.settings import Settings

# Inline script and style only; every request goes back to this API.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'"
)


@cache
def _template() -> str:
    return resources.files("cdc_worker.api").joinpath("static/board.html").read_text("utf-8")


def render_board(department_id: int, after: str, page_limit: int) -> str:
    """The page for one department, starting after feed entry ``after``. Only integers and
    an entry id (digits and a dash) go into it."""
    return (
        _template()
        .replace("{{DEPARTMENT_ID}}", str(int(department_id)))
        .replace("{{AFTER}}", after if all(c.isdigit() or c == "-" for c in after) else "0-0")
        .replace("{{PAGE_LIMIT}}", str(int(page_limit)))
    )


def add_board_routes(app: FastAPI, settings: Settings) -> None:
    """The board's route."""

    @app.get("/board", response_class=HTMLResponse, summary="A live board of one department")
    async def board(
        request: Request, department_id: Annotated[int, Query(ge=1, le=2**31)]
    ) -> HTMLResponse:
        if not settings.changes:
            raise HTTPException(404, "the change feed is off (CDC_CHANGES=off)")
        client: aioredis.Redis = request.app.state.redis
        after = await newest_id(client)  # before the page lists: nothing falls between
        page = render_board(department_id, after, settings.api_max_limit)
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        return HTMLResponse(page, headers=headers)
