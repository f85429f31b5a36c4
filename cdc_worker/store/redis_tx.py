"""MULTI/EXEC packed by hand: the commands of one transaction as one buffer of RESP.

A snapshot chunk or a catch-up batch queues thousands of commands in one transaction.
redis-py packs each through several Python layers (in a profile of a snapshot build it took
1.03 s to pack 70,000 commands, 0.21 s of it in hiredis) and parses each QUEUED reply the same
way.
Here each command is packed by hiredis as it is queued, the whole transaction leaves in one
``sendall``, and the replies are read straight off the connection.

The connection is the one the caller WATCHes on (a redis-py pipeline's), so optimistic
locking works as before: EXEC's nil reply raises ``WatchError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import hiredis
import redis

from cdc_worker.store.index_encoding import index_member

MULTI = hiredis.pack_command(("MULTI",))
EXEC = hiredis.pack_command(("EXEC",))


def read_many(pipe: redis.client.Pipeline, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run read commands in one round trip on the connection ``pipe`` WATCHes on (redis-py's
    pipeline sends each on its own while it watches), and return their replies. Any error
    drops the connection: replies left unread must not reach its next user."""
    connection = _watching_connection(pipe)
    try:
        connection.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
        return [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()
        raise


def _pack_hset_ids(name: str, mapping: dict[int, bytes]) -> bytes:
    """HSET in RESP for int fields (as their decimal text) and bytes values; each value is
    copied once, by the final join."""
    key = name.encode()
    parts = [b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (2 + 2 * len(mapping), len(key), key)]
    for field, value in mapping.items():
        text = b"%d" % field
        parts += (b"$%d\r\n%b\r\n$%d\r\n" % (len(text), text, len(value)), value, b"\r\n")
    return b"".join(parts)


def _watching_connection(pipe: redis.client.Pipeline) -> Any:
    """The connection a pipeline WATCHes on (redis-py leaves disconnect() untyped)."""
    if pipe.connection is None:
        raise RuntimeError("the pipeline must WATCH before commands run on its connection")
    return pipe.connection


class Transaction:
    """Commands for one MULTI/EXEC, packed as they are queued.

    The methods are the subset of redis-py's pipeline that ``write_ops`` and its neighbours
    use, with the same signatures, so the same code queues onto either.
    """

    def __init__(self) -> None:
        self.packed: list[bytes] = [MULTI]

    def __len__(self) -> int:
        return len(self.packed) - 1

    def _queue(self, *args: Any) -> None:
        self.packed.append(hiredis.pack_command(args))

    def hset(self, name: str, mapping: dict[Any, Any]) -> None:
        """HSET name field value [field value ...].

        Packed here, not by hiredis, when the fields are ids and the values bytes (documents
        and states, thousands per command): hiredis grows its buffer as it goes and took
        1.5-2.2 µs a field of 1 KB, this 0.5.
        """
        if all(type(k) is int for k in mapping) and all(type(v) is bytes for v in mapping.values()):
            self.packed.append(_pack_hset_ids(name, mapping))
        else:
            self._queue("HSET", name, *chain.from_iterable(mapping.items()))

    def hdel(self, name: str, *fields: Any) -> None:
        """HDEL name field [field ...]."""
        self._queue("HDEL", name, *fields)

    def sadd(self, name: str, *members: Any) -> None:
        """SADD name member [member ...]."""
        self._queue("SADD", name, *members)

    def srem(self, name: str, *members: Any) -> None:
        """SREM name member [member ...]."""
        self._queue("SREM", name, *members)

    def zadd_ids(self, name: str, ids: Iterable[int]) -> None:
        """ZADD name 0 member [0 member ...]: ids as ``index_member``, all scored 0."""
        args: list[Any] = ["ZADD", name]
        for i in ids:
            args += (0, index_member(i))
        self._queue(*args)

    def zrem_ids(self, name: str, ids: Iterable[int]) -> None:
        """ZREM name member [member ...]: ids as ``index_member``."""
        self._queue("ZREM", name, *map(index_member, ids))

    def incr(self, name: str) -> None:
        """INCR name."""
        self._queue("INCR", name)

    def set(self, name: str, value: Any, ex: int | None = None) -> None:
        """SET name value [EX seconds]."""
        if ex is None:
            self._queue("SET", name, value)
        else:
            self._queue("SET", name, value, "EX", ex)

    def xadd(
        self, name: str, fields: dict[str, Any], maxlen: int, approximate: bool = True
    ) -> None:
        """XADD name MAXLEN [~] maxlen * field value [field value ...]."""
        args: list[Any] = ["XADD", name, "MAXLEN", *(["~"] if approximate else []), maxlen, "*"]
        for item in fields.items():
            args += item
        self._queue(*args)

    def execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        """Send MULTI, the commands and EXEC in one write on the connection ``pipe`` WATCHes
        on, and return EXEC's replies.

        Raises as redis-py's pipeline does: ``WatchError`` when a watched key changed, the
        first error a command was queued with (Redis then applied nothing), or the first
        error a command gave inside EXEC. A connection that fails midway is dropped, so no
        unread reply can reach its next user. EXEC ends the WATCH, so ``pipe`` is told it no
        longer watches (no UNWATCH round trip when it is reset).
        """
        connection = _watching_connection(pipe)
        try:
            connection.send_packed_command([b"".join([*self.packed, EXEC])])
            return self._replies(connection)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            connection.disconnect()
            raise
        finally:
            pipe.watching = False

    def _replies(self, connection: Any) -> list[Any]:
        queued_error: redis.ResponseError | None = None
        for _ in range(len(self.packed)):  # MULTI's OK and each QUEUED
            try:
                connection.read_response()
            except redis.ResponseError as exc:
                queued_error = queued_error or exc
        try:
            replies = connection.read_response()
        except redis.exceptions.ExecAbortError:
            if queued_error is not None:
                raise queued_error from None
            raise
        if replies is None:
            raise redis.WatchError("watched keys changed; the transaction applied nothing")
        if len(replies) != len(self):
            connection.disconnect()
            raise redis.ResponseError(f"EXEC replied {len(replies)} times for {len(self)}")
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return list(replies)
