"""The pure parts of monitoring: series at 0, lag arithmetic, liveness, dead-letter counting,
progress, and what the API infers from the heartbeat."""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

import cdc_worker.source_guard
import cdc_worker.worker.loop
from cdc_worker.api.metrics import ApiMetrics
from cdc_worker.checkpoint import Position
from cdc_worker.observability.health import WorkerView
from cdc_worker.observability.lag import LagTracker, Liveness, binlog_file_number, bytes_behind
from cdc_worker.observability.metrics import SNAPSHOT_REASONS, WorkerMetrics
from cdc_worker.observability.progress import Progress, bar_line
from cdc_worker.observability.reporting import DeadLetterCounter
from cdc_worker.worker import reconnect_reasons
from projections.changes import TRACKED_TABLES
from projections.projector import DeadLetter, StoreOps


class QuietLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    warning = info


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_label_value_known_in_advance_has_a_series_at_zero() -> None:
    metrics = WorkerMetrics()
    metrics.initialise_reconnect_reasons(reconnect_reasons())
    for table in TRACKED_TABLES:
        assert sample(metrics, "cdc_dead_letter_rows_total", table=table) == 0
        assert sample(metrics, "cdc_rows_total", table=table, op="delete") == 0
    for reason in SNAPSHOT_REASONS:
        assert sample(metrics, "cdc_snapshots_total", reason=reason) == 0
        assert sample(metrics, "cdc_snapshot_tickets_total", reason=reason) == 0
    assert sample(metrics, "cdc_resyncs_total", kind="full", outcome="failed") == 0
    assert sample(metrics, "cdc_decoded_rows_total", decoder="library") == 0
    assert sample(metrics, "cdc_reconnects_total", reason="fence") == 0
    assert sample(metrics, "cdc_reconnects_total", reason="StreamInterrupted") == 0
    assert sample(metrics, "cdc_batch_phase_seconds_count", phase="write") == 0


def test_both_processes_export_process_gc_and_build_metrics() -> None:
    for registry in (WorkerMetrics().registry, ApiMetrics().registry):
        names = {family.name for family in registry.collect()}
        assert "process_resident_memory_bytes" in names
        assert "python_gc_collections" in names
        assert "python_info" in names
    assert sample(WorkerMetrics(), "cdc_build_info", version="0.1.0") == 1


def test_binlog_file_numbers_come_from_the_suffix() -> None:
    assert binlog_file_number("mysql-bin.000042") == 42
    assert binlog_file_number("no-suffix") == 0


def test_bytes_behind_count_across_files_and_not_before_the_applied_one() -> None:
    files = [("b.000001", 900), ("b.000002", 1000), ("b.000003", 300)]
    assert bytes_behind(Position("b.000002", 400), files) == 600 + 300
    assert bytes_behind(Position("b.000003", 300), files) == 0
    assert bytes_behind(Position("b.000000", 10), files) == 2200  # purged: whole files only


def test_behind_is_the_first_commit_of_the_batch_in_hand_and_zero_once_drained() -> None:
    lag = LagTracker()
    lag.took_batch(1000.0)
    assert lag.behind_s(now_s=1030.0) == 30.0
    assert lag.behind_s(now_s=1090.0) == 90.0  # keeps growing while nothing moves
    lag.took_batch(1005.0)  # the batch before is applied
    assert lag.behind_s(now_s=1090.0) == 85.0
    lag.drained()
    assert lag.behind_s(now_s=1100.0) == 0.0


def test_a_head_that_moves_past_a_stuck_loop_starts_the_clock() -> None:
    lag = LagTracker()
    lag.applied_at(Position("b.000001", 500))
    lag.saw_head([("b.000001", 500)], now_s=100.0)
    assert (lag.behind_s(now_s=101.0), lag.behind_bytes) == (0.0, 0)
    lag.saw_head([("b.000001", 800)], now_s=102.0)  # committed after the poll at 100
    assert lag.behind_bytes == 300
    assert lag.behind_s(now_s=110.0) == 10.0
    lag.saw_head([("b.000001", 900)], now_s=104.0)  # still the same oldest commit
    assert lag.behind_s(now_s=110.0) == 10.0


def test_a_turning_loop_knows_better_than_the_poller() -> None:
    lag = LagTracker()
    lag.applied_at(Position("b.000001", 500))
    lag.saw_head([("b.000001", 500)], now_s=100.0)
    lag.took_batch(101.5)  # under load: the loop takes batches between polls
    lag.saw_head([("b.000001", 800)], now_s=102.0)
    assert lag.behind_s(now_s=102.0) == 0.5  # not the 2 s since the previous poll


def test_a_head_that_does_not_move_starts_no_clock() -> None:
    lag = LagTracker()
    lag.applied_at(Position("b.000001", 500))
    lag.saw_head([("b.000001", 500), ("b.000002", 256)], now_s=100.0)  # rotated, idle
    lag.saw_head([("b.000001", 500), ("b.000002", 256)], now_s=102.0)
    assert lag.behind_s(now_s=110.0) == 0.0


