"""Serving the API with uvicorn, with bounds on what idle or slow clients may hold.

uvicorn closes a keep-alive connection idle for ``timeout_keep_alive``, but gives a new
connection (or one whose client has sent part of a request head) as long as it likes: 1,000
such connections used to fill ``limit_concurrency`` (then 1,000) and every other client got
503. Here each request head must arrive within ``CDC_API_HEADER_TIMEOUT_S`` of the
connection opening or of the previous answer, and the connection limit is a setting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from cdc_worker.settings import Settings

MAX_HEAD_BYTES = 16_384


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not send a request head in time."""

    head_timeout_s = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self._request_in_flight():
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._request_in_flight():
            self._arm_head_deadline()

    def _request_in_flight(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and not self._request_in_flight():
            self.transport.close()


def protocol_for(settings: Settings) -> type[HeadDeadlineProtocol]:
    """The protocol class with this configuration's head timeout."""
    return type(
        "ConfiguredHeadDeadlineProtocol",
        (HeadDeadlineProtocol,),
        {"head_timeout_s": settings.api_header_timeout_s},
    )


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "log_config": None,
        "http": protocol_for(settings),
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "limit_concurrency": settings.api_max_connections,
        "timeout_keep_alive": settings.api_keep_alive_s,
        "backlog": 2048,
        "timeout_graceful_shutdown": 5,  # open event streams end then; browsers reconnect
    }
    uvicorn.run(app, **options)
