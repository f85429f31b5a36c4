"""Plain ASGI guards that refuse hostile requests before any route does work.

They answer from the request head alone: the header block's size, the admin token, the
declared body length; a body that turns out longer than declared (or chunked) is cut off as
it arrives. Nothing here buffers a body.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def send_problem(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """A JSON ``{"detail": ...}`` answer, sent straight on the ASGI channel."""
    body = orjson.dumps({"detail": detail})
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    """The last value of a request header, or None."""
    found = None
    for key, value in scope.get("headers", []):
        if key == name:
            found = value.decode("latin-1")
    return found


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
            await send_problem(send, 431, "request headers too large")
            return
        await self.app(scope, receive, send)


class PathGuard:
    """Answers a problem for requests under ``prefix`` that ``check`` refuses from their
    head (say, a missing token), before the route reads their body."""

    def __init__(
        self,
        app: ASGIApp,
        prefix: str,
        check: Callable[[Scope], tuple[int, str, dict[str, str]] | None],
    ) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            problem = self.check(scope)
            if problem is not None:
                status, detail, headers = problem
                await send_problem(send, status, detail, headers)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over ``max_bytes``: at once when Content-Length says so, else as soon
    as the bytes received pass it (the rest is never read: the server closes the
    connection after the answer)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await send_problem(send, 413, f"request body over {self.max_bytes} bytes")
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI passes an HTTPException raised while it reads the body through.
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)
