"""The benchmark report renders from a results dict: no servers, no timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.all import render_charts, render_markdown


def spread(median: float) -> dict[str, Any]:
    runs = [median * 0.9, median, median * 1.2]
    return {"runs": runs, "median": median, "min": min(runs), "max": max(runs)}


def profile() -> dict[str, Any]:
    return {
        "file": "profile.speedscope.json",
        "samples": 100,
        "threads": [["MainThread", 1.0]],
        "self": [["f (a/b.py:1)", 0.5]],
        "total": [["g (a/b.py:2)", 0.9]],
        "packages": [["projections (our pure core)", 0.5]],
    }


def fake_results() -> dict[str, Any]:
    workers = ("worker, library decoder", "worker, specialized decoder")
    percentiles = {"p50": spread(2.0), "p95": spread(5.0), "p99": spread(9.0)}
    return {
        "meta": {"mode": "quick", "date": "2026-01-01 00:00", "machine": {"CPU": "fake"}},
        "catchup": {
            "transactions": 10,
            "row_changes": 40,
            "naive_max_rows": None,
            "repeats": 3,
            "rows_per_s": {
                "bare library decode loop": spread(1000),
                "naive projector": spread(100),
                workers[0]: spread(900),
                workers[1]: spread(3100),
            },
            "ratios": {
                f"{workers[0]} / bare library decode loop": 0.9,
                f"{workers[0]} / naive projector": 9.0,
                f"{workers[1]} / bare library decode loop": 3.1,
                f"{workers[1]} / naive projector": 31.0,
                "specialized / library decoder": 3.4,
            },
            "peak_rss_mb": {workers[0]: 120.0, workers[1]: 110.0},
            "profile": profile(),
        },
        "latency": {
            "phase_seconds": 3,
            "repeats": 3,
            "decoder": "specialized",
            "tickets": 100,
            "writer_connections": 4,
            "steps": [
                {
                    "target_per_s": 1000,
                    "achieved_per_s": 990,
                    "commits": 3000,
                    "unseen": 0,
                    "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
                    "sustained": True,
                }
            ],
            "max_sustainable_per_s": 1000,
            "limited_by": "the worker",
            "rates": [
                {
                    "target_per_s": 100,
                    "unseen": 0,
                    "worker": {**percentiles, "achieved_per_s": spread(100)},
                    "bare": {**percentiles, "achieved_per_s": spread(100)},
                    "ratio": {"p50": 1.0, "p95": 1.0, "p99": 1.0},
                    "added_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0},
                }
            ],
        },
        "fanout": {
            "tickets": 50,
            "documents": 48,
            "repeats": 3,
            "seconds": {"worker": spread(1.0), "SQL SELECT ... JOIN": spread(0.5)},
            "ratios": {"worker / SQL SELECT ... JOIN": 2.0},
            "peak_rss_mb": spread(150),
            "rss_before_mb": spread(100),
            "peak_reset": True,
        },
        "resync": [{"error": "RuntimeError: seeding failed"}],
        "api": {
            "tickets": 10,
            "seconds": 3,
            "repeats": 3,
            "connections": 32,
            "hget_ticket_id": "7",
            "scenarios": {
                name: {"requests_per_s": spread(rate), "p50_ms": spread(1), "p99_ms": spread(3)}
                for name, rate in (
                    ("constant FastAPI endpoint", 7000),
                    ("GET /tickets/{id} (random ids)", 4000),
                )
            },
            "ratios": {"GET /tickets/{id} (random ids) / constant FastAPI endpoint": 0.57},
            "profile": profile(),
        },
        "source_failover": {
            "failovers": 2,
            "failover_after_s": 1.0,
            "seconds": {"runs": [1.25, 1.75], "median": 1.5, "min": 1.25, "max": 1.75},
            "p50_s": 1.25,
            "p99_s": 1.75,
            "switches": 2,
            "snapshots_by_reason": {"no_checkpoint": 1},
            "read_model_exact": True,
        },
        "memory": {
            "rows": 20,
            "by_decoder": {
                w: {"rss_before_mb": 80, "peak_rss_mb": 170, "seconds": 1} for w in workers
            },
            "peak_reset": True,
        },
    }


def test_the_markdown_shows_every_section_and_each_target_verdict() -> None:
    markdown = render_markdown(fake_results())
    for heading in ("## Targets", "## Catch-up", "## Steady-state latency", "## Fan-out"):
        assert heading in markdown
    assert "## Read API" in markdown
    assert "| p99 s | 1.75 |" in markdown
    assert "| rebuilds (snapshots after the first) | 0 |" in markdown
    assert "## Profiles" in markdown
    assert "RuntimeError: seeding failed" in markdown
    assert "**met**" in markdown
    assert "**missed**" in markdown  # API single reads at 0.57x of the constant endpoint


def test_the_charts_are_written_as_png_files(tmp_path: Path) -> None:
    written = render_charts(fake_results(), tmp_path)
    names = {path.name for path in written}
    assert {"catchup.png", "latency.png", "fanout.png", "api.png", "memory.png"} <= names
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG")
