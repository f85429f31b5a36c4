"""Single-document reads for the API on one auto-pipelined Redis connection.

redis-py's asyncio client checks a connection out of a pool, takes locks and arms a timeout
for every command: on ``GET /tickets/{id}`` that costs more than the rest of the request.
Here every request of the process shares one connection: the commands issued during one
event-loop turn leave in one write, and the replies come back in order (Redis answers the
commands of a connection in the order they arrived), each resolving the request waiting
first. The URL is read like redis-py reads it: ``redis://`` or ``rediss://``, an ACL user and
password, the database number, and the ``ssl_*`` query parameters.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

CHECK_EVERY_S = 0.5
RETRY_AFTER_S = 0.5  # requests queued behind a failed connection attempt fail this long


def connection_options(url: str) -> dict[str, Any]:
    """Host, port, user, password, database and TLS context named by a Redis URL."""
    parts = urlparse(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the Redis URL must start with redis://, rediss:// or unix://")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unix = parts.scheme == "unix"
    path = "" if unix else parts.path.strip("/")
    username = unquote(parts.username) if parts.username else query.get("username")
    password = unquote(parts.password) if parts.password else query.get("password")
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 6379,
        "socket_path": parts.path if unix else None,
        "username": username,
        "password": password,
        "db": int(query.get("db", path or 0)),
        "ssl": _tls_context(query) if parts.scheme == "rediss" else None,
    }


def _tls_context(query: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
    if "ssl_certfile" in query:
        context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    if query.get("ssl_cert_reqs", "required").lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif query.get("ssl_check_hostname", "").lower() in ("false", "0", "no"):
        context.check_hostname = False
    return context


class _Replies(asyncio.Protocol):
    """Parses the connection's replies and hands each to the oldest waiting request."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            future, _ = self.waiting.popleft()
            if future.done():  # its request was cancelled; the reply is still its own
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.lost or exc or ConnectionError("Redis closed the connection")
        error = self.lost if isinstance(self.lost, RedisError) else ConnectionError("lost Redis")
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class PipelinedReader:
    """``hget`` for many concurrent requests over one connection, reconnecting on demand.

    A request that waits longer than ``timeout_s`` fails, with every request behind it on
    the connection, and the next request connects afresh.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        resolve: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.options = connection_options(url)
        self.resolve = resolve  # Sentinel: asked where to connect, before each connection
        self.timeout_s = timeout_s
        self._replies: _Replies | None = None
        self._connecting: asyncio.Lock | None = None
        self._outgoing: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._failed_at_s = -RETRY_AFTER_S  # when a connection attempt last failed

    async def hget(self, key: str, field: str) -> bytes | None:
        """HGET ``key`` ``field``: the value, or None."""
        result: bytes | None = await self.call("HGET", key, field)
        return result

    async def call(self, *command: str | int | bytes) -> Any:
        """Any command, on the shared connection; its reply as hiredis parses it."""
        replies = self._replies
        if replies is None or replies.lost is not None:
            replies = await self._connect()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        replies.waiting.append((future, time.monotonic()))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(hiredis.pack_command(command))  # type: ignore[arg-type]
        return await future

    async def close(self) -> None:
        """Close the connection; requests still waiting fail."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._replies is not None and self._replies.transport is not None:
            self._replies.transport.close()
        self._replies = None

    def _flush(self) -> None:
        """Send what this loop turn's requests asked for, in one write."""
        outgoing, self._outgoing, replies = self._outgoing, [], self._replies
        # A lost connection's connection_lost fails the requests it had.
        if outgoing and replies and replies.transport and replies.lost is None:
            replies.transport.write(b"".join(outgoing))

    async def _connect(self) -> _Replies:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._replies is not None and self._replies.lost is None:
                return self._replies
            if time.monotonic() - self._failed_at_s < RETRY_AFTER_S:
                # The attempt this request queued behind just failed: fail now, not one
                # timeout later each (a thousand requests behind one unreachable Redis).
                raise ConnectionError("Redis unreachable: a connection attempt just failed")
            self._outgoing = []
            try:
                self._replies = await self._open()
            except RedisError:
                self._failed_at_s = time.monotonic()
                raise
            self._arm_watchdog()
            return self._replies

    async def _open(self) -> _Replies:
        loop, o = asyncio.get_running_loop(), self.options
        if o["socket_path"]:
            opening = loop.create_unix_connection(_Replies, o["socket_path"])
        else:
            host, port = (await self.resolve()) if self.resolve else (o["host"], o["port"])
            opening = loop.create_connection(_Replies, host, port, ssl=o["ssl"])
        try:
            _, replies = await asyncio.wait_for(opening, self.timeout_s)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from None
        try:
            await self._handshake(replies)
        except BaseException:
            assert replies.transport is not None
            replies.transport.close()
            raise
        return replies

    async def _handshake(self, replies: _Replies) -> None:
        o = self.options
        commands: list[tuple[Any, ...]] = []
        if o["password"] is not None:
            user = (o["username"],) if o["username"] else ()
            commands.append(("AUTH", *user, o["password"]))
        if o["db"]:
            commands.append(("SELECT", o["db"]))
        loop = asyncio.get_running_loop()
        for command in commands:
            future = loop.create_future()
            replies.waiting.append((future, time.monotonic()))
            assert replies.transport is not None
            replies.transport.write(hiredis.pack_command(command))
            try:
                await asyncio.wait_for(future, self.timeout_s)
            except ResponseError as exc:
                if command[0] == "AUTH":
                    raise AuthenticationError("Redis refused the credentials") from None
                raise RedisError(f"Redis refused {command[0]}: {exc}") from None
            except TimeoutError:
                raise RedisTimeoutError("Redis did not answer the handshake") from None

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(CHECK_EVERY_S, self._check)

    def _check(self) -> None:
        """Drop a connection whose oldest request waits too long (Redis stopped answering)."""
        replies = self._replies
        if replies is None or replies.lost is not None:
            self._watchdog = None
            return
        if replies.waiting and time.monotonic() - replies.waiting[0][1] > self.timeout_s:
            replies.lost = RedisTimeoutError(f"no reply from Redis in {self.timeout_s} s")
            assert replies.transport is not None
            replies.transport.abort()
        self._arm_watchdog()
