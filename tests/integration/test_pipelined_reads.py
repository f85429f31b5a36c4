"""The API's auto-pipelined single reads, against a real Redis that is stopped and restarted."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest
import redis
from redis.exceptions import AuthenticationError, RedisError, TimeoutError

from cdc_worker.api.pipelined_reads import PipelinedReader, connection_options
from cdc_worker.devtools.localservers import RedisServer

KEY = "tickets"


def fill(url: str, count: int) -> dict[str, bytes]:
    values = {str(i): f'{{"id":{i},"pad":"{"x" * (i % 300)}"}}'.encode() for i in range(count)}
    with redis.Redis.from_url(url) as client:
        client.delete(KEY)
        client.hset(KEY, mapping=values)  # type: ignore[arg-type]
    return values


def test_concurrent_reads_each_get_their_own_reply(redis_url: str) -> None:
    values = fill(redis_url, 2000)
    asked = [str(random.randrange(2200)) for _ in range(5000)]  # about 1 in 11 missing

    async def run() -> list[bytes | None]:
        reader = PipelinedReader(redis_url)
        try:
            return await asyncio.gather(*(reader.hget(KEY, field) for field in asked))
        finally:
            await reader.close()

    got = asyncio.run(run())
    assert got == [values.get(field) for field in asked]
    assert any(value is None for value in got)


def test_a_cancelled_request_does_not_shift_the_replies_of_the_others(redis_url: str) -> None:
    values = fill(redis_url, 500)

    async def run() -> None:
        reader = PipelinedReader(redis_url)
        try:
            for _ in range(20):
                tasks = [asyncio.create_task(reader.hget(KEY, str(i))) for i in range(500)]
                await asyncio.sleep(0)  # every request is queued on the connection
                for task in tasks[::7]:
                    task.cancel()
                for i, task in enumerate(tasks):
                    if i % 7:
                        assert await task == values[str(i)]
        finally:
            await reader.close()

    asyncio.run(run())


def test_reads_fail_while_redis_is_gone_and_work_again_after_it_restarts(
    own_redis: RedisServer,
) -> None:
    fill(own_redis.url, 10)

    async def run() -> None:
        reader = PipelinedReader(own_redis.url, timeout_s=2)
        try:
            assert await reader.hget(KEY, "3") is not None
            own_redis.kill()
            with pytest.raises(RedisError):
                await reader.hget(KEY, "3")
            own_redis.restart()
            assert await reader.hget(KEY, "3") is None  # a new, empty server
            fill(own_redis.url, 10)
            assert await reader.hget(KEY, "3") is not None
        finally:
            await reader.close()

    asyncio.run(run())


def test_a_stopped_redis_times_requests_out_instead_of_hanging(own_redis: RedisServer) -> None:
    values = fill(own_redis.url, 10)
    pid = int(own_redis.pid_file.read_text())

    async def run() -> float:
        reader = PipelinedReader(own_redis.url, timeout_s=1)
        try:
            assert await reader.hget(KEY, "1") == values["1"]
            os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                results = await asyncio.gather(
                    *(reader.hget(KEY, "1") for _ in range(50)), return_exceptions=True
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            assert all(isinstance(r, TimeoutError) for r in results), results[:3]
            waited_s = time.monotonic() - started
            assert await reader.hget(KEY, "2") == values["2"]  # a fresh connection
            return waited_s
        finally:
            await reader.close()

    assert asyncio.run(run()) < 10  # bounded by the timeout, not by the stop


def test_a_busy_event_loop_is_not_mistaken_for_a_silent_redis(redis_url: str) -> None:
    """A flood slows the API's event loop: commands leave late and replies are read late.
    Only Redis's own silence may fail requests, not the time they spent in the loop."""
    values = fill(redis_url, 20)

    async def busy_loop_reads(reader: PipelinedReader) -> None:
        try:
            probe = asyncio.ensure_future(reader.call_within(1.0, "HGET", KEY, "1"))
            reads = [asyncio.ensure_future(reader.hget(KEY, str(i))) for i in range(20)]
            for _ in range(3):  # busy before a send, and after one with replies unread
                await asyncio.sleep(0)
                time.sleep(1.3)
            assert await probe == values["1"]
            assert await asyncio.gather(*reads) == [values[str(i)] for i in range(20)]
        finally:
            await reader.close()

    async def run() -> None:
        # While connecting, the probe waits for the attempt, which has its own bound (5 s).
        await busy_loop_reads(PipelinedReader(redis_url, timeout_s=5))
        # On an open connection whose watchdog allows 1 s of silence.
        warm = PipelinedReader(redis_url, timeout_s=1)
        assert await warm.hget(KEY, "0") == values["0"]
        await busy_loop_reads(warm)

    asyncio.run(run())


