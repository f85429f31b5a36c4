"""Sentinel and lease settings: parsed, checked, and their secrets never shown."""

from __future__ import annotations

import json
import ssl

import pytest
from redis.sentinel import SentinelManagedSSLConnection

from cdc_worker.errors import ConfigurationError
from cdc_worker.settings import load_settings
from cdc_worker.store.connect import redis_client, url_options
from cdc_worker.store.lease import holder_name


def test_sentinels_are_a_list_of_host_ports() -> None:
    settings = load_settings(redis_sentinels="s1:26379, s2:26380,[::1]:26381")
    assert settings.sentinels == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert load_settings().sentinels == []


@pytest.mark.parametrize("raw", ["s1", "s1:", "s1:port", ":26379", "s1:26379,", "s1:70000"])
def test_a_malformed_sentinel_list_names_the_setting(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"CDC_REDIS_SENTINELS: .*host:port"):
        load_settings(redis_sentinels=raw)


def test_the_sentinel_password_is_masked_and_scrubbed() -> None:
    settings = load_settings(redis_sentinel_password="sentinel-secret-1")
    assert "sentinel-secret-1" not in json.dumps(settings.masked(), default=str)
    assert settings.masked()["redis_sentinel_password"] == "***"
    assert "sentinel-secret-1" in settings.secrets()


@pytest.mark.parametrize(
    ("name", "value"), [("leader_lease_s", "0.1"), ("api_read_from", "replicas")]
)
def test_bad_lease_or_read_mode_fails_fast(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"CDC_{name.upper()}"):
        load_settings(**{name: value})


def test_with_sentinels_the_url_gives_database_credentials_and_tls_but_not_the_host() -> None:
    options = url_options("rediss://app:pw@ignored-host:6380/3?ssl_cert_reqs=none")
    assert options["db"] == 3
    assert (options["username"], options["password"]) == ("app", "pw")
    assert options["ssl"] is True
    assert "host" not in options
    assert "port" not in options


def test_a_sentinel_client_builds_tls_connections_to_whatever_primary_it_is_told() -> None:
    settings = load_settings(
        redis_url="rediss://app:pw@ignored:6380/2?ssl_cert_reqs=none", redis_sentinels="s:1"
    )
    client = redis_client(settings)  # connects on first use only
    pool = client.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["ssl_cert_reqs"] in ("none", ssl.CERT_NONE)


def test_the_lease_token_names_host_and_pid() -> None:
    assert holder_name(b"web-1:4242:1f2e3d4c") == "web-1:4242"
    assert holder_name(None) is None
