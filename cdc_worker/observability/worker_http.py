"""The worker's own small HTTP endpoint: /metrics for Prometheus, /healthz for liveness.

It runs on threads of its own, never the loop's, so /healthz answers while the loop is stuck.
Bounded: ``HANDLER_THREADS`` threads serve connections taken from a queue of at most
``QUEUE_MAX_CONNECTIONS``; beyond that a new connection is closed at once, and a connection
that sends nothing for ``READ_TIMEOUT_S`` is dropped. Errors (a scraper hanging up mid-reply)
go to the structured log as one line, never as a traceback on stderr.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HANDLER_THREADS = 4
QUEUE_MAX_CONNECTIONS = 32
READ_TIMEOUT_S = 2.0


class BoundedHTTPServer(HTTPServer):
    """An HTTP server with a fixed pool of handler threads and a bounded backlog."""

    daemon_threads = True
    request_queue_size = 64  # the kernel's listen backlog

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.log: Any = structlog.get_logger("cdc_worker.http")
        self.waiting: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(
            QUEUE_MAX_CONNECTIONS
        )
        self.refused = 0
        self.pool = [
            threading.Thread(target=self._serve_queued, name=f"worker-http-{n}", daemon=True)
            for n in range(HANDLER_THREADS)
        ]
        for thread in self.pool:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to the pool, or close it when the backlog is full."""
        try:
            self.waiting.put_nowait((request, client_address))
        except queue.Full:
            self.refused += 1
            self.shutdown_request(request)

    def _serve_queued(self) -> None:
        while (item := self.waiting.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One structured line (the masker sees it), not socketserver's traceback."""
        error = sys.exc_info()[1]
        self.log.warning(
            "metrics request failed", kind=type(error).__name__, error=str(error)[:200]
        )

    def server_close(self) -> None:
        """Stop the pool's threads too."""
        super().server_close()
        for _ in self.pool:
            with contextlib.suppress(queue.Full):
                self.waiting.put_nowait(None)


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    liveness_problem: Callable[[], str | None],
) -> BoundedHTTPServer:
    """Start serving on a daemon thread; /healthz is 503 with the reason the loop gives."""

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S  # per socket operation: idle or slow clients are dropped

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
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