def test_a_probe_on_a_stopped_redis_gives_up_after_the_silence_bound(
    own_redis: RedisServer,
) -> None:
    fill(own_redis.url, 10)
    pid = int(own_redis.pid_file.read_text())

    async def run() -> float:
        reader = PipelinedReader(own_redis.url, timeout_s=5)
        try:
            await reader.hget(KEY, "1")
            os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await reader.call_within(1.0, "HGET", KEY, "1")
            finally:
                os.kill(pid, signal.SIGCONT)
            return time.monotonic() - started
        finally:
            await reader.close()

    waited_s = asyncio.run(run())
    assert 1.0 <= waited_s < 4.0  # the probe's bound, not the connection's 5 s


def test_acl_user_password_and_database_come_from_the_url(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as admin:
        admin.acl_setuser(
            "reader", enabled=True, passwords=["+s3cret!"], keys=["*"], commands=["+@all"]
        )
        db_url = redis_url.rsplit("/", 1)[0] + "/3"
    port = connection_options(redis_url)["port"]
    good = f"redis://reader:s3cret%21@127.0.0.1:{port}/3"
    with redis.Redis.from_url(db_url) as client:
        client.hset(KEY, "1", b"in db 3")

    async def run() -> None:
        reader = PipelinedReader(good)
        try:
            assert await reader.hget(KEY, "1") == b"in db 3"
        finally:
            await reader.close()
        wrong = PipelinedReader(f"redis://reader:nope@127.0.0.1:{port}/3")
        with pytest.raises(AuthenticationError) as refused:
            await wrong.hget(KEY, "1")
        assert "nope" not in str(refused.value)

    try:
        asyncio.run(run())
    finally:
        with redis.Redis.from_url(redis_url) as admin:
            admin.acl_deluser("reader")
        with redis.Redis.from_url(db_url) as client:
            client.flushdb()


def test_url_forms() -> None:
    plain = connection_options("redis://h:1234/2")
    assert (plain["host"], plain["port"], plain["db"], plain["ssl"]) == ("h", 1234, 2, None)
    unix = connection_options("unix:///run/redis.sock?db=4&password=pw")
    assert (unix["socket_path"], unix["db"], unix["password"]) == ("/run/redis.sock", 4, "pw")
    tls = connection_options("rediss://u:p%40ss@h/1?ssl_cert_reqs=none")
    assert (tls["username"], tls["password"], tls["ssl"].check_hostname) == ("u", "p@ss", False)
    with pytest.raises(ValueError, match="redis://"):
        connection_options("http://h/1")


def test_requests_queued_behind_a_failed_connection_attempt_fail_at_once(
    own_redis: RedisServer,
) -> None:
    """A stopped Redis accepts the TCP connection but never answers the handshake (SELECT):
    one request waits out the timeout, the ones queued behind it must not each wait again."""
    pid = int(own_redis.pid_file.read_text())
    url = own_redis.url.rsplit("/", 1)[0] + "/2"

    async def run() -> tuple[list[BaseException | bytes | None], float]:
        reader = PipelinedReader(url, timeout_s=1)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(reader.hget(KEY, "1") for _ in range(20)), return_exceptions=True
            )
            return results, time.monotonic() - started
        finally:
            await reader.close()

    os.kill(pid, signal.SIGSTOP)
    try:
        results, waited_s = asyncio.run(run())
    finally:
        os.kill(pid, signal.SIGCONT)
    assert all(isinstance(r, RedisError) for r in results), results[:3]
    assert waited_s < 5  # one timeout (1 s), not twenty in a row
