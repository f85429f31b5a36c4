"""PNG charts of a results dict (matplotlib, no display): medians as bars, min-max as error
bars. One function per chart; a scenario that failed or did not run draws nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

DPI = 110


def error_bars(summaries: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's [below, above] distances from each median to its min and max."""
    return [
        [s["median"] - s["min"] for s in summaries],
        [s["max"] - s["median"] for s in summaries],
    ]


def bars(ax: Axes, labels: list[str], summaries: list[dict[str, Any]], unit: str) -> None:
    """Horizontal bars of medians with min-max whiskers, each labelled with its median."""
    medians = [s["median"] for s in summaries]
    ax.barh(labels, medians, xerr=error_bars(summaries), capsize=4, color="#4c72b0")
    for y, summary in enumerate(summaries):
        value = summary["median"]
        text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        ax.annotate(f"  {text}", (summary["max"], y), va="center", fontsize=8)
    ax.margins(x=0.15)
    ax.set_xlabel(unit)
    ax.invert_yaxis()


def save(fig: Any, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def ok(section: Any) -> bool:
    return isinstance(section, dict) and "error" not in section


def catchup_chart(c: dict[str, Any], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3))
    names = list(c["rows_per_s"])
    bars(ax, names, [c["rows_per_s"][n] for n in names], "row changes per second (median)")
    ax.set_title(f"Catch-up of {c['row_changes']:,} row changes")
    return save(fig, out_dir, "catchup.png")


def latency_chart(lat: dict[str, Any], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    rates = lat["rates"]
    width = 0.2
    series = [("worker", "p50"), ("worker", "p99"), ("bare", "p50"), ("bare", "p99")]
    for index, (who, p) in enumerate(series):
        xs = [i + (index - 1.5) * width for i in range(len(rates))]
        summaries = [r[who][p] for r in rates]
        label = f"{'worker' if who == 'worker' else 'bare binlog arrival'} {p}"
        ax.bar(xs, [s["median"] for s in summaries], width, yerr=error_bars(summaries), label=label)
    ax.set_xticks(range(len(rates)), [f"{r['target_per_s']:,.0f}/s" for r in rates])
    ax.set_yscale("log")
    ax.set_ylabel("commit → visible, ms (log)")
    ax.set_title("Steady-state latency by commit rate")
    ax.legend(fontsize=8)
    return save(fig, out_dir, "latency.png")


def fanout_chart(f: dict[str, Any], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 2.8))
    names = list(f["seconds"])
    bars(ax, names, [f["seconds"][n] for n in names], "seconds (median)")
    ax.set_title(f"Renaming a department of {f['tickets']:,} tickets")
    return save(fig, out_dir, "fanout.png")


def resync_chart(sizes: list[dict[str, Any]], out_dir: Path) -> Path:
    done = [s for s in sizes if ok(s)]
    fig, axes = plt.subplots(len(done), 1, figsize=(8, 2.6 * len(done)), squeeze=False)
    for ax, size in zip(axes[:, 0], done, strict=True):
        names = list(size["tickets_per_s"])
        bars(ax, names, [size["tickets_per_s"][n] for n in names], "tickets per second (median)")
        ax.set_title(f"Full resync, {size['tickets']:,} tickets")
    return save(fig, out_dir, "resync.png")


def api_chart(a: dict[str, Any], out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 3.4))
    names = list(a["scenarios"])
    bars(ax, names, [a["scenarios"][n]["requests_per_s"] for n in names], "requests/s (log)")
    ax.set_xscale("log")
    ax.set_title("Read API vs. baselines")
    return save(fig, out_dir, "api.png")


def memory_chart(results: dict[str, Any], out_dir: Path) -> Path:
    labels, peaks = [], []
    if ok(results.get("catchup")):
        for name, peak in results["catchup"].get("peak_rss_mb", {}).items():
            labels.append(f"catch-up, {name}")
            peaks.append(peak)
    if ok(results.get("memory")):
        for name, m in results["memory"]["by_decoder"].items():
            labels.append(f"{results['memory']['rows']:,}-row transaction, {name}")
            peaks.append(m["peak_rss_mb"])
    if ok(results.get("fanout")):
        labels.append("fan-out (median)")
        peaks.append(results["fanout"]["peak_rss_mb"]["median"])
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(len(labels), 1)))
    ax.barh(labels, peaks, color="#55a868")
    ax.invert_yaxis()
    ax.set_xlabel("worker peak RSS, MiB")
    return save(fig, out_dir, "memory.png")


def render_charts(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every chart the results allow; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, chart in (
        ("catchup", catchup_chart),
        ("latency", latency_chart),
        ("fanout", fanout_chart),
        ("api", api_chart),
    ):
        if ok(results.get(key)):
            written.append(chart(results[key], out_dir))
    if any(ok(s) for s in results.get("resync") or []):
        written.append(resync_chart(results["resync"], out_dir))
    written.append(memory_chart(results, out_dir))
    return written
