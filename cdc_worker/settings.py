"""The one settings object. Loaded by the entry point, passed down; nothing else reads env."""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote_plus, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from cdc_worker.errors import ConfigurationError

ENV_PREFIX = "CDC_"

# The default bound: at most about 150 MB of states with their rendered document parts
# (3 KB each). A rename fans out to every ticket of a department or status, so the tickets
# a catch-up touches come round again and again: on the benchmark's 24,500 tickets, 20,000
# states missed 75,490 times (the least recently used ones were always the next wanted),
# 50,000 states 31,321 times (each ticket once), and the catch-up ran 1.135x faster
# (3 alternating pairs) for 17 MiB more peak RSS.
STATE_CACHE_TICKETS = 50_000
# Query parameters PyMySQL takes as the password (SQLAlchemy passes them through).
MYSQL_PASSWORD_PARAMETERS = ("password", "passwd")
# A query parameter whose name holds one of these (any case) is a secret: masked everywhere.
SECRET_PARAMETER_WORDS = ("pass", "pwd", "secret", "token")
ADMIN_TOKEN_MIN_CHARS = 16


class Settings(BaseSettings):
    """Every knob of the worker, the API and the CLI; env names are ``CDC_`` + field name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    mysql_url: SecretStr = Field(
        default=SecretStr("mysql+pymysql://cdc:cdc@127.0.0.1:3306/helpdesk"),
        description="SQLAlchemy URL of the source database (user needs REPLICATION SLAVE, "
        "REPLICATION CLIENT and SELECT).",
    )
    mysql_failover_urls: SecretStr = Field(
        default=SecretStr(""),
        description="Other servers of CDC_MYSQL_URL's replication topology (comma-separated "
        "URLs of the same form and database), tried in order when the one in use stays "
        "unreachable; the worker resumes on them by GTID.",
    )
    source_failover_after_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds the source in use must stay unreachable before the worker "
        "switches to the next server of CDC_MYSQL_FAILOVER_URLS.",
    )
    admin_mysql_url: SecretStr | None = Field(
        default=None,
        description="URL with DDL/DML rights, used only by `migrate` and `seed`; "
        "defaults to CDC_MYSQL_URL.",
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/1"),
        description="Redis URL of the read model (database 1 by default).",
    )
    server_id: int = Field(
        default=4242, ge=1, le=2**32 - 1, description="Replica server id the worker uses."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON when stderr is not a terminal."
    )
    batch_max_rows: int = Field(
        default=5000, ge=1, le=1_000_000, description="Row changes per atomic Redis apply."
    )
    fan_out_step_tickets: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="Linked tickets rebuilt per atomic step of a fan-out (bounds memory).",
    )
    state_cache_tickets: int = Field(
        default=STATE_CACHE_TICKETS,
        ge=0,
        le=10_000_000,
        description="Ticket states the worker keeps in memory between batches (about 3 KB "
        "each), so a batch reads from Redis only the others; 0: none.",
    )
    binlog_reader: Literal["process", "thread"] = Field(
        default="process",
        description="process: read and decode the binlog, read snapshots, and read a full "
        "resync's next chunk ahead, in child processes beside the applier (uses a second "
        "core); thread: in the worker process.",
    )
    row_decoder: Literal["specialized", "library"] = Field(
        default="specialized",
        description="Row decoding: code compiled per table map, or the library's generic decoder.",
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, le=3600, description="Binlog heartbeat period asked of the server."
    )
    stall_timeout_s: float = Field(
        default=30.0, gt=0, description="No event nor heartbeat for this long: reconnect."
    )
    reconnect_backoff_max_s: float = Field(default=10.0, gt=0)
    snapshot_chunk_rows: int = Field(default=2000, ge=1, le=100_000)
    dead_letter_max_len: int = Field(default=10_000, ge=1)
    changes: bool = Field(
        default=True,
        description="Change feed (on|off): one stream entry per atomic write of documents.",
    )
    changes_max_len: int = Field(
        default=100_000, ge=1, description="Approximate cap of the change-feed stream."
    )
    api_max_streams: int = Field(
        default=1000, ge=1, description="Concurrent /tickets/events streams; 503 beyond."
    )
    api_stream_heartbeat_s: float = Field(
        default=15.0, gt=0, le=300, description="Idle /tickets/events streams send a comment."
    )
    api_host: str = Field(default="127.0.0.1", description="Read API listen address.")
    api_port: int = Field(default=8080, ge=1, le=65535, description="Read API port.")
    api_max_ids: int = Field(default=100, ge=1, le=1000, description="Max ids per batch read.")
    api_max_limit: int = Field(default=200, ge=1, le=5000, description="Max page size.")
    api_max_body_bytes: int = Field(
        default=8192,
        ge=256,
        le=1_048_576,
        description="Largest request body the API reads; 413 beyond it, unread.",
    )
    api_max_response_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=65_536,
        le=1024 * 1024 * 1024,
        description="Documents per response, in bytes: a batch read beyond it is a 413, a "
        "listing page ends early (one document at least).",
    )
    api_list_scan_budget: int = Field(
        default=2000,
        ge=10,
        le=1_000_000,
        description="Index entries one listing call may visit in Redis; the page ends "
        "early (short or empty, with a cursor) when it is spent.",
    )
    api_redis_pool_size: int = Field(
        default=64, ge=1, le=10_000, description="Redis connections of the API's pool."
    )
    api_redis_pool_wait_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long a request waits for a free pooled Redis connection before 503.",
    )
    api_max_connections: int = Field(
        default=4096,
        ge=16,
        le=1_000_000,
        description="Open client connections plus requests in flight beyond which the API "
        "answers 503 (needs as many file descriptors).",
    )
    api_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A new connection must send a whole request head within this; else closed.",
    )
    api_keep_alive_s: float = Field(
        default=5.0, gt=0, le=600, description="Idle keep-alive connections close after this."
    )
    max_lag_s: float = Field(default=30.0, gt=0, description="/readyz fails above this lag.")
    heartbeat_max_age_s: float = Field(
        default=15.0, gt=0, description="/readyz fails when the worker beat longer ago."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the API's /admin endpoints, 16 characters at least; unset "
        "or empty turns them off.",
    )
    leader_lease_s: float = Field(
        default=3.0,
        ge=0.5,
        le=60,
        description="TTL of the active worker's lease in Redis; a standby takes over this long "
        "after the active worker died (renewed three times per TTL).",
    )
    redis_sentinels: str | None = Field(
        default=None,
        description="host:port,host:port,... of Redis Sentinels: find the primary (and the "
        "API's replicas) through them; CDC_REDIS_URL then gives only the database, user, "
        "password and TLS.",
    )
    redis_sentinel_service: str = Field(
        default="ticket-sync",
        min_length=1,
        description="The name the Sentinels monitor the read model's Redis under.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the Sentinels themselves (requirepass), if any."
    )
    api_read_from: Literal["primary", "replica"] = Field(
        default="primary",
        description="primary: the API reads the Redis primary; replica: documents and "
        "listings from a replica the Sentinels list (the primary when none answers).",
    )
    worker_http_host: str = "127.0.0.1"
    worker_http_port: int = Field(
        default=9108, ge=0, le=65535, description="Worker /metrics port; 0 turns it off."
    )
    liveness_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="The worker's /healthz answers 503 when its apply loop made no progress "
        "(no batch applied, no heartbeat written) for longer than this.",
    )
    source_head_poll_s: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="How often the worker reads the source's binlog head (SHOW BINARY LOGS) "
        "for cdc_source_behind_seconds and cdc_source_behind_bytes.",
    )

    @field_validator("mysql_url", "admin_mysql_url")
    @classmethod
    def _mysql_url_is_sqlalchemy_mysql(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = _parse_url(value.get_secret_value())
        if not url.drivername.startswith(("mysql", "mariadb")):
            raise ValueError("must be a mysql+pymysql:// URL")
        if not url.database:
            raise ValueError("must name the database, e.g. .../helpdesk")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise ValueError(f"port {url.port} is not a TCP port (1-65535)")
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        token = value.get_secret_value().strip()
        if len(token) < ADMIN_TOKEN_MIN_CHARS:
            raise ValueError(f"must be at least {ADMIN_TOKEN_MIN_CHARS} characters (unset: off)")
        return SecretStr(token)

    @field_validator("mysql_failover_urls")
    @classmethod
    def _failover_urls_are_mysql_urls(cls, value: SecretStr) -> SecretStr:
        for raw in _split_urls(value.get_secret_value()):
            cls._mysql_url_is_sqlalchemy_mysql(SecretStr(raw))
        return value

    @model_validator(mode="after")
    def _failover_urls_name_the_same_database(self) -> Settings:
        wanted = self.mysql.database
        for url in self.failover_mysql:
            if url.database != wanted:
                raise ValueError(
                    f"CDC_MYSQL_FAILOVER_URLS: {url.host}:{url.port or 3306} names database "
                    f"{url.database!r}, CDC_MYSQL_URL {wanted!r}: they must be the same"
                )
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            port = urlsplit(raw).port
        except ValueError:  # "Port out of range 0-65535", "Port could not be cast ..."
            raise ValueError("its port is not a TCP port (1-65535)") from None
        if port == 0:
            raise ValueError("its port is not a TCP port (1-65535)")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_ports(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            sentinel_addresses(value)
        return value or None

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The Sentinels' addresses; empty when Redis is reached directly."""
        return sentinel_addresses(self.redis_sentinels) if self.redis_sentinels else []

    @property
    def mysql(self) -> URL:
        """The parsed source URL (holds the password: never log it, use ``masked``); a
        ``?password=`` or ``?passwd=`` parameter (PyMySQL's names) becomes its password, so
        the binlog stream, the checks and the snapshots all log in the same way."""
        return _password_from_query(_parse_url(self.mysql_url.get_secret_value()))

    @property
    def failover_mysql(self) -> list[URL]:
        """The parsed failover URLs, in order (hold passwords: never log them)."""
        raws = _split_urls(self.mysql_failover_urls.get_secret_value())
        return [_password_from_query(_parse_url(raw)) for raw in raws]

    @property
    def source_urls(self) -> list[URL]:
        """Every source server, CDC_MYSQL_URL first, then the failover URLs in order."""
        return [self.mysql, *self.failover_mysql]

    @property
    def admin_url(self) -> str:
        """The URL migrations and seeding use (holds the password: never log it)."""
        chosen = self.admin_mysql_url or self.mysql_url
        return chosen.get_secret_value()

    def secrets(self) -> list[str]:
        """Every password in the settings (as written and percent-decoded), for the masker."""
        found = []
        for value in (self.mysql_url, self.admin_mysql_url, self.redis_url):
            if value is not None:
                found += url_secrets(value.get_secret_value())
        for raw in _split_urls(self.mysql_failover_urls.get_secret_value()):
            found += url_secrets(raw)
        for token in (self.admin_token, self.redis_sentinel_password):
            if token is not None and token.get_secret_value():
                found.append(token.get_secret_value())
        return found

    def masked(self) -> dict[str, object]:
        """The effective configuration with every password replaced, for start-up logs."""
        shown: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in PLAIN_SECRETS:
                value = "***" if value is not None else None
            elif name == "mysql_failover_urls":
                value = ",".join(mask_url(raw) for raw in _split_urls(value.get_secret_value()))
            elif isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value())
            shown[name] = value
        return shown


