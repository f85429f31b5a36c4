"""Start-up checks of the source server: refuse to stream when results would be wrong."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdc_worker.errors import (
    CdcError,
    MissingDatabaseError,
    MissingGrantsError,
    ServerSettingsError,
    ServerUnreachable,
    SourceError,
)

REQUIRED = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL"}
ROW_METADATA = ("binlog_row_metadata", "FULL")
# MariaDB's log_bin_compress is fine: its compressed events are decoded (source/packets.py).
MUST_BE_OFF = ("binlog_transaction_compression", "binlog_alter_two_phase")
REPLICA_VARIABLES = ("log_slave_updates", "gtid_mode")
# Client errors of a server that is not there (yet): no socket, refused or timed out, gone.
UNREACHABLE_CODES = {2002, 2003, 2006, 2013}
ACCESS_DENIED, DATABASE_DENIED, UNKNOWN_DATABASE, NO_SUCH_TABLE = 1045, 1044, 1049, 1146
GRANT_LINE = re.compile(r"^GRANT (?P<privs>.+?) ON (?P<target>\S+) TO ", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the worker learned about the source at start-up."""

    version: str
    is_mariadb: bool
    is_replica: bool = False
    source_index: int = 0  # which of the configured servers (0: CDC_MYSQL_URL)


def server_variables(cursor: Any) -> dict[str, str]:
    """The global variables the checks read, lower-cased names, upper-cased values."""
    names = (*REQUIRED, ROW_METADATA[0], *MUST_BE_OFF, *REPLICA_VARIABLES, "version")
    placeholders = ", ".join(["%s"] * len(names))
    cursor.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})", names)
    return {str(name).lower(): str(value).upper() for name, value in cursor.fetchall()}


def settings_problems(variables: Mapping[str, str]) -> list[str]:
    """One line per server setting that must change, saying what to set."""
    problems = [
        f"set {name}={want} (it is {variables.get(name, 'unset')})"
        for name, want in REQUIRED.items()
        if variables.get(name) != want
    ]
    name, want = ROW_METADATA
    if variables.get(name) != want:
        problems.append(
            f"set {name}={want} (it is {variables.get(name, 'unset')}); without it rows "
            "arrive without column names and ENUMs decode to NULL"
        )
    problems += [
        f"set {off}=OFF (it is ON); the replication library cannot read such events"
        for off in MUST_BE_OFF
        if variables.get(off) == "ON"
    ]
    return problems


def replicating(cursor: Any) -> bool:
    """True while the server's replication threads run (MariaDB's ``Slaves_running``, which
    needs no privilege; MySQL 8 has no such status and reports False)."""
    cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Slaves_running', 'Slave_running')")
    return any(str(value).upper() not in {"0", "OFF"} for _, value in cursor.fetchall())


def replica_problems(variables: Mapping[str, str], is_replica: bool, needs_gtid: bool) -> list[str]:
    """A replica must write what it replicates to its own binlog; a failover list needs
    MySQL's GTIDs (MariaDB's are always on)."""
    problems = []
    if is_replica and variables.get("log_slave_updates") != "ON":
        problems.append(
            "this server is a replica and log_slave_updates is OFF: its binlog lacks the "
            "transactions it replicates; set log_slave_updates=ON or read the primary"
        )
    if needs_gtid and "gtid_mode" in variables and variables["gtid_mode"] != "ON":
        problems.append(
            f"set gtid_mode=ON (it is {variables['gtid_mode']}): CDC_MYSQL_FAILOVER_URLS "
            "resumes on another server by GTID only"
        )
    return problems


def grant_problems(grant_lines: list[str], database: str, is_mariadb: bool = True) -> list[str]:
    """Which of REPLICATION SLAVE, REPLICATION CLIENT and SELECT on the database is missing
    (and, on MySQL, RELOAD: its snapshots take a brief global read lock)."""
    global_privs: set[str] = set()
    db_privs: set[str] = set()
    wanted_targets = {f"`{database}`.*", f"{database}.*", f"`{database}`.%"}
    for line in grant_lines:
        match = GRANT_LINE.match(line)
        if not match:
            continue
        privs = {p.strip().upper() for p in match["privs"].split(",")}
        if match["target"] == "*.*":
            global_privs |= privs
        elif match["target"] in wanted_targets:
            db_privs |= privs
    missing = _missing(global_privs, db_privs, database)
    if not is_mariadb and not global_privs & {"RELOAD", "ALL PRIVILEGES"}:
        missing.append("RELOAD ON *.* (MySQL snapshots lock tables for an instant)")
    return missing


