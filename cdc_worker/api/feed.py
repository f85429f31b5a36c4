"""Live changes for frontends: ``GET /tickets/events`` (Server-Sent Events) and
``GET /tickets/changes`` (the same, polled as JSON pages). See docs/change-feed.md.

Each feed entry becomes one event per ticket: ``upsert`` (with the document as read when
sent), ``delete``, or, for a filtered view, ``remove`` when the ticket left the view (the
entry lists the filter indexes tickets left, so no per-connection state is needed); a
``reset`` tells the reader to reload. The last event of an entry carries ``id:`` = the
entry id, so ``Last-Event-ID`` resumes exactly after the last complete entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from cdc_worker.api.feed_hub import FeedHub, Item, Page, read_after, reset_item
from cdc_worker.settings import Settings
from cdc_worker.store.connect import async_follower
from cdc_worker.store.feed import parse_entry_id

JSON = "application/json"
CATCH_UP_COUNT = 200
Department = Annotated[int | None, Query(ge=1, le=2**31)]
Status = Annotated[int | None, Query(ge=1, le=2**31)]
Assignee = Annotated[int | None, Query(ge=0, le=2**31, description="0: unassigned tickets")]
EntryId = Annotated[
    str | None,
    Query(max_length=41, pattern=r"^[0-9]{1,20}(-[0-9]{1,20})?$", description="A feed entry id"),
]


@dataclass(frozen=True, slots=True)
class View:
    """The filters of a stream; all None: every ticket."""

    department_id: int | None = None
    status_id: int | None = None
    assignee_id: int | None = None

    def is_filtered(self) -> bool:
        """True when the view shows only some tickets."""
        return (self.department_id, self.status_id, self.assignee_id) != (None, None, None)

    def index_keys(self) -> list[tuple[str, int]]:
        """The filter indexes a ticket leaves when it leaves this view."""
        chosen = [("department", self.department_id), ("status", self.status_id)]
        chosen.append(("assignee", self.assignee_id))
        return [(name, value) for name, value in chosen if value is not None]

    def shows(self, facets: tuple[Any, Any, Any]) -> bool:
        """True when a document with these (department, status, assignee) is in the view."""
        department, status, assignee = facets
        return (
            self.department_id in (None, department)
            and self.status_id in (None, status)
            and (self.assignee_id is None or self.assignee_id == (assignee or 0))
        )


def view_query(
    department_id: Department = None, status_id: Status = None, assignee_id: Assignee = None
) -> View:
    """The view a feed route's query parameters ask for."""
    return View(department_id, status_id, assignee_id)


ViewQuery = Annotated[View, Depends(view_query)]
Event = tuple[str, int | None, bytes]  # event name, ticket id, data JSON


def events_of(item: Item, view: View) -> list[Event]:
    """The events one feed entry means for a view."""
    entry = item.entry
    if entry.is_reset:
        return [("reset", None, _data("reset", None, entry.position))]
    left: set[int] = set()
    for key in view.index_keys():
        left |= entry.left.get(key, frozenset())
    deleted = set(entry.deleted)
    found: list[Event] = []
    for ticket_id in sorted(set(entry.upserted) | deleted):
        doc = item.docs.get(ticket_id)
        if ticket_id in left:
            op = "delete" if ticket_id in deleted else "remove"
            found.append((op, ticket_id, _data(op, ticket_id, entry.position)))
        elif ticket_id in deleted:
            if not view.is_filtered():
                found.append(("delete", ticket_id, _data("delete", ticket_id, entry.position)))
        elif doc is not None and view.shows(doc.facets):
            data = _data("upsert", ticket_id, entry.position, doc.raw)
            found.append(("upsert", ticket_id, data))
    return found


def _data(op: str, ticket_id: int | None, position: str, document: bytes = b"null") -> bytes:
    head = orjson.dumps({"op": op, "ticket_id": ticket_id, "position": position})
    return head[:-1] + b',"document":' + document + b"}"


def sse_block(item: Item, view: View) -> bytes:
    """The SSE text of one entry; the last event carries the entry id (or, when the entry
    means nothing for the view, an event without data: it moves ``Last-Event-ID`` only)."""
    found = item.rendered.get(view)
    if found is None:
        found = item.rendered[view] = _render(item, view)
    return found


def _render(item: Item, view: View) -> bytes:
    events = events_of(item, view)
    parts = [b"event: %b\ndata: %b\n\n" % (name.encode(), data) for name, _, data in events]
    id_line = b"id: %b\n" % item.entry.entry_id.encode()
    if not parts:
        return id_line + b"\n"
    parts[-1] = id_line + parts[-1]
    return b"".join(parts)