PLAIN_SECRETS = ("admin_token", "redis_sentinel_password")


def sentinel_addresses(raw: str) -> list[tuple[str, int]]:
    """``"h1:26379, h2:26379"`` -> ``[("h1", 26379), ("h2", 26379)]``; ValueError if malformed."""
    found = []
    for part in raw.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"must be host:port,host:port,... ({part.strip()!r} is not)")
        found.append((host.strip("[]"), int(port)))
    return found


def _split_urls(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _parse_url(raw: str) -> URL:
    try:
        return make_url(raw)
    except ArgumentError:
        raise ValueError("is not a valid URL") from None


def _password_from_query(url: URL) -> URL:
    for name in MYSQL_PASSWORD_PARAMETERS:
        if name in url.query:
            value = url.query[name]
            password = value[-1] if isinstance(value, tuple) else value
            url = url.difference_update_query([name]).set(password=password)
    return url


def secret_parameter(name: str) -> bool:
    """A query parameter that holds a password (``password``, ``passwd``, ``pwd``,
    ``ssl_key_password``... in any case) or a token."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMETER_WORDS)


def url_secrets(raw: str) -> list[str]:
    """The URL's password and secret query parameter values, as written and decoded."""
    split = urlsplit(raw)
    written = [split.netloc.rpartition("@")[0].partition(":")[2]] if "@" in split.netloc else []
    for pair in split.query.replace(";", "&").split("&"):
        name, _, value = pair.partition("=")
        if secret_parameter(unquote_plus(name)):
            written.append(value)
    found = [w for w in written if w] + [unquote_plus(w) for w in written if w]
    return sorted(set(found))


def mask_url(raw: str) -> str:
    """``scheme://user:secret@host/db?password=secret`` -> ``scheme://user:***@host/db?password=***``."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return raw
    rest, question, query = rest.partition("?")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user, colon, _password = credentials.partition(":")
        rest = f"{user}{':***' if colon else ''}@{host}"
    pairs = [_masked_pair(pair) for pair in query.split("&")] if question else []
    return f"{scheme}://{rest}{question}{'&'.join(pairs)}"


def _masked_pair(pair: str) -> str:
    name, equals, _value = pair.partition("=")
    return f"{name}=***" if equals and secret_parameter(unquote_plus(name)) else pair


def load_settings(**overrides: object) -> Settings:
    """Read ``CDC_`` variables; raise ConfigurationError naming each bad one, without values."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else err["msg"].removeprefix("Value error, ")  # across settings: it names them
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
