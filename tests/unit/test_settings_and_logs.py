"""Settings fail fast with the variable's name; logs never carry a password."""

from __future__ import annotations

import json

import pytest
import structlog

from cdc_worker.errors import ConfigurationError
from cdc_worker.observability.logs import SecretMasker, configure_logging
from cdc_worker.settings import load_settings, mask_url


def test_defaults_point_the_read_model_at_redis_database_1() -> None:
    settings = load_settings()
    assert settings.redis_url.get_secret_value().endswith("/1")


def test_an_invalid_value_names_the_variable_and_not_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDC_MYSQL_URL", "postgresql://app:s3cr3t-pw@db/helpdesk")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CDC_MYSQL_URL" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


@pytest.mark.parametrize("value", ["-1", "many", "10000001"])
def test_a_bad_state_cache_bound_fails_fast_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CDC_STATE_CACHE_TICKETS", value)
    with pytest.raises(ConfigurationError, match="CDC_STATE_CACHE_TICKETS"):
        load_settings()


def test_masked_settings_hide_every_password() -> None:
    settings = load_settings(
        mysql_url="mysql+pymysql://cdc:pw-one@h:3306/helpdesk",
        redis_url="redis://default:pw-two@h:6379/1",
    )
    shown = json.dumps(settings.masked(), default=str)
    assert "pw-one" not in shown
    assert "pw-two" not in shown
    assert "cdc:***@h:3306" in shown
    assert sorted(settings.secrets()) == ["pw-one", "pw-two"]


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("mysql+pymysql://cdc:secret@h/db", "mysql+pymysql://cdc:***@h/db"),
        ("redis://h:6379/1", "redis://h:6379/1"),
        ("redis://:only-pw@h/1", "redis://:***@h/1"),
        ("redis://h:6379/1?password=s3cr%40t", "redis://h:6379/1?password=***"),
        (
            "redis://h/1?db=1&PassWord=x&ssl_password=y",
            "redis://h/1?db=1&PassWord=***&ssl_password=***",
        ),
        (
            "mysql+pymysql://cdc@h/db?charset=utf8mb4&passwd=a&PWD=b&pass=c&ssl_key_password=d",
            "mysql+pymysql://cdc@h/db?charset=utf8mb4&passwd=***&PWD=***&pass=***&ssl_key_password=***",
        ),
        ("unix:///run/redis.sock?db=1&password=z", "unix:///run/redis.sock?db=1&password=***"),
        ("mysql+pymysql://cdc:pw@h/db?password=other", "mysql+pymysql://cdc:***@h/db?password=***"),
    ],
)
def test_mask_url_hides_only_the_password(raw: str, masked: str) -> None:
    assert mask_url(raw) == masked


def test_passwords_in_query_parameters_are_secrets_as_written_and_decoded() -> None:
    settings = load_settings(
        mysql_url="mysql+pymysql://cdc@h:3306/helpdesk?passwd=my%2Bpw&ssl_key_password=kpw",
        redis_url="redis://h:6379/1?db=1&Password=r%40pw",
        admin_mysql_url="mysql+pymysql://root@h/helpdesk?pwd=admin-pw",
    )
    assert sorted(settings.secrets()) == sorted(
        ["my%2Bpw", "my+pw", "kpw", "r%40pw", "r@pw", "admin-pw"]
    )
    shown = json.dumps(settings.masked(), default=str)
    assert not [s for s in settings.secrets() if s in shown]


def test_a_mysql_password_given_as_a_query_parameter_logs_every_connection_in() -> None:
    settings = load_settings(mysql_url="mysql+pymysql://cdc@h/helpdesk?passwd=pw&charset=utf8mb4")
    assert settings.mysql.password == "pw"
    assert dict(settings.mysql.query) == {"charset": "utf8mb4"}


def test_the_log_masker_scrubs_secret_query_parameters_of_any_url() -> None:
    masker = SecretMasker()
    event = {"event": "x", "error": "cannot reach redis://h/1?db=1&PASSWORD=zz9&x=1 (refused)"}
    assert masker(None, "error", event)["error"] == (
        "cannot reach redis://h/1?db=1&PASSWORD=***&x=1 (refused)"
    )


def test_the_log_masker_scrubs_urls_and_known_secrets_anywhere_in_a_line() -> None:
    masker = SecretMasker(["hunter2"])
    event = {"event": "failed", "url": "mysql://u:pa55@h/db", "error": ValueError("x hunter2 y")}
    masked = masker(None, "error", event)
    assert masked["url"] == "mysql://u:***@h/db"
    assert masked["error"] == "x *** y"


def test_json_logs_carry_context_and_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", ["topsecret"])
    structlog.contextvars.bind_contextvars(position="mysql-bin.000001:4")
    try:
        structlog.get_logger().info("hello", dsn="mysql://a:topsecret@h/d", note="topsecret!")
    finally:
        structlog.contextvars.clear_contextvars()
        # configure_logging bound this test's captured stderr, closed once the test ends:
        # later tests in the same process (the worker's threads) must not log into it.
        structlog.reset_defaults()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["position"] == "mysql-bin.000001:4"
    assert "topsecret" not in json.dumps(line)


def test_the_composition_root_freezes_start_up_and_collects_young_objects_less_often() -> None:
    import gc

    from cdc_worker.bootstrap import GC_THRESHOLDS, bootstrap
    from cdc_worker.source.checks import ServerInfo

    before = gc.get_threshold()
    built_before = {"held": [1]}  # a container the collector tracks
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults (a worker bootstrapped earlier in-process)
    try:
        app = bootstrap(load_settings(), ServerInfo("10.11.6-MariaDB", is_mariadb=True))
        assert gc.get_threshold() == GC_THRESHOLDS
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert not any(o is built_before for o in gc.get_objects())  # frozen: never walked
        app.close()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    ("field", "url", "named"),
    [
        ("redis_url", "redis://:pw-7x@127.0.0.1:99999/1", "CDC_REDIS_URL"),
        ("redis_url", "redis://127.0.0.1:0/1", "CDC_REDIS_URL"),
        ("mysql_url", "mysql+pymysql://cdc:pw-7x@127.0.0.1:99999/helpdesk", "CDC_MYSQL_URL"),
        ("admin_mysql_url", "mysql+pymysql://root:pw-7x@h:70000/helpdesk", "CDC_ADMIN_MYSQL_URL"),
    ],
)
def test_a_port_outside_1_to_65535_is_a_configuration_error(
    field: str, url: str, named: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(**{field: url})
    assert named in str(error.value)
    assert "TCP port" in str(error.value)
    assert "pw-7x" not in str(error.value)
