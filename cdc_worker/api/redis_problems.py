"""What stands between the API and its Redis, said in the log (the clients only see 503s)."""

from __future__ import annotations

import math
import time
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from cdc_worker.errors import ConfigurationError
from cdc_worker.store.connection import redis_error

LOG_EVERY_S = 60.0


class RedisProblems:
    """Logs a failing Redis call's cause in one line (wrong password: fix CDC_REDIS_URL;
    unreachable), at most once a minute, and names it for /readyz."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.logged_at_s = -math.inf
        self.log: Any = structlog.get_logger("cdc_worker.api.app")

    def report(self, exc: RedisError) -> str:
        """Log (throttled) and return /readyz's reason."""
        problem = redis_error(exc, self.url)
        if time.monotonic() - self.logged_at_s >= LOG_EVERY_S:
            self.logged_at_s = time.monotonic()
            self.log.error(str(problem), kind=type(problem).__name__)
        if isinstance(problem, ConfigurationError):
            return "redis refused the credentials of CDC_REDIS_URL"
        return "redis unreachable"

    async def check(self, client: aioredis.Redis) -> None:
        """At start-up: one PING, so a wrong password shows in the log before any request."""
        try:
            await client.ping()
        except RedisError as exc:
            self.report(exc)
