"""Start-up checks of the source server: refuse to stream when results would be wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdc_worker.errors import MissingGrantsError, ServerSettingsError

REQUIRED = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL"}
ROW_METADATA = ("binlog_row_metadata", "FULL")
# MariaDB's log_bin_compress is fine: its compressed events are decoded (source/packets.py).
MUST_BE_OFF = ("binlog_transaction_compression", "binlog_alter_two_phase")
GRANT_LINE = re.compile(r"^GRANT (?P<privs>.+?) ON (?P<target>\S+) TO ", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the worker learned about the source at start-up."""

    version: str
    is_mariadb: bool


def server_variables(cursor: Any) -> dict[str, str]:
    """The global variables the checks read, lower-cased names, upper-cased values."""
    names = (*REQUIRED, ROW_METADATA[0], *MUST_BE_OFF, "version")
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


def check_source(connection: Any, database: str) -> ServerInfo:
    """Raise with a message naming every setting or grant to change; else describe the server."""
    with connection.cursor() as cursor:
        variables = server_variables(cursor)
        cursor.execute("SHOW GRANTS")
        grants = [str(row[0]) for row in cursor.fetchall()]
    problems = settings_problems(variables)
    if problems:
        raise ServerSettingsError(
            "the source server's binlog settings are wrong for CDC: " + "; ".join(problems)
        )
    is_mariadb = "MARIADB" in variables.get("version", "")
    missing = grant_problems(grants, database, is_mariadb)
    if missing:
        raise MissingGrantsError(
            "the configured MySQL user lacks privileges the worker needs: "
            + "; ".join(missing)
            + " (grant them to that user, e.g. GRANT REPLICATION SLAVE, REPLICATION CLIENT "
            "ON *.* TO ...; GRANT SELECT ON <database>.* TO ...)"
        )
    return ServerInfo(version=variables.get("version", ""), is_mariadb=is_mariadb)
