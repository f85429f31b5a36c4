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


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def _within_silence(
    pending: asyncio.Future[Any], silence_s: float, replies: Callable[[], _Replies | None]
) -> Any:
    """``pending``'s result, or TimeoutError once the connection ``replies()`` names has been
    silent for ``silence_s`` while it waits; no connection yet (None): keep waiting."""
    while True:
        await asyncio.wait({pending}, timeout=silence_s)
        if pending.done():
            return pending.result()
        # Silence as of now, judged after two loop turns, so that replies that arrived by
        # now but were not yet read (a busy loop reads late) are counted.
        asked_s = time.monotonic()
        for _ in range(2):
            await asyncio.sleep(0)
        if pending.done():
            return pending.result()
        connection = replies()
        if connection is not None and connection.silent_s(asked_s) >= silence_s:
            # The connection's watchdog or its loss settles the call; nobody reads it.
            pending.add_done_callback(_consume)
            raise TimeoutError(f"Redis sent nothing for {silence_s:g} s")


class _Waiter:
    """A request on the connection: its future, and when its command left (None: not yet)."""

    __slots__ = ("future", "sent_s")

    def __init__(self, future: asyncio.Future[Any], sent_s: float | None = None) -> None:
        self.future = future
        self.sent_s = sent_s


class _Replies(asyncio.Protocol):
    """Parses the connection's replies and hands each to the oldest waiting request."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.waiting: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.heard_s = time.monotonic()  # when Redis last sent anything

    def silent_s(self, now_s: float) -> float:
        """How long Redis has sent nothing since the oldest waiting command left: 0 when none
        waits. Counted from the send, not from the request, and reset by every reply, so time
        a busy event loop spends before sending or reading does not count."""
        sent_s = self.waiting[0].sent_s if self.waiting else None
        if sent_s is None:
            return 0.0
        return now_s - max(self.heard_s, sent_s)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.heard_s = time.monotonic()
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            future = self.waiting.popleft().future
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
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(error)


class PipelinedReader:
    """``hget`` for many concurrent requests over one connection, reconnecting on demand.

    When requests wait and Redis has sent nothing for ``timeout_s``, they all fail and the
    next request connects afresh. Time only waited in a busy event loop does not count: the
    replies that keep arriving show Redis is answering.
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
        self._outgoing: list[tuple[_Waiter, bytes]] = []
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
        waiter = _Waiter(loop.create_future())
        replies.waiting.append(waiter)
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append((waiter, hiredis.pack_command(command)))  # type: ignore[arg-type]
        return await waiter.future

    async def call_within(self, silence_s: float, *command: str | int | bytes) -> Any:
        """``call``, failing with TimeoutError once Redis has been silent for ``silence_s``
        while this request waits (a probe's bound that a flood of requests does not trip).
        A connection attempt in progress is bounded by its own timeouts instead."""

        def replies() -> _Replies | None:
            connecting = self._connecting is not None and self._connecting.locked()
            return None if connecting else self._replies

        return await _within_silence(asyncio.ensure_future(self.call(*command)), silence_s, replies)

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
            sent_s = time.monotonic()
            for waiter, _ in outgoing:
                waiter.sent_s = sent_s
            replies.transport.write(b"".join(command for _, command in outgoing))

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
            replies.waiting.append(_Waiter(future, time.monotonic()))
            assert replies.transport is not None
            replies.transport.write(hiredis.pack_command(command))
            try:
                await _within_silence(future, self.timeout_s, lambda: replies)
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
        """Drop a connection that has been silent too long while requests wait (Redis
        stopped answering). Judged only after the loop next polls the socket: a long
        callback may have run since the replies arrived, so they may not have been read."""
        replies = self._replies
        if replies is None or replies.lost is not None:
            self._watchdog = None
            return
        checked_s = time.monotonic()
        if replies.silent_s(checked_s) > self.timeout_s:
            # Judged as of now, after the loop next polls the socket (timers run after the
            # poll, in the same loop turn).
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(0, self._judge, replies, checked_s)
            return
        self._arm_watchdog()

    def _judge(self, replies: _Replies, checked_s: float) -> None:
        current = replies is self._replies and replies.lost is None
        if current and replies.silent_s(checked_s) > self.timeout_s:
            replies.lost = RedisTimeoutError(f"no reply from Redis in {self.timeout_s} s")
            assert replies.transport is not None
            replies.transport.abort()
            self._watchdog = None
            return
        self._arm_watchdog()
