"""GTID positions: a checkpoint inside a server's history, or the transactions it lost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_worker.source.gtid import (
    GtidSet,
    MariadbGtid,
    MysqlGtidTracker,
    lost_transactions,
    mariadb_lost,
    mysql_lost,
    parse_mariadb,
)

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "9f0e8c2a-1b2c-11ef-8000-0242ac120002"


def test_a_mariadb_position_parses_into_one_gtid_per_domain() -> None:
    assert parse_mariadb("0-1-13,1-2-5") == [MariadbGtid(0, 1, 13), MariadbGtid(1, 2, 5)]
    assert parse_mariadb("") == []
    with pytest.raises(ValueError, match="not a MariaDB GTID"):
        parse_mariadb("0-1")


def test_a_checkpoint_the_server_reached_or_passed_lost_nothing() -> None:
    assert mariadb_lost("0-1-13", "0-1-13") == []
    assert mariadb_lost("0-1-10", "0-1-13,0-2-20") == []
    assert mariadb_lost("", "0-1-13") == []


def test_transactions_of_the_dead_primary_after_the_fork_are_lost() -> None:
    # The replica had 0-1-13 when replication stopped; the primary went on to 0-1-16, the
    # read model applied them; the promoted replica then wrote 0-2-14 onwards.
    assert mariadb_lost("0-1-16", "0-1-13,0-2-20") == ["0-1-14..0-1-16"]
    assert mariadb_lost("0-1-14", "0-1-13") == ["0-1-14"]


def test_a_history_the_server_never_knew_is_lost_from_its_first_transaction() -> None:
    assert mariadb_lost("0-7-5,1-1-3", "0-1-9,1-1-3") == ["0-7-1..0-7-5"]
    assert mariadb_lost("2-1-4", "0-1-9") == ["2-1-1..2-1-4"]


def test_a_mysql_gtid_set_parses_merges_and_prints_as_mysql_does() -> None:
    text = f"{UUID_B}:1-3,\n{UUID_A.upper()}:1-5:7:6"
    assert str(GtidSet.parse(text)) == f"{UUID_A}:1-7,{UUID_B}:1-3"
    assert str(GtidSet.parse(f"{UUID_A}:1-5:tag_x:1-2")) == f"{UUID_A}:1-5,{UUID_A}:tag_x:1-2"
    assert not GtidSet.parse("")
    for bad in (f"{UUID_A}:0-3", f"{UUID_A}:5-3", f"{UUID_A}:x-3", f"{UUID_A}::3"):
        with pytest.raises(ValueError, match=r"GTID|empty"):
            GtidSet.parse(bad)


def test_a_mysql_checkpoint_inside_gtid_executed_lost_nothing() -> None:
    assert mysql_lost(f"{UUID_A}:1-100", f"{UUID_A}:1-120,{UUID_B}:1-4") == []
    assert lost_transactions(f"{UUID_A}:1-100", f"{UUID_A}:1-100", is_mariadb=False) == []


def test_mysql_transactions_missing_from_gtid_executed_are_reported_by_source() -> None:
    checkpoint = f"{UUID_A}:1-105,{UUID_B}:1-3"
    executed = f"{UUID_A}:1-100:103,{UUID_B}:1-2"
    assert mysql_lost(checkpoint, executed) == [f"{UUID_A}:101-102:104-105", f"{UUID_B}:3"]


def test_the_tracker_follows_the_stream_from_a_starting_set() -> None:
    tracker = MysqlGtidTracker(f"{UUID_A}:1-5")
    tracker.see(f"{UUID_A}:6")
    tracker.see(f"{UUID_B}:1")
    assert str(tracker) == f"{UUID_A}:1-6,{UUID_B}:1"


def test_lost_transactions_picks_the_flavour() -> None:
    assert lost_transactions("0-1-16", "0-1-13", is_mariadb=True) == ["0-1-14..0-1-16"]


transactions = st.sets(st.tuples(st.sampled_from([UUID_A, UUID_B]), st.integers(1, 60)))


def as_set(gtids: set[tuple[str, int]]) -> GtidSet:
    result = GtidSet()
    for source, number in gtids:
        result.add(f"{source}:{number}")
    return result


def members(gtid_set: GtidSet) -> set[tuple[str, int]]:
    return {
        (source, n)
        for source, spans in gtid_set.intervals.items()
        for first, last in spans
        for n in range(first, last + 1)
    }


@given(transactions)
def test_a_gtid_set_holds_exactly_what_was_added_and_prints_back_the_same(
    gtids: set[tuple[str, int]],
) -> None:
    built = as_set(gtids)
    assert members(built) == gtids
    assert GtidSet.parse(str(built)) == built


@given(transactions, transactions)
def test_set_difference_and_inclusion_agree_with_python_sets(
    left: set[tuple[str, int]], right: set[tuple[str, int]]
) -> None:
    assert members(as_set(left) - as_set(right)) == left - right
    assert (as_set(left) <= as_set(right)) == (left <= right)
    lost = mysql_lost(str(as_set(left)), str(as_set(right)))
    assert members(GtidSet.parse(",".join(lost))) == left - right


mariadb_states = st.dictionaries(
    st.tuples(st.integers(0, 2), st.integers(1, 3)), st.integers(1, 50), max_size=6
)


def state_text(state: dict[tuple[int, int], int]) -> str:
    return ",".join(f"{d}-{s}-{n}" for (d, s), n in state.items())


@given(mariadb_states, mariadb_states)
def test_a_mariadb_checkpoint_loses_exactly_the_sequence_numbers_the_server_lacks(
    server: dict[tuple[int, int], int], checkpoint: dict[tuple[int, int], int]
) -> None:
    lost = mariadb_lost(state_text(checkpoint), state_text(server))
    expected = {key for key, seq in checkpoint.items() if server.get(key, 0) < seq}
    assert len(lost) == len(expected)
    for text in lost:
        first, _, last = text.partition("..")
        head, tail = parse_mariadb(first)[0], parse_mariadb(last or first)[0]
        assert (head.domain, head.server) in expected
        assert head.seq == server.get((head.domain, head.server), 0) + 1
        assert tail.seq == checkpoint[(tail.domain, tail.server)]


def test_the_stream_tracks_mariadb_positions_or_mysql_sets_by_flavour() -> None:
    from cdc_worker.source.binlog import gtid_state

    mariadb = gtid_state(True, "0-1-5")
    mariadb.see("0-2-6")
    assert str(mariadb) == "0-2-6"
    assert str(gtid_state(True, None)) == ""  # no GTID: the checkpoint keeps file and offset
    mysql = gtid_state(False, f"{UUID_A}:1-5")
    mysql.see(f"{UUID_A}:6")
    assert str(mysql) == f"{UUID_A}:1-6"
    assert str(gtid_state(False, None)) == ""


def test_a_mysql_tracker_ignores_mariadb_gtids() -> None:
    tracker = MysqlGtidTracker(None)
    tracker.see("0-1-29")
    assert str(tracker) == ""
