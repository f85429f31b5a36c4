"""Redis clients from the settings: straight to ``CDC_REDIS_URL``, or through Sentinel.

With ``CDC_REDIS_SENTINELS`` set, the Sentinels name the primary (and the replicas the API
may read); ``CDC_REDIS_URL`` still gives the database number, the ACL user and password and
TLS (``rediss://`` and its ``ssl_*`` parameters), and its host is not used. redis-py's
Sentinel clients ask the Sentinels again whenever a connection has to be made, so after a
failover the next connection reaches the promoted replica.
"""

from __future__ import annotations

import random
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

from cdc_worker.settings import Settings
from cdc_worker.store import connection

SENTINEL_TIMEOUT_S = 1.0


class WaitingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel-managed pool in which a request waits (up to ``timeout`` seconds) for a
    free connection when all are busy, as the plain URL's pool does, instead of failing at
    once with "Too many connections"."""


def url_options(url: str) -> dict[str, Any]:
    """What a Sentinel-managed connection takes from the Redis URL: database, user,
    password and TLS; never the host, which the Sentinels decide."""
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    for name in ("host", "port", "path"):
        options.pop(name, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return options


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """How to talk to the Sentinels themselves."""
    password = settings.redis_sentinel_password
    options: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S}
    if password is not None:
        options["password"] = password.get_secret_value()
    return options


def redis_client(settings: Settings, socket_timeout_s: float = 30) -> redis.Redis:
    """The worker's (and the CLI's) pooled client for the primary."""
    url = settings.redis_url.get_secret_value()
    if not settings.sentinels:
        return redis.Redis.from_url(url, socket_timeout=socket_timeout_s, health_check_interval=30)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinels, sentinel_kwargs=sentinel_options(settings)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_service,
        socket_timeout=socket_timeout_s,
        health_check_interval=30,
        **url_options(url),
    )
    return client


def async_sentinel(settings: Settings) -> aiosentinel.Sentinel:
    """The API's asyncio Sentinel client."""
    return aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinels, sentinel_kwargs=sentinel_options(settings)
    )


def async_clients(settings: Settings, timeout_s: float) -> tuple[aioredis.Redis, aioredis.Redis]:
    """The API's (primary, reads) clients: the same client unless reads go to replicas.
    A request waits (up to ``api_redis_pool_wait_s``) for a free pooled connection rather
    than fail at once when all are busy, straight to the URL or through the Sentinels."""
    url, max_connections = settings.redis_url.get_secret_value(), settings.api_redis_pool_size
    options: dict[str, Any] = {"socket_timeout": timeout_s, "max_connections": max_connections}
    if not settings.sentinels:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, timeout=settings.api_redis_pool_wait_s, **options
        )
        primary = aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
        return primary, primary
    sentinel = async_sentinel(settings)
    name, options = settings.redis_sentinel_service, {**options, **url_options(url)}
    options.update(
        connection_pool_class=WaitingSentinelPool, timeout=settings.api_redis_pool_wait_s
    )
    primary = sentinel.master_for(name, **options)
    if settings.api_read_from == "primary":
        return primary, primary
    return primary, sentinel.slave_for(name, **options)


def async_follower(settings: Settings) -> aioredis.Redis:
    """A client for one blocking reader (``XREAD BLOCK``): no socket timeout, the primary
    found through the Sentinels when they are configured (the feed is written there)."""
    url = settings.redis_url.get_secret_value()
    if not settings.sentinels:
        return aioredis.Redis.from_url(url, socket_timeout=None)
    options = {"socket_timeout": None, **url_options(url)}
    client: aioredis.Redis = async_sentinel(settings).master_for(
        settings.redis_sentinel_service, **options
    )
    return client


def sentinel_of(client: aioredis.Redis) -> aiosentinel.Sentinel | None:
    """The Sentinel manager a client's pool asks where to connect; None: a plain URL's."""
    manager: aiosentinel.Sentinel | None = getattr(client.connection_pool, "sentinel_manager", None)
    return manager


async def close_client(client: aioredis.Redis) -> None:
    """``aclose()`` the client, and the connections to the Sentinels its pool asks, which
    ``aclose()`` leaves open (a Sentinel-managed pool keeps its manager, and the manager a
    client per Sentinel)."""
    manager = sentinel_of(client)
    await client.aclose()
    if manager is not None:
        for sentinel in manager.sentinels:
            await sentinel.aclose()


async def read_address(sentinel: aiosentinel.Sentinel, service: str, replica: bool) -> Any:
    """Where the next read connection goes: a random live replica when asked and one is
    listed, else the primary."""
    if replica:
        replicas = await sentinel.discover_slaves(service)
        if replicas:
            return random.choice(replicas)
    return await sentinel.discover_master(service)


def ping(settings: Settings, timeout_s: float = 5.0) -> bool:
    """``connection.ping`` of the primary: the URL's host, or the one the Sentinels name
    (no Sentinel answering, or none naming a primary, is unreachable: wait for it)."""
    url = settings.redis_url.get_secret_value()
    if not settings.sentinels:
        return connection.ping(url, timeout_s)
    try:
        with redis_client(settings, socket_timeout_s=timeout_s) as client:
            return bool(client.ping())
    except redis.RedisError as exc:
        raise connection.redis_error(exc, url) from None
