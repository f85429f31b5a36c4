"""Reaching the read model's Redis: a ping that says, in one line, what stands in the way.

A refused or timed-out connection is ``ServerUnreachable`` (wait for it); refused credentials
or a database index the server lacks are ``ConfigurationError`` (fix the URL).
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import redis

from cdc_worker.errors import CdcError, ConfigurationError, ServerUnreachable, StoreError

VARIABLE = "CDC_REDIS_URL"


def redis_address(url: str) -> str:
    """``host:port`` (or the socket path) of a Redis URL, without credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def redis_error(exc: redis.RedisError, url: str) -> CdcError:
    """One line for a failed Redis call made with ``url``."""
    where = redis_address(url)
    if isinstance(exc, redis.AuthenticationError) or _refused_credentials(exc):
        return ConfigurationError(
            f"Redis at {where} refused the credentials of {VARIABLE}: fix the password "
            "(or the user) in the URL"
        )
    if isinstance(exc.__context__, ssl.SSLError):  # a TLS handshake fails the same next time
        return ConfigurationError(
            f"Redis at {where} failed the TLS handshake: {exc}; fix {VARIABLE}'s scheme "
            "(rediss:// or redis://) or its ssl_ options"
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return ServerUnreachable(f"Redis at {where} ({VARIABLE}) is unreachable: {exc}")
    if isinstance(exc, redis.ResponseError):
        return ConfigurationError(f"Redis at {where} refused {VARIABLE}'s settings: {exc}")
    return StoreError(f"Redis at {where}: {exc}")


def _refused_credentials(exc: redis.RedisError) -> bool:
    text = str(exc).upper()
    return isinstance(exc, redis.ResponseError) and text.startswith(("WRONGPASS", "NOAUTH"))


def ping(url: str, timeout_s: float = 5.0) -> bool:
    """Connect, authenticate and select the database once (True); else raise
    ``redis_error``'s verdict."""
    try:
        with redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        ) as client:
            return bool(client.ping())
    except redis.RedisError as exc:
        raise redis_error(exc, url) from None