def test_liveness_fails_after_the_timeout_with_the_reason_and_not_while_stopping() -> None:
    liveness = Liveness(timeout_s=30)
    start = liveness._last_progress
    assert liveness.problem(now=start + 29) is None
    problem = liveness.problem(now=start + 31)
    assert problem is not None
    assert "no progress" in problem
    assert "CDC_LIVENESS_TIMEOUT_S" in problem
    liveness.expected = False
    assert liveness.problem(now=start + 31) is None


def letters(*items: tuple[str, str]) -> StoreOps:
    ops = StoreOps()
    ops.dead_letters = [DeadLetter(identity, position, "bad") for identity, position in items]
    return ops


def test_a_bad_row_is_counted_once_however_often_it_is_re_rendered() -> None:
    metrics, log = WorkerMetrics(), QuietLog()
    counter = DeadLetterCounter(metrics, log)
    counter.record(letters(("tickets:7", "bin.1:100")), own={"tickets:7"})
    for position in ("bin.1:200", "bin.1:300", "bin.1:400"):  # renames re-render it
        counter.record(letters(("tickets:7", position)), own={"departments:1"})
    counter.record(letters(("tickets:7", "bin.1:100")), own={"tickets:7"})  # replayed
    assert sample(metrics, "cdc_dead_letter_rows_total", table="tickets") == 1
    assert len(log.lines) == 5  # every entry is still logged
    counter.record(letters(("tickets:7", "bin.1:500")), own={"tickets:7"})  # changed again
    assert sample(metrics, "cdc_dead_letter_rows_total", table="tickets") == 2


def test_progress_never_shows_done_above_total_and_ends_equal() -> None:
    metrics, log = WorkerMetrics(), QuietLog()
    progress = Progress(metrics, log, "resync", total=100, terminal=io.StringIO())
    progress.advance(80)
    progress.advance(40)  # tickets created during the copy
    assert sample(metrics, "cdc_snapshot_tickets_done", reason="resync") == 120
    assert sample(metrics, "cdc_snapshot_tickets_total", reason="resync") == 120
    progress.finish()
    assert progress.total == progress.done == 120
    assert log.lines
    assert log.lines[0][0] == "snapshot progress"
    assert {"rate_per_s", "eta_s", "tickets_total"} <= set(log.lines[0][1])


def test_progress_draws_a_bar_on_a_terminal_instead_of_logging() -> None:
    terminal, log = Terminal(), QuietLog()
    progress = Progress(WorkerMetrics(), log, "no_checkpoint", total=10, terminal=terminal)
    progress.advance(5)
    progress.advance(5)
    progress.finish()
    assert "▕" in terminal.getvalue()
    assert "10/10 tickets" in terminal.getvalue()
    assert log.lines == []


@pytest.mark.parametrize(("done", "total"), [(0, 0), (5, 3), (3, 5)])
def test_the_bar_never_shows_done_above_total(done: int, total: int) -> None:
    shown = bar_line("x", done, total, 0.0).split("▏ ")[1].split(" ")[0]
    shown_done, shown_total = (int(n.replace(",", "")) for n in shown.split("/"))
    assert shown_done <= shown_total


def beat(at_s: float, behind_s: float = 0.0) -> bytes:
    return orjson.dumps({"at_s": at_s, "lag_s": 0.0, "source_behind_s": behind_s})


def test_the_api_ages_the_heartbeat_after_the_key_expires() -> None:
    view = WorkerView()
    assert view.heartbeat_age_s(None, 100.0) == float("inf")  # never seen one
    assert view.heartbeat_age_s(beat(100.0), 102.0) == 2.0
    assert view.heartbeat_age_s(None, 160.0) == 60.0  # the key expired: still growing


def test_the_api_behind_is_the_workers_while_it_beats_then_grows_with_silence() -> None:
    view = WorkerView()
    age = view.heartbeat_age_s(beat(100.0, behind_s=0.0), 101.0)
    assert view.source_behind_s(50.0, age, max_age_s=15) == 0.0
    age = view.heartbeat_age_s(beat(100.0, behind_s=4.0), 101.0)
    assert view.source_behind_s(50.0, age, max_age_s=15) == 5.0
    age = view.heartbeat_age_s(None, 160.0)
    assert view.source_behind_s(50.0, age, max_age_s=15) == 64.0


def rebuild_reasons_in_the_worker() -> set[str]:
    """Every string the worker loop assigns to ``resync_reason`` (the snapshot's reason)."""
    found: set[str] = {cdc_worker.source_guard.DIVERGED}
    tree = ast.parse(Path(cdc_worker.worker.loop.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == "resync_reason" for t in node.targets
        ):
            found |= {
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
    return found


def test_every_rebuild_reason_the_worker_uses_has_a_series_from_start_up() -> None:
    reasons = rebuild_reasons_in_the_worker()
    assert {"ddl", "index_format", "source_diverged"} <= reasons
    assert reasons <= set(SNAPSHOT_REASONS)
