"""Hand-packed MULTI/EXEC on real Redis: what it applies, how it fails, and that the pooled
connection is clean afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import hiredis
import pytest
import redis

from cdc_worker.store.redis_tx import Transaction, read_many


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, max_connections=1) as client:  # one connection
        yield client


def test_a_transaction_applies_every_command_and_returns_exec_replies(
    client: redis.Redis,
) -> None:
    tx = Transaction()
    tx.hset("h", {1: b"one", "two": 2})
    tx.sadd("s", 1, 2, 3)
    tx.zadd_ids("z", [5, 7, 2**63 - 1, 2**63 - 2])
    tx.incr("n")
    tx.set("k", "v", ex=60)
    tx.xadd("x", {"identity": "tickets:1"}, maxlen=10)
    tx.hdel("h", "two")
    with client.pipeline() as pipe:
        pipe.watch("k")
        replies = tx.execute(pipe)
    assert replies[:5] == [2, 3, 4, 1, b"OK"]  # raw replies, no redis-py callbacks
    assert client.hgetall("h") == {b"1": b"one"}
    members = client.zrange("z", 0, -1, withscores=True)
    assert members == [  # exact and in id order past 2^53: lexical members, all scored 0
        (b"0000000000000000005", 0.0),
        (b"0000000000000000007", 0.0),
        (str(2**63 - 2).encode(), 0.0),
        (str(2**63 - 1).encode(), 0.0),
    ]
    assert 0 < client.ttl("k") <= 60
    assert client.xlen("x") == 1


def test_a_watched_key_changed_meanwhile_applies_nothing(client: redis.Redis) -> None:
    tx = Transaction()
    tx.set("applied", 1)
    with client.pipeline() as pipe:
        pipe.watch("fence")
        with redis.Redis(connection_pool=redis.ConnectionPool.from_url(_url(client))) as other:
            other.set("fence", "moved")
        with pytest.raises(redis.WatchError):
            tx.execute(pipe)
    assert client.get("applied") is None
    assert client.ping()  # the one pooled connection is clean


def test_a_command_refused_when_queued_aborts_all_and_raises_its_error(
    client: redis.Redis,
) -> None:
    tx = Transaction()
    tx.set("applied", 1)
    tx._queue("SET", "missing-value")  # wrong arity: refused at queueing
    with client.pipeline() as pipe:
        pipe.watch("fence")
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            tx.execute(pipe)
    assert client.get("applied") is None
    assert client.ping()


def test_a_command_failing_inside_exec_raises_after_the_rest_applied(
    client: redis.Redis,
) -> None:
    client.set("a-string", "x")
    tx = Transaction()
    tx.sadd("a-string", 1)  # WRONGTYPE, only known when EXEC runs it
    tx.set("applied", 1)
    with client.pipeline() as pipe:
        pipe.watch("fence")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            tx.execute(pipe)
    assert client.get("applied") == b"1"  # Redis has no rollback, as with redis-py
    assert client.ping()


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def test_reads_run_in_one_round_trip_under_the_watch_and_a_failure_drops_the_connection(
    client: redis.Redis,
) -> None:
    client.sadd("a", 1, 2)
    client.sadd("b", 3)
    tx = Transaction()
    tx.set("applied", 1)
    with client.pipeline() as pipe:
        pipe.watch("fence")
        replies = read_many(pipe, [("SMEMBERS", "a"), ("SMEMBERS", "missing"), ("SMEMBERS", "b")])
        assert [set(r) for r in replies] == [{b"1", b"2"}, set(), {b"3"}]
        tx.execute(pipe)  # still watching, on the same connection
    assert client.get("applied") == b"1"
    client.set("str", "x")
    with client.pipeline() as pipe:
        pipe.watch("fence")
        with pytest.raises(redis.ResponseError):  # WRONGTYPE, then one reply left unread
            read_many(pipe, [("SMEMBERS", "str"), ("GET", "str")])
    assert client.smembers("a") == {b"1", b"2"}  # not b"x", the reply left unread
    assert client.ping()


def test_id_keyed_hashes_pack_by_hand_as_hiredis_packs_them(client: redis.Redis) -> None:
    documents = {1: b"{}", -2: b"", 10**12: "é\r\n\x00".encode() * 300, 0: b"$3\r\n"}
    tx = Transaction()
    tx.hset("docs", documents)  # ids and bytes: packed here
    tx.hset("mixed", {1: b"one", "two": "deux"})  # anything else: packed by hiredis
    assert tx.packed[1] == hiredis.pack_command(("HSET", "docs", *chain(*documents.items())))
    with client.pipeline() as pipe:
        pipe.watch("docs")
        assert tx.execute(pipe) == [4, 2]
    assert client.hgetall("docs") == {str(k).encode(): v for k, v in documents.items()}
    assert client.hgetall("mixed") == {b"1": b"one", b"two": b"deux"}
