"""The worker's own small HTTP endpoint: /metrics for Prometheus, /healthz for liveness."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    last_loop_s: Callable[[], float],
    max_silence_s: float,
) -> ThreadingHTTPServer:
    """Start serving on a daemon thread; /healthz is 503 when the loop stopped turning."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                silent_s = time.monotonic() - last_loop_s()
                healthy = silent_s <= max_silence_s
                body = b"ok\n" if healthy else f"loop silent for {silent_s:.0f} s\n".encode()
                self._reply(200 if healthy else 503, body, "text/plain")
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

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
