"""The ticket routes: one document, many by id, or a filtered listing.

Every id (path, ``ids``, filters) is ASCII digits only: no sign, separator, space or decimal
point. A query parameter given twice is refused: which value would win is not obvious.
Every 422 has the same shape, FastAPI's list of validation errors.
"""

from collections import Counter
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator

from cdc_worker.api.models import Problem, TicketBatch, TicketDocument, TicketPage
from cdc_worker.api.pipelined_reads import PipelinedReader
from cdc_worker.api.queries import (
    BATCH_SCRIPT,
    LIST_SCRIPT,
    MAX_TICKET_ID,
    MISS_SCRIPT,
    BadCursor,
    Filter,
    NoReadModel,
    decode_cursor,
    list_arguments,
    page_from_reply,
)
from cdc_worker.settings import Settings
from cdc_worker.store import keys
from projections.collation import fold

JSON = "application/json"
NOT_READY = {
    "model": Problem,
    "description": "No read model yet (or being rebuilt), or Redis unreachable",
}
MAX_REF_ID = 2**31


def _ascii_digits(value: object) -> object:
    """Before int parsing: pydantic alone accepts '+1', ' 1', '1_000' and '1.0'."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise ValueError("must be ASCII digits only (no sign, space, separator or point)")
    return value


Digits = BeforeValidator(_ascii_digits)
TicketId = Annotated[
    int, Path(ge=1, le=MAX_TICKET_ID, description="Ticket id", examples=[1]), Digits
]
RefId = Annotated[int | None, Query(ge=1, le=MAX_REF_ID), Digits]


def invalid(where: str, name: str, message: str, given: object = None) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own (a list of errors)."""
    error = {"type": "value_error", "loc": (where, name), "msg": message, "input": given}
    return RequestValidationError([error])


def add_ticket_routes(app: FastAPI, settings: Settings) -> None:
    """GET /tickets/{id} and GET /tickets."""
    max_bytes = settings.api_max_response_bytes

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
            present = await single_reads.call(
                "EVAL", MISS_SCRIPT, 2, keys.CHECKPOINT, keys.DOCUMENTS, f"{keys.PREFIX}:g"
            )
            if not present:
                raise HTTPException(503, "no read model yet: the worker is building it")
            raise HTTPException(404, f"ticket {ticket_id} not found")
        return Response(raw, media_type=JSON)

    max_ids = settings.api_max_ids

    @app.get(
        "/tickets",
        response_class=Response,
        responses={
            200: {
                "description": "With ids: TicketBatch (order as asked, repeated ids once). "
                "Else: TicketPage. A page may hold fewer tickets than `limit`, even none, "
                "while `next_cursor` is not null: each call visits at most "
                f"{settings.api_list_scan_budget} index entries (CDC_API_LIST_SCAN_BUDGET) "
                f"and returns at most {max_bytes} bytes of documents "
                "(CDC_API_MAX_RESPONSE_BYTES); follow the cursor until it is null.",
                "content": {JSON: {"schema": {"anyOf": [_ref(TicketBatch), _ref(TicketPage)]}}},
            },
            413: {
                "model": Problem,
                "description": f"The documents asked by `ids` weigh more than {max_bytes} "
                "bytes (CDC_API_MAX_RESPONSE_BYTES): ask for fewer per call",
            },
            503: NOT_READY,
        },
        summary="Many tickets by id, or a filtered, paginated listing",
    )
    async def list_tickets(
        request: Request,
        ids: Annotated[
            str | None,
            Query(
                max_length=20 * max_ids - 1,
                pattern=r"^[0-9]{1,19}(,[0-9]{1,19})*$",
                description=f"Comma-separated ids, at most {max_ids} (CDC_API_MAX_IDS); "
                "an id asked twice comes back once",
                examples=["1,2,3"],
            ),
        ] = None,
        status_id: RefId = None,
        department_id: RefId = None,
        assignee_id: Annotated[
            int | None,
            Query(ge=0, le=MAX_REF_ID, description="0: unassigned tickets"),
            Digits,
        ] = None,
        requester_email: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=255,
                description="Compared as MySQL's "
                "utf8mb4_unicode_ci does: case and accents do not matter",
            ),
        ] = None,
        tag: Annotated[
            str | None,
            Query(min_length=1, max_length=50, description="Compared as requester_email is"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=settings.api_max_limit), Digits] = 50,
        cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> Response:
        _refuse_repeats(request)
        filters = _filters(status_id, department_id, assignee_id, requester_email, tag)
        # On the shared pipelined connection, like single reads: under load requests queue
        # there (bounded by its timeout) instead of waiting for a pooled connection, which a
        # lagging event loop holds for the whole round trip (measured: 500 clients on a
        # loaded 2-core machine, 64 pooled connections, about 4% 503s after a 5 s wait).
        client: PipelinedReader = request.app.state.single_reads
        if ids is not None:
            if filters or cursor:
                raise invalid("query", "ids", "ids cannot be combined with filters or a cursor")
            wanted = _parse_ids(ids, max_ids)
            return await _batch(client, wanted, max_bytes)
        after = _after(cursor)
        arguments = list_arguments(after, limit, filters, settings.api_list_scan_budget, max_bytes)
        return await _page(client, arguments)


