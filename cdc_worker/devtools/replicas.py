"""Private MariaDB replicas for tests and benchmarks: start one, wait for it, promote it.

A replica replicates by GTID (``MASTER_USE_GTID``) with ``log_slave_updates=ON`` and
``gtid_strict_mode=ON``, so its binlog carries the primary's GTIDs unchanged and the worker
can tail it, or resume on it by GTID once it is promoted. Promotion is what an orchestrator
does: stop the replication threads, forget the primary, ``read_only=OFF``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from cdc_worker.devtools.localservers import (
    CDC_PASSWORD,
    CDC_USER,
    MariaDBServer,
    _root_cursor,
    start_mariadb,
)
from cdc_worker.errors import LocalServerError

REPLICA_FLAGS = ("--log-slave-updates=ON", "--gtid-strict-mode=ON", "--skip-slave-start")
CATCH_UP_TIMEOUT_S = 30.0


def replica_flags(server_id: int) -> list[str]:
    """mariadbd flags of a GTID replica with the given server id (read-only until promoted)."""
    return [f"--server-id={server_id}", "--read-only=ON", *REPLICA_FLAGS]


def start_mariadb_replica(
    base_dir: Path,
    primary: MariaDBServer,
    *,
    server_id: int = 2,
    extra_flags: Sequence[str] = (),
) -> MariaDBServer:
    """Start a private MariaDB replicating ``primary`` from its first GTID, caught up."""
    replica = start_mariadb(
        base_dir,
        database=primary.database,
        extra_flags=[*replica_flags(server_id), *extra_flags],
    )
    with _root_cursor(replica.port) as cursor:
        # Its own set-up (users, database) went to its binlog under its server id: forget it,
        # or strict mode would refuse the primary's lower sequence numbers.
        cursor.execute("RESET MASTER")
        cursor.execute("SET GLOBAL gtid_slave_pos = ''")
    replicate_from(replica, primary, "slave_pos")
    wait_caught_up(replica, primary)
    return replica


def replicate_from(replica: MariaDBServer, primary: MariaDBServer, use_gtid: str) -> None:
    """Point ``replica`` at ``primary`` by GTID and start the replication threads.

    ``use_gtid`` is ``slave_pos`` for a fresh replica, ``current_pos`` for a former primary
    rejoining (its own binlog holds where it stands).
    """
    with _root_cursor(replica.port) as cursor:
        cursor.execute("STOP SLAVE")
        cursor.execute(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER=%s, "
            f"MASTER_PASSWORD=%s, MASTER_CONNECT_RETRY=1, MASTER_USE_GTID={use_gtid}",
            (primary.port, CDC_USER, CDC_PASSWORD),
        )
        cursor.execute("START SLAVE")


def rejoin_as_replica(
    former: MariaDBServer, primary: MariaDBServer, *, server_id: int
) -> MariaDBServer:
    """Restart a stopped or killed former primary as a replica of ``primary``, caught up."""
    restarted = former.restart(replica_flags(server_id))
    replicate_from(restarted, primary, "current_pos")
    wait_caught_up(restarted, primary)
    return restarted


def gtid_binlog_pos(server: MariaDBServer) -> str:
    """The last GTID per domain in the server's binlog."""
    with _root_cursor(server.port) as cursor:
        cursor.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def wait_caught_up(
    replica: MariaDBServer, primary: MariaDBServer, timeout_s: float = CATCH_UP_TIMEOUT_S
) -> None:
    """Wait until the replica has applied everything the primary's binlog holds now."""
    position = gtid_binlog_pos(primary)
    if not position:
        return
    with _root_cursor(replica.port) as cursor:
        cursor.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout_s))
        row = cursor.fetchone()
    if row is None or row[0] != 0:
        raise LocalServerError(
            f"replica on port {replica.port} did not reach {position} within {timeout_s:g} s"
        )


def stop_replication(replica: MariaDBServer) -> None:
    """Stop the replica's threads (it keeps its data and stays read-only)."""
    with _root_cursor(replica.port) as cursor:
        cursor.execute("STOP SLAVE")


def promote(replica: MariaDBServer) -> float:
    """Make the replica a primary as an orchestrator would; returns the time.time() it ended."""
    with _root_cursor(replica.port) as cursor:
        cursor.execute("STOP SLAVE")
        cursor.execute("RESET SLAVE ALL")
        cursor.execute("SET GLOBAL read_only = OFF")
    return time.time()
