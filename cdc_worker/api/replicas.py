"""Where the API reads: the Redis primary, or a replica the Sentinels list
(``CDC_API_READ_FROM=replica``), and how far that replica is behind.

A replica applies each MULTI/EXEC of the worker whole, so a document or a listing read from
it is one the primary held at some moment (never half a batch); it may be older than the
primary's by the replication lag, which /readyz reports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel

from cdc_worker.settings import Settings
from cdc_worker.store import keys
from cdc_worker.store.connect import async_sentinel, read_address

Resolver = Callable[[], Awaitable[Any]]


def reads_go_to_replicas(settings: Settings) -> bool:
    """True when documents and listings are read from replicas."""
    return bool(settings.sentinels) and settings.api_read_from == "replica"


def read_resolver(
    settings: Settings, sentinel: aiosentinel.Sentinel | None = None
) -> Resolver | None:
    """For the single-read connection: where to connect, asked of the Sentinels (through
    ``sentinel``, the API clients' own manager when given) each time it (re)connects; None:
    the URL's own host."""
    if not settings.sentinels:
        return None
    sentinel = sentinel or async_sentinel(settings)
    service, replica = settings.redis_sentinel_service, reads_go_to_replicas(settings)

    async def resolve() -> Any:
        return await read_address(sentinel, service, replica)

    return resolve


async def replica_lag_s(
    reads: aioredis.Redis, primary_heartbeat: bytes | str | None
) -> float | None:
    """How much older the heartbeat the replica holds is than the primary's (0: same beat);
    None when either has none."""
    replica_heartbeat = await reads.get(keys.HEARTBEAT)
    if primary_heartbeat is None or replica_heartbeat is None:
        return None
    primary_at_s = float(orjson.loads(primary_heartbeat)["at_s"])
    return max(0.0, primary_at_s - float(orjson.loads(replica_heartbeat)["at_s"]))
