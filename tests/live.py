"""The read API served by uvicorn on a free port, and a Server-Sent Events client for tests."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import uvicorn

from cdc_worker.api.app import create_app
from cdc_worker.settings import Settings

WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served_api(settings: Settings) -> Iterator[str]:
    """The API on a free port, in this process; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Event:
    """One dispatched SSE event (``id`` is the last event id in force, as a browser keeps)."""

    name: str
    data: dict[str, Any] | None
    id: str | None
    comment: bool = False


@dataclass
class SseClient:
    """Reads an event stream on a thread; events and comments land on a queue."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    status: int | None = None
    last_id: str | None = None

    def __post_init__(self) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self.opened = threading.Event()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="sse", daemon=True)
        self.thread.start()
        assert self.opened.wait(WAIT_S), "the event stream did not open"

    def _run(self) -> None:
        try:
            with self.client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self.opened.set()
                if response.status_code == 200:
                    self._parse(response.iter_lines())
        except httpx.HTTPError:
            if not self.closing:
                raise
        finally:
            self.opened.set()

    def _parse(self, lines: Iterator[str]) -> None:
        name, data = "message", ""
        for line in lines:
            if line.startswith(":"):
                self.events.put(Event("", None, self.last_id, comment=True))
            elif line.startswith("id:"):
                self.last_id = line[3:].strip()
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                self.events.put(Event(name, orjson.loads(data), self.last_id))
                name, data = "message", ""
            elif line == "":
                name = "message"

    def next(self, predicate: Callable[[Event], bool], timeout_s: float = WAIT_S) -> Event:
        """The next event that satisfies ``predicate`` (others are dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no such event in time"
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if predicate(event):
                return event

    def drain(self, quiet_s: float, limit_s: float = WAIT_S) -> list[Event]:
        """Every event (comments left out) until none came for ``quiet_s``."""
        found: list[Event] = []
        quiet_until = time.monotonic() + quiet_s
        deadline = time.monotonic() + limit_s
        while (now := time.monotonic()) < quiet_until:
            assert now < deadline, "the stream never went quiet"
            try:
                event = self.events.get(timeout=quiet_until - now)
            except queue.Empty:
                break
            if not event.comment:
                found.append(event)
                quiet_until = time.monotonic() + quiet_s
        return found

    def close(self) -> None:
        self.closing = True
        self.client.close()
        self.thread.join(10)
