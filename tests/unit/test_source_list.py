"""When the worker leaves an unreachable source server, and what it tells about servers."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import make_url

from cdc_worker.checkpoint import Position
from cdc_worker.errors import ConfigurationError
from cdc_worker.observability.health import verdict
from cdc_worker.settings import load_settings
from cdc_worker.source.failover import SourceList, server_name

# Port 1 on 127.0.0.1: nothing listens there, a connection is refused at once.
CLOSED = "mysql+pymysql://cdc:pw-secret@127.0.0.1:1/helpdesk"


def test_a_failover_falls_due_only_after_the_server_stayed_unreachable_long_enough() -> None:
    sources = SourceList([make_url(CLOSED), make_url(CLOSED)], failover_after_s=10)
    assert sources.seconds_until_due(0) == math.inf
    assert sources.after_failure(now_s=100) is None
    assert sources.seconds_until_due(104) == 6
    assert sources.after_failure(now_s=105) is None  # not yet due: no other server tried


def test_when_no_other_server_is_usable_the_next_attempt_waits_another_period() -> None:
    sources = SourceList([make_url(CLOSED), make_url(CLOSED)], failover_after_s=10)
    sources.after_failure(now_s=100)
    assert sources.after_failure(now_s=110) is None
    assert sources.index == 0
    assert sources.seconds_until_due(110) == 10


def test_a_single_server_never_falls_due() -> None:
    sources = SourceList([make_url(CLOSED)], failover_after_s=1)
    sources.after_failure(now_s=0)
    assert sources.seconds_until_due(50) == math.inf


def test_a_checkpoint_without_gtid_is_trusted_only_on_the_server_it_came_from() -> None:
    sources = SourceList([make_url(CLOSED)], failover_after_s=1)
    assert sources.lost(Position("mysql-bin.000001", 400), is_mariadb=False) == []
    sources.switched = True
    assert sources.lost(Position("mysql-bin.000001", 400), is_mariadb=False) is None
    sources.trust_current()
    assert sources.lost(Position("mysql-bin.000001", 400), is_mariadb=False) == []


def test_servers_are_named_by_host_and_port_without_credentials() -> None:
    assert server_name(make_url(CLOSED)) == "127.0.0.1:1"
    assert server_name(make_url("mysql+pymysql://u:p@db.internal/helpdesk")) == "db.internal:3306"


def test_failover_urls_are_parsed_masked_and_their_passwords_kept_secret() -> None:
    settings = load_settings(
        mysql_failover_urls="mysql+pymysql://a:pw-one@h2:3307/helpdesk, "
        "mysql+pymysql://b:pw-two@h3/helpdesk"
    )
    assert [server_name(url) for url in settings.source_urls][1:] == ["h2:3307", "h3:3306"]
    shown = str(settings.masked()["mysql_failover_urls"])
    assert "pw-one" not in shown
    assert "pw-two" not in shown
    assert {"pw-one", "pw-two"} <= set(settings.secrets())
    assert settings.source_failover_after_s == 10


def test_failover_urls_naming_another_database_are_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="CDC_MYSQL_FAILOVER_URLS") as caught:
        load_settings(mysql_failover_urls="mysql+pymysql://a:pw-one@h2/other")
    assert "pw-one" not in str(caught.value)


def test_readiness_names_the_source_server_from_the_heartbeat() -> None:
    beat = b'{"at_s": 100.0, "lag_s": 0.5, "position": "x", "source": "10.0.0.2:3306"}'
    assert verdict(b"{}", beat, 101.0, 30, 15).source == "10.0.0.2:3306"