def add_feed_routes(app: FastAPI, settings: Settings) -> None:
    """The feed's routes, and the hub's life with the app's."""
    app.state.open_streams = 0
    _wrap_lifespan(app, settings)
    routes_before = len(app.router.routes)

    @app.get(
        "/tickets/events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "An endless stream"},
            404: {"description": "The change feed is off (CDC_CHANGES=off)"},
            503: {"description": "Too many open streams (CDC_API_MAX_STREAMS)"},
        },
        summary="Server-Sent Events: every change to the tickets of a view",
    )
    async def ticket_events(
        request: Request,
        view: ViewQuery,
        after: EntryId = None,
        last_event_id: Annotated[str | None, Header(max_length=41)] = None,
    ) -> StreamingResponse:
        _feed_on(settings)
        start = _entry_id(after)
        if last_event_id is not None:
            start = _entry_id(last_event_id, ("header", "last-event-id"))
        if request.app.state.open_streams >= settings.api_max_streams:
            raise HTTPException(503, "too many open event streams")
        hub: FeedHub = request.app.state.feed_hub
        await hub.start()
        stream = _stream(request, hub, view, start or hub.last, settings.api_stream_heartbeat_s)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    @app.get(
        "/tickets/changes",
        response_class=Response,
        responses={
            404: {"description": "The change feed is off (CDC_CHANGES=off)"},
            410: {"description": "``after`` was trimmed away: reload, then poll from last_id"},
        },
        summary="The changes after a feed entry, as a JSON page",
    )
    async def ticket_changes(
        request: Request,
        view: ViewQuery,
        after: EntryId = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        _feed_on(settings)
        client: aioredis.Redis = request.app.state.redis
        start = _entry_id(after) or "0-0"
        page = await read_after(client, start, limit)
        return _page(page, view, start)

    # Ahead of ``/tickets/{ticket_id}``, which would take "events" for a ticket id.
    added = app.router.routes[routes_before:]
    del app.router.routes[routes_before:]
    app.router.routes[0:0] = added


def _feed_on(settings: Settings) -> None:
    if not settings.changes:
        raise HTTPException(404, "the change feed is off (CDC_CHANGES=off)")


def _entry_id(text: str | None, where: tuple[str, str] = ("query", "after")) -> str | None:
    """The id normalized; a 422 shaped like FastAPI's own when it is out of range."""
    if text is None:
        return None
    try:
        ms, seq = parse_entry_id(text)
    except ValueError:
        error = {"type": "value_error", "loc": where, "msg": "not a feed entry id", "input": text}
        raise RequestValidationError([error]) from None
    return f"{ms}-{seq}"


def _page(page: Page, view: View, after: str) -> Response:
    """The events of the entries read, up to the first reset (the reader reloads there)."""
    if page.trimmed_to is not None:
        body = orjson.dumps({"detail": "trimmed away: reload", "last_id": page.trimmed_to})
        return Response(body, status_code=410, media_type=JSON)
    changes: list[bytes] = []
    last = after
    for item in page.items:
        entry_id = orjson.dumps(item.entry.entry_id)
        changes += [data[:-1] + b',"id":' + entry_id + b"}" for _, _, data in events_of(item, view)]
        last = item.entry.entry_id
        if item.entry.is_reset:
            break
    body = b'{"changes":[' + b",".join(changes) + b'],"last_id":' + orjson.dumps(last) + b"}"
    return Response(body, media_type=JSON)


async def _stream(
    request: Request, hub: FeedHub, view: View, start: str, heartbeat_s: float
) -> AsyncIterator[bytes]:
    request.app.state.open_streams += 1
    try:
        yield b"retry: 1000\n\n"
        position, key = start, parse_entry_id(start)
        while True:
            if hub.covers(key):
                items = await hub.wait(key, heartbeat_s)
            else:  # behind the hub's window: catch up from Redis
                page = await read_after(request.app.state.redis, position, CATCH_UP_COUNT)
                items = page.items or [reset_item(page.trimmed_to or hub.last)]
            if not items:
                yield b": keep-alive\n\n"
            for item in items:
                yield sse_block(item, view)
                position, key = item.entry.entry_id, item.key
    finally:
        request.app.state.open_streams -= 1


def _wrap_lifespan(app: FastAPI, settings: Settings) -> None:
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            hub = FeedHub(lambda: async_follower(settings))
            app.state.feed_hub = hub
            try:
                yield state
            finally:
                await hub.close()

    app.router.lifespan_context = lifespan