def _ref(model: type[Any]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _refuse_repeats(request: Request) -> None:
    counts = Counter(name for name, _ in request.query_params.multi_items())
    for name, count in counts.items():
        if count > 1:
            raise invalid("query", name, "given more than once: give each parameter once")


def _parse_ids(raw: str, max_ids: int) -> list[int]:
    """The ids asked, each once, in the order first asked."""
    parsed = list(dict.fromkeys(int(part) for part in raw.split(",")))
    if len(parsed) > max_ids:
        raise invalid("query", "ids", f"at most {max_ids} ids per call", len(parsed))
    if not all(1 <= i <= MAX_TICKET_ID for i in parsed):
        raise invalid("query", "ids", f"ids run from 1 to {MAX_TICKET_ID}")
    return parsed


def _after(cursor: str | None) -> int:
    try:
        return decode_cursor(cursor) if cursor else 0
    except BadCursor as exc:
        raise invalid("query", "cursor", str(exc)) from None


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
        Filter("requester", fold(requester_email), "user-email") if requester_email else None,
        Filter("tag", fold(tag), "tag-name") if tag else None,
    ]
    return [f for f in chosen if f is not None]


async def _batch(client: PipelinedReader, ids: list[int], max_bytes: int) -> Response:
    found = await client.call(
        "EVAL", BATCH_SCRIPT, 2, keys.CHECKPOINT, keys.DOCUMENTS, max_bytes, *ids
    )
    if found == -1:
        raise HTTPException(503, "no read model yet: the worker is building it")
    if isinstance(found, int):
        raise HTTPException(
            413, f"the documents asked weigh {found} bytes, over {max_bytes}: ask for fewer ids"
        )
    docs = [doc for doc in found if isinstance(doc, bytes)]
    missing = [i for i, doc in zip(ids, found, strict=True) if doc is None]
    body = b'{"tickets":[' + b",".join(docs) + b'],"missing":' + orjson.dumps(missing) + b"}"
    return Response(body, media_type=JSON)


async def _page(client: PipelinedReader, arguments: list[str | int]) -> Response:
    reply = await client.call("EVAL", LIST_SCRIPT, 2, keys.CHECKPOINT, keys.DOCUMENTS, *arguments)
    try:
        page = page_from_reply(reply)
    except NoReadModel as exc:
        raise HTTPException(503, str(exc)) from None
    body = b'{"tickets":[' + b",".join(page.documents) + b'],"next_cursor":'
    return Response(body + orjson.dumps(page.next_cursor) + b"}", media_type=JSON)
