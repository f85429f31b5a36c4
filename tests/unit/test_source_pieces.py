"""Pure parts of the source adapter: server checks, GTID state, DDL detection, checkpoints."""

from __future__ import annotations

import pickle

import pytest

from cdc_worker.checkpoint import Checkpoint, Position
from cdc_worker.source.binlog import GtidState, data_changing_ddl
from cdc_worker.source.checks import grant_problems, settings_problems

GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "log_bin_compress": "OFF",
}


def test_good_server_settings_raise_no_problem() -> None:
    assert settings_problems(GOOD) == []


@pytest.mark.parametrize(
    ("name", "value", "advice"),
    [
        ("log_bin", "OFF", "set log_bin=ON"),
        ("binlog_format", "MIXED", "set binlog_format=ROW"),
        ("binlog_row_image", "MINIMAL", "set binlog_row_image=FULL"),
        ("binlog_row_metadata", "NO_LOG", "set binlog_row_metadata=FULL"),
        ("log_bin_compress", "ON", "set log_bin_compress=OFF"),
        ("binlog_transaction_compression", "ON", "set binlog_transaction_compression=OFF"),
        ("binlog_alter_two_phase", "ON", "set binlog_alter_two_phase=OFF"),
    ],
)
def test_each_wrong_setting_is_named_with_its_fix(name: str, value: str, advice: str) -> None:
    [problem] = settings_problems({**GOOD, name: value})
    assert problem.startswith(advice)


def test_mariadb_grants_with_binlog_monitor_are_enough() -> None:
    grants = [
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`127.0.0.1` IDENTIFIED BY ...",
        "GRANT SELECT ON `helpdesk`.* TO `cdc`@`127.0.0.1`",
    ]
    assert grant_problems(grants, "helpdesk") == []


def test_missing_grants_are_each_named() -> None:
    grants = ["GRANT SELECT ON `other`.* TO `cdc`@`%`"]
    assert grant_problems(grants, "helpdesk") == [
        "REPLICATION SLAVE ON *.*",
        "REPLICATION CLIENT ON *.*",
        "SELECT ON `helpdesk`.*",
    ]


def test_all_privileges_cover_everything() -> None:
    grants = ["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]
    assert grant_problems(grants, "helpdesk") == []


def test_gtid_state_keeps_the_last_gtid_of_each_domain() -> None:
    state = GtidState("0-1-10,1-2-5")
    state.see("0-1-11")
    state.see("2-1-1")
    assert str(state) == "0-1-11,1-2-5,2-1-1"


@pytest.mark.parametrize(
    ("query", "changes_data"),
    [
        ("TRUNCATE TABLE attachments", True),
        ("truncate `helpdesk`.`tickets`", True),
        ("DROP TABLE IF EXISTS tags", True),
        ("RENAME TABLE comments TO old_comments", True),
        ("ALTER TABLE tickets ADD COLUMN x INT", False),
        ("ALTER TABLE tickets ADD INDEX ix_x (title)", False),
        ("ALTER TABLE tickets DROP COLUMN description", True),
        ("ALTER TABLE `helpdesk`.`attachments` MODIFY filename VARCHAR(10)", True),
        ("ALTER TABLE tags RENAME COLUMN name TO label", True),
        ("ALTER TABLE unrelated DROP COLUMN x", False),
        ("TRUNCATE TABLE unrelated_table", False),
        ("DROP TABLE tickets_archive", False),
        ("COMMIT", False),
    ],
)
def test_ddl_that_changes_tracked_rows_is_recognised(query: str, changes_data: bool) -> None:
    assert data_changing_ddl(query) is changes_data


def test_a_checkpoint_round_trips_through_its_stored_form() -> None:
    checkpoint = Checkpoint(3, Position("mysql-bin.000007", 1234, "0-1-99"), 1795300000.25)
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint


def test_mysql_also_needs_reload_for_its_snapshot_lock() -> None:
    grants = [
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`",
        "GRANT SELECT ON `helpdesk`.* TO `cdc`@`%`",
    ]
    assert grant_problems(grants, "helpdesk", is_mariadb=True) == []
    [problem] = grant_problems(grants, "helpdesk", is_mariadb=False)
    assert problem.startswith("RELOAD ON *.*")


def test_binlog_positions_order_by_file_number_then_offset() -> None:
    assert Position("mysql-bin.000009", 900).precedes(Position("mysql-bin.000010", 4))
    assert Position("mysql-bin.999999", 900).precedes(Position("mysql-bin.1000000", 4))
    assert Position("mysql-bin.000010", 4).precedes(Position("mysql-bin.000010", 5))
    assert not Position("mysql-bin.000010", 5).precedes(Position("mysql-bin.000010", 5))


def test_chunks_cross_the_reader_queue_whole_with_row_changes_as_themselves() -> None:
    from multiprocessing.reduction import ForkingPickler

    from cdc_worker.source.binlog import Chunk
    from cdc_worker.source.reader_process import _chunk, _flat
    from projections.changes import Op, RowChange, delete, insert

    changes = [
        insert("tickets", {"id": 1, "title": "ü"}, "mysql-bin.000001:10"),
        RowChange("tags", Op.UPDATE, {"id": 2}, {"id": 2, "name": "x"}, "f:11", False),
        delete("comments", {"id": 3, "ticket_id": 1}),
    ]
    sent = Chunk(changes, Position("mysql-bin.000001", 99, "0-1-5"), 1.5, "TRUNCATE tags")
    received = _chunk(pickle.loads(ForkingPickler.dumps(_flat(sent))))
    assert received == sent
    assert all(type(c) is RowChange for c in received.changes)
    assert [c.op for c in received.changes] == [Op.INSERT, Op.UPDATE, Op.DELETE]
    assert received.changes[1].op is Op.UPDATE
    assert received.changes[1].identity() == "tags:2"
