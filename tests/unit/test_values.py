"""Column values from the binlog library or drivers, normalized for documents."""

from __future__ import annotations

import datetime as dt

import pytest

from projections.values import BadValue, as_bool, as_int, format_ts, optional_text


def test_timestamps_always_have_six_fractional_digits_and_a_z() -> None:
    assert format_ts(dt.datetime(2026, 11, 22, 9, 5, 3)) == "2026-11-22T09:05:03.000000Z"
    assert format_ts(dt.datetime(2026, 11, 22, 9, 5, 3, 120)) == "2026-11-22T09:05:03.000120Z"


def test_an_aware_timestamp_is_converted_to_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert format_ts(dt.datetime(2026, 1, 1, 1, 0, tzinfo=paris)) == "2026-01-01T00:00:00.000000Z"


def test_a_zero_date_decoded_as_none_is_a_bad_value() -> None:
    with pytest.raises(BadValue, match="expected a datetime"):
        format_ts(None)


def test_undecodable_bytes_are_replaced_not_dropped() -> None:
    assert optional_text(b"ok \xc3( \xff") == "ok \ufffd( \ufffd"


@pytest.mark.parametrize(("raw", "expected"), [(1, True), (0, False), (True, True)])
def test_tinyint_booleans_become_bools(raw: object, expected: bool) -> None:
    assert as_bool(raw) is expected


def test_integers_reject_null_and_garbage() -> None:
    assert as_int("42") == 42
    with pytest.raises(BadValue):
        as_int(None)
    with pytest.raises(BadValue):
        as_int("4x2")