def _missing(global_privs: set[str], db_privs: set[str], database: str) -> list[str]:
    if "ALL PRIVILEGES" in global_privs:
        return []
    missing = []
    if not global_privs & {"REPLICATION SLAVE", "REPLICATION REPLICA"}:
        missing.append("REPLICATION SLAVE ON *.*")
    if not global_privs & {"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"}:
        missing.append("REPLICATION CLIENT ON *.*")
    if not (global_privs | db_privs) & {"SELECT", "ALL PRIVILEGES"}:
        missing.append(f"SELECT ON `{database}`.*")
    return missing


def connect_error(exc: Exception, where: str, database: str, variable: str) -> CdcError:
    """One line for a failed MySQL connection: ServerUnreachable when the server is not
    there (wait for it), else a SourceError naming what to fix. ``where``: user@host:port."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    address = where.rpartition("@")[2]
    if isinstance(getattr(exc, "original_exception", None), ssl.SSLError):
        return SourceError(
            f"cannot connect to {variable} ({where}) over TLS: {exc}; fix the URL's ssl_ "
            "options or the server's certificate"
        )
    if code in UNREACHABLE_CODES:
        return ServerUnreachable(f"MySQL at {address} ({variable}) is unreachable: {exc}")
    if code == ACCESS_DENIED:
        return SourceError(
            f"MySQL at {address} refused the user and password of {variable} ({where}): "
            "fix the password or the user in the URL"
        )
    if code == UNKNOWN_DATABASE:
        return MissingDatabaseError(missing_database(database, address, variable))
    if code == DATABASE_DENIED:
        return SourceError(
            f"database `{database}` on {address} does not exist or {variable}'s user may not "
            f"use it: create it, or GRANT its privileges to that user, or fix {variable}"
        )
    if code == NO_SUCH_TABLE:
        return SourceError(f"{exc.args[-1]} on {address}: run `cdc-worker migrate` first")
    return SourceError(f"{variable} ({where}): {exc}")


def missing_database(database: str, address: str, variable: str) -> str:
    return (
        f"database `{database}` does not exist on {address}: create it (CREATE DATABASE "
        f"`{database}`, then `cdc-worker migrate`) or fix the database name in {variable}"
    )


def database_exists(cursor: Any, database: str) -> bool:
    """Whether the server has ``database`` (as far as the user may see: a database the user
    has no privilege on is invisible, so this is asked only once its grants are there)."""
    cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
    return cursor.fetchone() is not None


def check_source(
    connection: Any, database: str, address: str = "the server", needs_gtid: bool = False
) -> ServerInfo:
    """Raise with a message naming every setting or grant to change; else describe the server."""
    with connection.cursor() as cursor:
        variables = server_variables(cursor)
        is_replica = replicating(cursor)
        cursor.execute("SHOW GRANTS")
        grants = [str(row[0]) for row in cursor.fetchall()]
        exists = database_exists(cursor, database)
    problems = settings_problems(variables) + replica_problems(variables, is_replica, needs_gtid)
    if problems:
        raise ServerSettingsError(
            "the source server's binlog settings are wrong for CDC: " + "; ".join(problems)
        )
    is_mariadb = "MARIADB" in variables.get("version", "")
    missing = grant_problems(grants, database, is_mariadb)
    if not exists and not missing:  # the user could see it: it is not there
        raise MissingDatabaseError(missing_database(database, address, "CDC_MYSQL_URL"))
    if not exists and missing == [f"SELECT ON `{database}`.*"]:
        # A database the user has no privilege on is invisible to it: say both.
        raise MissingDatabaseError(
            missing_database(database, address, "CDC_MYSQL_URL")
            + f"; if it exists, GRANT SELECT ON `{database}`.* to the configured user"
        )
    if missing:
        raise MissingGrantsError(
            "the configured MySQL user lacks privileges the worker needs: "
            + "; ".join(missing)
            + " (grant them to that user, e.g. GRANT REPLICATION SLAVE, REPLICATION CLIENT "
            "ON *.* TO ...; GRANT SELECT ON <database>.* TO ...)"
        )
    return ServerInfo(variables.get("version", ""), is_mariadb, is_replica)
