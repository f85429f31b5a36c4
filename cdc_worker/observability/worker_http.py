"""The worker's own small HTTP endpoint: /metrics for Prometheus, /healthz for liveness.

It runs on threads of its own, never the loop's, so /healthz answers while the loop is stuck.
Bounded whatever clients do: one thread accepts connections and parks them until they send
something (at most ``MAX_PARKED_CONNECTIONS``, the oldest closed first when more arrive, each
closed after ``IDLE_TIMEOUT_S`` of silence); ``HANDLER_THREADS`` threads answer the ones that
did send, each request closed after ``REQUEST_DEADLINE_S`` whatever pace its client keeps.
Idle or slow connections therefore hold no thread, and a scrape gets through while hundreds
are held open. Errors (a scraper hanging up mid-reply) go to the structured log as one line,
never as a traceback on stderr.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HANDLER_THREADS = 4
MAX_PARKED_CONNECTIONS = 256
READY_QUEUE_MAX = MAX_PARKED_CONNECTIONS
IDLE_TIMEOUT_S = 5.0
REQUEST_DEADLINE_S = 5.0
TICK_S = 0.25


class BoundedHTTPServer(HTTPServer):
    """An HTTP server with one accepting thread, a fixed pool of handlers, and deadlines."""

    request_queue_size = 128  # the kernel's listen backlog

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.log: Any = structlog.get_logger("cdc_worker.http")
        self.parked: OrderedDict[socket.socket, float] = OrderedDict()  # -> since (monotonic)
        self.ready: queue.Queue[socket.socket | None] = queue.Queue(READY_QUEUE_MAX)
        self.deadlines: dict[socket.socket, float] = {}  # requests being answered
        self.dropped = 0
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, name="worker-http")]
        self._threads += [
            threading.Thread(target=self._answer_loop, name=f"worker-http-{n}")
            for n in range(HANDLER_THREADS)
        ]

    def start(self) -> None:
        """Start the accepting thread and the handlers (daemons)."""
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def shutdown(self) -> None:
        """Stop accepting and answering; returns once the threads are gone."""
        self._stopping.set()
        for _ in range(HANDLER_THREADS):
            with contextlib.suppress(queue.Full):
                self.ready.put(None, timeout=1)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(REQUEST_DEADLINE_S + 1)

    def server_close(self) -> None:
        """Close the listening socket and every parked connection."""
        for connection in list(self.parked):
            self._close(connection)
        super().server_close()

    def _accept_loop(self) -> None:
        self._selector.register(self.socket, selectors.EVENT_READ)
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:  # never let one connection's trouble stop the server
                self.handle_error(None, None)
        self._selector.close()

    def _turn(self) -> None:
        for key, _ in self._selector.select(TICK_S):
            if key.fileobj is self.socket:
                self._accept()
            elif key.fileobj in self.parked:  # not closed by an accept earlier in this turn
                self._hand_over(key.fileobj)  # type: ignore[arg-type]
        self._expire(time.monotonic())

    def _accept(self) -> None:
        try:
            connection, _ = self.socket.accept()
        except OSError:
            return
        if len(self.parked) >= MAX_PARKED_CONNECTIONS:  # the oldest silent one makes room
            self._close(next(iter(self.parked)))
            self.dropped += 1
        self.parked[connection] = time.monotonic()
        self._selector.register(connection, selectors.EVENT_READ)

    def _hand_over(self, connection: socket.socket) -> None:
        if not _has_data(connection):  # the client hung up: nothing to answer
            self._close(connection)
            return
        self._selector.unregister(connection)
        self.parked.pop(connection, None)
        try:
            self.ready.put_nowait(connection)
        except queue.Full:
            self.dropped += 1
            self.shutdown_request(connection)

    def _expire(self, now: float) -> None:
        while self.parked:
            connection, since = next(iter(self.parked.items()))
            if now - since < IDLE_TIMEOUT_S:
                break
            self._close(connection)
        for connection, deadline in list(self.deadlines.items()):
            if now > deadline:  # a slow client: unblock its handler's read or write
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def _close(self, connection: socket.socket) -> None:
        self.parked.pop(connection, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection)
        self.shutdown_request(connection)

    def _answer_loop(self) -> None:
        while (connection := self.ready.get()) is not None:
            self.deadlines[connection] = time.monotonic() + REQUEST_DEADLINE_S
            try:
                connection.settimeout(REQUEST_DEADLINE_S)
                self.finish_request(connection, connection.getpeername())
            except Exception:
                self.handle_error(connection, None)
            finally:
                self.deadlines.pop(connection, None)
                self.shutdown_request(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One structured line (the secret masker sees it), not socketserver's traceback."""
        error = sys.exc_info()[1]
        kind = type(error).__name__
        self.log.warning("metrics request failed", kind=kind, error=str(error)[:200])


def _has_data(connection: socket.socket) -> bool:
    try:
        return bool(connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # reset, or nothing after all
        return False


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    liveness_problem: Callable[[], str | None],
) -> BoundedHTTPServer:
    """Start serving on daemon threads; /healthz is 503 with the reason the loop gives."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                problem = liveness_problem()
                body = b"ok\n" if problem is None else f"{problem}\n".encode()
                self._reply(200 if problem is None else 503, body, "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would drown the worker's own logs

    server = BoundedHTTPServer((host, port), Handler)
    server.start()
    return server
