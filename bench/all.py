"""Every benchmark with its baselines, then docs/benchmarks.md, docs/bench/*.png and
docs/bench/results.json. ``make bench`` runs the full mode; ``make bench QUICK=1`` (or
``--quick``) uses small sizes to check the pipeline in a few minutes.

    .venv/bin/python -m bench.all [--quick] [--only catchup,api] [--render-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import api, catchup, fanout, feed, ha, latency, memory, resync, source_failover
from bench.charts import render_charts
from bench.common import log, servers
from bench.report import render_markdown
from cdc_worker.observability.logs import configure_logging

__all__ = ["render_charts", "render_markdown"]

DOCS = Path("docs")
BENCH_DIR = DOCS / "bench"


@dataclass(frozen=True)
class Mode:
    """Sizes and repeats of one way to run everything."""

    name: str
    catchup_transactions: int
    catchup_repeats: int
    naive_max_rows: int | None
    latency_seconds: float
    latency_repeats: int
    latency_tickets: int
    fanout_tickets: int
    fanout_repeats: int
    resync_sizes: tuple[tuple[int, int, int], ...]  # (tickets, repeats, snapshot repeats)
    api_tickets: int
    api_seconds: float
    api_repeats: int
    large_transaction_rows: int
    source_failovers: int = 12
    source_failover_after_s: float = 1.0
    notes: list[str] = field(default_factory=list)
    ha_handovers: int = 20  # of each kind (SIGKILL, SIGTERM)
    ha_failovers: int = 3


FULL = Mode(
    "full",
    catchup_transactions=50_000,
    catchup_repeats=3,
    naive_max_rows=20_000,
    latency_seconds=10,
    latency_repeats=3,
    latency_tickets=10_000,
    fanout_tickets=50_000,
    fanout_repeats=3,
    resync_sizes=((100_000, 3, 3), (1_000_000, 1, 0)),
    api_tickets=20_000,
    api_seconds=10,
    api_repeats=3,
    large_transaction_rows=200_000,
    notes=[
        "Full resync at 1,000,000 tickets: one repeat of the bare read and of the resync job, "
        "and the initial snapshot as its only snapshot build (each takes minutes).",
        "The naive projector is timed over the first 20,000 row changes of the catch-up "
        "backlog (it is slow); the other readers over all of it.",
    ],
)
QUICK = Mode(
    "quick",
    catchup_transactions=2_000,
    catchup_repeats=1,
    naive_max_rows=None,
    latency_seconds=3,
    latency_repeats=1,
    latency_tickets=2_000,
    fanout_tickets=5_000,
    fanout_repeats=2,
    resync_sizes=((5_000, 2, 1), (20_000, 1, 0)),
    api_tickets=3_000,
    api_seconds=3,
    api_repeats=1,
    large_transaction_rows=20_000,
    source_failovers=3,
    notes=["Quick mode: small sizes, single repeats; checks the pipeline, not the figures."],
    ha_handovers=2,
    ha_failovers=1,
)


def run_catchup(mode: Mode) -> Any:
    with servers("catchup") as (mariadb, redis_server):
        out = BENCH_DIR / "profile-worker-catchup.speedscope.json"
        return catchup.measure(
            mariadb,
            redis_server,
            mode.catchup_transactions,
            mode.catchup_repeats,
            mode.naive_max_rows,
            profile_out=out,
        )


def run_latency(mode: Mode) -> Any:
    with servers("latency") as (mariadb, redis_server):
        return latency.measure(
            mariadb, redis_server, mode.latency_seconds, mode.latency_repeats, mode.latency_tickets
        )


def run_fanout(mode: Mode) -> Any:
    with servers("fanout") as (mariadb, redis_server):
        return fanout.measure(mariadb, redis_server, mode.fanout_tickets, mode.fanout_repeats)


def run_resync(mode: Mode) -> Any:
    sizes = []
    for tickets, repeats, builds in mode.resync_sizes:
        with servers("resync") as (mariadb, redis_server):
            measure = partial(resync.measure, mariadb, redis_server, tickets, repeats, builds)
            sizes.append(guarded(measure))
    return sizes


def run_api(mode: Mode) -> Any:
    with servers("api") as (mariadb, redis_server):
        out = BENCH_DIR / "profile-api-single.speedscope.json"
        return api.measure(
            mariadb, redis_server, mode.api_tickets, mode.api_seconds, mode.api_repeats, out
        )


def run_feed(mode: Mode) -> Any:
    # Two fifths of the catch-up backlog, 5 alternating repeats: a run of 5,000 transactions
    # lasts about 1.4 s here, and 3 of them gave 0.85x one day and 1.11x another; 20,000 x 5
    # gave 0.97x with the applier's CPU within 1% (2026-12-07, 2-core AMD EPYC).
    with servers("feed") as (mariadb, redis_server), servers("feed-latency") as latency_pair:
        transactions = max(mode.catchup_transactions * 2 // 5, 1000)
        repeats = max(mode.catchup_repeats, 5 if mode.name == "full" else 3)
        probes = 30 if mode.name == "full" else 10
        return feed.measure(mariadb, redis_server, transactions, repeats, probes, latency_pair)


def run_memory(mode: Mode) -> Any:
    with servers("memory") as (mariadb, redis_server):
        return memory.measure(mariadb, redis_server, mode.large_transaction_rows)


def run_ha(mode: Mode) -> Any:
    return ha.measure(mode.ha_handovers, mode.ha_failovers)


def run_source_failover(mode: Mode) -> Any:
    return source_failover.measure(mode.source_failovers, mode.source_failover_after_s)


# The longest (resync, with its million tickets) last: results are saved after each one.
SCENARIOS: dict[str, Callable[[Mode], Any]] = {
    "catchup": run_catchup,
    "latency": run_latency,
    "fanout": run_fanout,
    "api": run_api,
    "feed": run_feed,
    "memory": run_memory,
    "ha": run_ha,
    "source_failover": run_source_failover,
    "resync": run_resync,
}


def guarded(measure: Callable[[], Any]) -> Any:
    """The measurement as a dict, or ``{"error": ...}``: one failure must not lose the rest."""
    try:
        found = measure()
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return found if isinstance(found, list | dict) else asdict(found)


def binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin") or name


def command_output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20 if meminfo else 0.0
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "RAM": f"{ram_gib:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "MariaDB": word_after(command_output([binary("mariadbd"), "--version"]), "Ver"),
        "Redis": word_after(command_output([binary("redis-server"), "--version"]), "server"),
        "python-mysql-replication": package_version("mysql-replication"),
    }


def code_version() -> str:
    """The commit, and whether the worker's code differs from it: worker subprocesses load
    the working tree when they start, so a scenario measures what is there then."""
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "status", "--porcelain", "--", "cdc_worker", "projections"])
    return f"{commit} + uncommitted changes" if dirty not in ("", "unknown") else commit


def word_after(text: str, marker: str) -> str:
    """``mariadbd --version`` -> "10.11.6-MariaDB-..."; ``redis-server --version`` -> "v=7.0.15"."""
    words = text.split()
    return words[words.index(marker) + 1] if marker in words[:-1] else text


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def write_outputs(results: dict[str, Any]) -> None:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    render_charts(results, BENCH_DIR)
    (DOCS / "benchmarks.md").write_text(render_markdown(results))


def run_all(mode: Mode, only: list[str], merge: bool) -> dict[str, Any]:
    """Run the scenarios named in ``only``; with ``merge``, into the saved results (their
    meta says which scenarios were re-run when), else into fresh ones."""
    started = time.monotonic()
    results = fresh_results(mode)
    if merge:
        saved = json.loads((BENCH_DIR / "results.json").read_text())
        note = f"Re-run on {results['meta']['date']} (UTC): {', '.join(only)}."
        saved["meta"]["notes"] = [*saved["meta"]["notes"], note]
        results = saved
    for name in only:
        log(f"=== {name} ===")
        results["meta"].setdefault("code", {})[name] = code_version()
        scenario_started = time.monotonic()
        results[name] = guarded(partial(SCENARIOS[name], mode))
        results["meta"].setdefault("scenario_s", {})[name] = time.monotonic() - scenario_started
        if not merge:
            results["meta"]["duration_s"] = time.monotonic() - started
        write_outputs(results)  # after each scenario: a late failure keeps the rest
    return results


def fresh_results(mode: Mode) -> dict[str, Any]:
    return {
        "meta": {
            "mode": mode.name,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            "commit": command_output(["git", "rev-parse", "--short", "HEAD"]),
            "machine": machine(),
            "notes": mode.notes,
            "config": asdict(mode),
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, single repeats")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated names")
    parser.add_argument("--render-only", action="store_true", help="redraw from results.json")
    parser.add_argument("--merge", action="store_true", help="update the saved results.json")
    args = parser.parse_args()
    if args.render_only:
        write_outputs(json.loads((BENCH_DIR / "results.json").read_text()))
        return
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}; known: {list(SCENARIOS)}")
    configure_logging("warning", "console")
    run_all(QUICK if args.quick else FULL, only, args.merge)
    log(f"wrote {DOCS / 'benchmarks.md'} and {BENCH_DIR}/")


if __name__ == "__main__":
    main()
