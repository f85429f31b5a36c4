"""docs/benchmarks.md from a results dict (the JSON ``bench.all`` saves): every figure in it
comes from that dict; the text around them only says how each was measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = list[str]
CATCHUP_BARE, CATCHUP_NAIVE = "bare library decode loop", "naive projector"
WORKERS = ("worker, library decoder", "worker, specialized decoder")
RESYNC_BARE, RESYNC_JOB = "bare SQL read", "resync job (full)"
API_CONSTANT, API_SINGLE = "constant FastAPI endpoint", "GET /tickets/{id} (random ids)"


def number(value: float | None, digits: int = 0) -> str:
    """Thousands separators; an en dash for a missing value."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def spread(summary: dict[str, Any], digits: int = 0) -> str:
    """``median (min-max)`` of a Spread summary; just the median for one run."""
    median = number(summary.get("median"), digits)
    if len(summary.get("runs", [])) < 2:
        return median
    return f"{median} ({number(summary['min'], digits)}-{number(summary['max'], digits)})"


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def failed(section: dict[str, Any] | list[Any] | None) -> str | None:
    """The error text of a scenario that did not complete, None when it did."""
    if section is None:
        return "not run in this mode"
    if isinstance(section, dict) and "error" in section:
        return f"failed: `{section['error']}`"
    return None


def median(summary: dict[str, Any]) -> float | None:
    value = summary.get("median")
    return None if value is None else float(value)


def target_rows(results: dict[str, Any]) -> list[Row]:
    """Each target, what was measured (a ratio of medians from this run), met or missed."""
    rows: list[Row] = []
    catchup = results.get("catchup")
    if not failed(catchup):
        assert isinstance(catchup, dict)
        for worker in WORKERS:
            for base, goal in ((CATCHUP_BARE, 0.8), (CATCHUP_NAIVE, 5.0)):
                value = catchup["ratios"].get(f"{worker} / {base}")
                rows.append(verdict(f"catch-up, {worker} ≥ {goal}x {base}", value, goal))
        value = catchup["ratios"].get(f"{WORKERS[1]} / {CATCHUP_BARE}")
        rows.append(verdict(f"{WORKERS[1]} ≥ 3x {CATCHUP_BARE} (goal 5x)", value, 3.0, 5.0))
    for size in results.get("resync") or []:
        if not failed(size):
            value = size["ratios"].get(f"{RESYNC_JOB} / {RESYNC_BARE}")
            label = f"full resync at {size['tickets']:,} tickets ≥ 0.5x {RESYNC_BARE}"
            rows.append(verdict(label, value, 0.5))
    feed = results.get("feed")
    if not failed(feed):
        assert isinstance(feed, dict)
        label = "catch-up with the change feed on ≥ 0.9x off"
        rows.append(verdict(label, feed.get("on_off_ratio"), 0.9))
    api = results.get("api")
    if not failed(api):
        assert isinstance(api, dict)
        value = api["ratios"].get(f"{API_SINGLE} / {API_CONSTANT}")
        rows.append(verdict(f"API single reads ≥ 0.7x {API_CONSTANT}", value, 0.7))
    return rows


def verdict(label: str, value: float | None, target: float, goal: float | None = None) -> Row:
    if value is None:
        return [label, "n/a", "not measured"]
    met = "**met**" if value >= target else "**missed**"
    if goal is not None and value >= target:
        met += " (goal met)" if value >= goal else " (goal missed)"
    return [label, times(value), met]


def machine_section(meta: dict[str, Any]) -> str:
    machine = meta.get("machine", {})
    rows = [[key, str(value)] for key, value in machine.items()]
    rows += [["mode", str(meta.get("mode"))], ["date (UTC)", str(meta.get("date"))]]
    rows += [["commit", str(meta.get("commit"))]]
    rows += [[f"code for {name}", code] for name, code in meta.get("code", {}).items()]
    rows += [["whole run", f"{number(meta.get('duration_s', 0) / 60, 1)} min"]]
    rows += [
        [f"{name} took", f"{number(seconds / 60, 1)} min"]
        for name, seconds in meta.get("scenario_s", {}).items()
    ]
    return "## Machine and run\n\n" + table(["", ""], rows)


def catchup_section(c: dict[str, Any]) -> str:
    bare, naive = c["rows_per_s"][CATCHUP_BARE], c["rows_per_s"][CATCHUP_NAIVE]
    rows = [
        [name, spread(s), times(ratio_of(s, bare)), times(ratio_of(s, naive))]
        for name, s in c["rows_per_s"].items()
    ]
    capped = c.get("naive_max_rows")
    text = (
        f"Backlog: {c['transactions']:,} load-generator transactions = {c['row_changes']:,} row "
        f"changes; {c['repeats']} repeat(s), median (min-max). Every reader starts from the same "
        "checkpoint and reads the same binlog; the worker runs in-process, once per row decoder "
        "(`CDC_ROW_DECODER=library`: before; `specialized`: after), and applies everything to "
        "Redis; the bare loop only decodes, in a fresh interpreter of its own (as a user's "
        "script: the library's imports only, CPython's default garbage collector settings); "
        "the naive projector re-reads each affected ticket from MySQL with a join and HSETs it."
    )
    if capped:
        text += f" The naive projector's rate is measured over the first {capped:,} row changes."
    ratio_line = (
        f"specialized / library decoder: {times(c['ratios'].get('specialized / library decoder'))}"
    )
    header = ["reader", "rows/s", "÷ bare loop", "÷ naive projector"]
    parts = ["## Catch-up", text, table(header, rows), ratio_line]
    if c.get("documents_checked"):
        found = ", ".join(f"{name}: {n}" for name, n in c.get("differences", {}).items())
        parts.append(
            f"Read model checked against an SQL computation of all {c['documents_checked']:,} "
            f"documents after every worker run; differing lines (worst repeat): {found}."
        )
    return "\n\n".join([*parts, "![catch-up](bench/catchup.png)"])


def ratio_of(top: dict[str, Any], bottom: dict[str, Any]) -> float | None:
    a, b = median(top), median(bottom)
    return a / b if a is not None and b else None


def latency_section(lat: dict[str, Any]) -> str:
    text = (
        "Each transaction updates one ticket's title to a marker. The clock starts when COMMIT "
        "returns to the writer (autocommit, paced at the rate over "
        f"{lat.get('writer_connections', 1)} connection(s) on threads). Worker phases: "
        "`cdc-worker run` (a subprocess, "
        f"`CDC_ROW_DECODER={lat['decoder']}`) applies the stream and the clock stops when an "
        "HMGET of the `tickets` hash, woken by Redis keyspace notifications of that hash (and "
        "every 50 ms regardless), returns the new title, an upper bound on when it became "
        "visible. Baseline phases: the worker is stopped and a bare python-mysql-replication "
        "reader (its own process) stops the clock when it yields the row event. Worker and "
        "baseline phases alternate at the same rate, "
        f"{number(lat['phase_seconds'])} s each, {lat['repeats']} repeat(s); "
        "all clocks are CLOCK_MONOTONIC. Figures: median of the repeats' percentiles (min-max)."
    )
    steps = [
        [
            number(s["target_per_s"]),
            number(s["achieved_per_s"]),
            number(s["latency_ms"]["p50"], 1),
            number(s["latency_ms"]["p99"], 1),
            str(s["unseen"]),
            "yes" if s["sustained"] else "no",
        ]
        for s in lat["steps"]
    ]
    climb = (
        f"Highest sustained rate: **{number(lat['max_sustainable_per_s'])} commits/s** "
        f"(the climb was stopped by {lat['limited_by']}). Sustained means: the writer kept "
        "≥ 95% of the rate, every commit became visible and the worker's p99 stayed ≤ 500 ms."
    )
    step_header = ["target/s", "achieved/s", "p50 ms", "p99 ms", "unseen", "sustained"]
    parts = ["## Steady-state latency", text, climb, table(step_header, steps)]
    return "\n\n".join([*parts, latency_table(lat), "![latency](bench/latency.png)"])


def latency_table(lat: dict[str, Any]) -> str:
    rows = []
    for r in lat["rates"]:
        for who in ("worker", "bare"):
            rows.append(
                [
                    number(r["target_per_s"]),
                    "worker" if who == "worker" else "bare binlog arrival",
                    spread(r[who]["achieved_per_s"]),
                    *(spread(r[who][p], 2) for p in ("p50", "p95", "p99")),
                ]
            )
        rows.append(
            [
                "",
                "worker ÷ bare (worker - bare ms)",
                "",
                *(
                    f"{times(r['ratio'][p])} ({r['added_ms'][p]:+,.2f})"
                    for p in ("p50", "p95", "p99")
                ),
            ]
        )
    header = ["rate/s", "measured", "achieved/s", "p50 ms", "p95 ms", "p99 ms"]
    behind = [
        number(r["target_per_s"])
        for r in lat["rates"]
        if (median(r["bare"]["p50"]) or 0) > (median(r["worker"]["p50"]) or 0)
    ]
    note = (
        f"\n\nAt {', '.join(behind)}/s the bare reader arrives later than the worker shows "
        "the change: the library's own decoding (one Python process, table maps parsed anew "
        "in every transaction) falls behind there, so that baseline is not a floor at that rate."
        if behind
        else ""
    )
    return table(header, rows) + note


def fanout_section(f: dict[str, Any]) -> str:
    text = (
        f"A department holding {f['tickets']:,} tickets ({f['documents']:,} live documents) is "
        "renamed. The clock runs from the rename's COMMIT until the worker's checkpoint passes "
        "it (the worker writes a large fan-out in atomic steps and moves the checkpoint with "
        "the last one; every document is then checked for the new name, and the clock would "
        "run on while any is stale). Baselines in the same run: a plain `SELECT` of the "
        "tickets joined with the department, and pipelined HSETs of the same number of "
        f"precomputed documents. {f['repeats']} rename(s); seconds, median (min-max)."
    )
    worker = f["seconds"]["worker"]
    rows = [
        [name, spread(s, 3), times(ratio_of(worker, s)) if name != "worker" else ""]
        for name, s in f["seconds"].items()
    ]
    reset = "" if f.get("peak_reset", True) else " (VmHWM could not be reset: since start)"
    memory = (
        f"Worker peak RSS (VmHWM of the subprocess, reset before each rename{reset}): "
        f"{spread(f['peak_rss_mb'])} MiB, from {spread(f['rss_before_mb'])} MiB before."
    )
    header = ["measured", "seconds", "worker time ÷ this"]
    return "\n\n".join(
        ["## Fan-out", text, table(header, rows), memory, "![fan-out](bench/fanout.png)"]
    )


def resync_section(sizes: list[dict[str, Any]]) -> str:
    text = (
        "The bare SQL read runs the snapshot's own queries (keyset chunks of tickets, range "
        "queries for the children) and drops the rows. The resync job is what `cdc-worker "
        "resync` asks of the running worker; the snapshot build is the initial-snapshot path "
        "(read, project, write generation N+1, swap); the initial snapshot is the first build, "
        "into an empty Redis. Tickets/s, median (min-max)."
    )
    parts = ["## Full resync", text]
    for size in sizes:
        if failed(size):
            parts.append(f"{size.get('tickets', '?')} tickets: {failed(size)}")
            continue
        bare = size["tickets_per_s"][RESYNC_BARE]
        rows = [
            [name, str(len(s["runs"])), spread(s), times(ratio_of(s, bare))]
            for name, s in size["tickets_per_s"].items()
        ]
        title = (
            f"**{size['tickets']:,} tickets** ({size['seeded_rows']:,} rows with children, "
            f"seeded in {number(size['seed_seconds'])} s)"
        )
        parts += [title, table(["measured", "runs", "tickets/s", "÷ bare SQL read"], rows)]
    if any(not failed(size) for size in sizes):
        parts.append("![resync](bench/resync.png)")
    return "\n\n".join(parts)


def api_section(a: dict[str, Any]) -> str:
    text = (
        f"{a['tickets']:,} tickets; wrk (2 threads) and redis-benchmark with {a['connections']} "
        f"connections, {number(a['seconds'])} s per run, {a['repeats']} repeat(s), each "
        "scenario in turn within a repeat. The API and the constant endpoint are one uvicorn "
        "process each. redis-benchmark asks `HGET tickets "
        f"{a['hget_ticket_id']}` (one fixed id; the lookup costs the same for any id)."
    )
    constant = a["scenarios"][API_CONSTANT]["requests_per_s"]
    rows = [
        [
            name,
            spread(s["requests_per_s"]),
            spread(s["p50_ms"], 2),
            spread(s["p99_ms"], 2),
            times(ratio_of(s["requests_per_s"], constant)),
        ]
        for name, s in a["scenarios"].items()
    ]
    header = ["scenario", "requests/s", "p50 ms", "p99 ms", "÷ constant endpoint"]
    single_raw = a["ratios"].get(f"{API_SINGLE} / raw Redis HGET tickets <id> (redis-benchmark)")
    raw = f"Single reads ÷ raw Redis HGET: {times(single_raw)}."
    return "\n\n".join(["## Read API", text, table(header, rows), raw, "![api](bench/api.png)"])


def ha_section(h: dict[str, Any]) -> str:
    standby, sentinel = h["standby"], h["sentinel"]
    text = (
        f"Three workers share one lease (TTL {number(standby['lease_s'])} s); the active one is "
        "signalled, a new standby replaces it, and the time runs from the signal to the first "
        "transaction the next active worker applies. Then Redis behind three Sentinels "
        f"(down-after {sentinel['down_after_ms']} ms): the primary is SIGKILLed "
        "under the workload; Sentinel's promotion and the worker's first applied transaction "
        "on the new primary are both timed from the kill. Each part ends with the SQL oracle: "
        f"{sentinel['oracle']} ({standby['transactions']:,} and {sentinel['transactions']:,} "
        "transactions; none lost, none doubled)."
    )
    rows = [
        [name, str(len(f["runs"])), number(f["p50"], 2), number(f["p99"], 2), number(f["max"], 2)]
        for name, f in (
            ("take-over after SIGKILL", standby["takeover_after_sigkill_s"]),
            ("take-over after SIGTERM", standby["takeover_after_sigterm_s"]),
            ("Sentinel promotion after SIGKILL of the primary", sentinel["sentinel_promotion_s"]),
            ("first applied transaction after that kill", sentinel["first_applied_transaction_s"]),
        )
    ]
    header = ["seconds", "runs", "p50", "p99", "max"]
    return "\n\n".join(["## High availability", text, table(header, rows)])


def memory_section(results: dict[str, Any]) -> str:
    rows: list[Row] = []
    catchup, memory, fanout = results.get("catchup"), results.get("memory"), results.get("fanout")
    if not failed(catchup) and isinstance(catchup, dict):
        for name, peak in catchup.get("peak_rss_mb", {}).items():
            label = f"catch-up of {catchup['row_changes']:,} row changes"
            rows.append([label, name, "n/a", number(peak)])
    if not failed(memory) and isinstance(memory, dict):
        for name, m in memory["by_decoder"].items():
            label = f"one {memory['rows']:,}-row transaction ({number(m['seconds'], 1)} s)"
            rows.append([label, name, number(m["rss_before_mb"]), number(m["peak_rss_mb"])])
    if not failed(fanout) and isinstance(fanout, dict):
        label = f"fan-out to {fanout['documents']:,} documents (median)"
        before, peak = median(fanout["rss_before_mb"]), median(fanout["peak_rss_mb"])
        rows.append([label, "worker, default decoder", number(before), number(peak)])
    text = (
        "Peak RSS is VmHWM from /proc/PID/status of a `cdc-worker run` subprocess. Catch-up: "
        "a fresh worker catching up the catch-up backlog (peak since start). Large "
        "transaction and fan-out: VmHWM reset to the current RSS (via /proc/PID/clear_refs) "
        "just before the change."
    )
    header = ["during", "worker", "RSS before MiB", "peak RSS MiB"]
    parts = ["## Memory", text, table(header, rows), "![memory](bench/memory.png)"]
    return "\n\n".join(parts)


def profile_block(title: str, p: dict[str, Any]) -> str:
    threads = ", ".join(f"{name} {share:.0%}" for name, share in p["threads"])
    packages = table(["package (self time)", "share"], [[n, f"{s:.1%}"] for n, s in p["packages"]])
    own = table(["function (self time)", "share"], [[f"`{n}`", f"{s:.1%}"] for n, s in p["self"]])
    total = table(
        ["function (total time, with callees)", "share"],
        [[f"`{n}`", f"{s:.1%}"] for n, s in p["total"]],
    )
    head = f"### {title}\n\n{p['samples']:,} samples (`bench/{p['file']}`); threads: {threads}."
    return "\n\n".join([head, where_time_goes(p), packages, own, total])


def where_time_goes(p: dict[str, Any]) -> str:
    """One sentence: the heaviest packages and the heaviest function, by self time."""
    top = ", ".join(f"{name} {share:.0%}" for name, share in p["packages"][:3])
    heaviest = f"`{p['self'][0][0]}` ({p['self'][0][1]:.0%})" if p["self"] else "n/a"
    return f"Where the CPU time goes: {top}; the heaviest single function is {heaviest}."


def profiles_section(results: dict[str, Any]) -> str:
    text = (
        "py-spy (`record --format speedscope`, 200 Hz, non-blocking) samples threads that are "
        "running, not those waiting in a socket read, so shares are of CPU time. Open the "
        "speedscope files at speedscope.app; `python -m bench.profile FILE` prints these tables."
    )
    parts = ["## Profiles", text]
    for key, title in (("catchup", "Worker during catch-up"), ("api", "API under single reads")):
        section = results.get(key)
        if isinstance(section, dict) and section.get("profile"):
            parts.append(profile_block(title, section["profile"]))
    return "\n\n".join(parts)


def feed_section(feed: dict[str, Any]) -> str:
    """bench/feed.py: catch-up with the change feed on vs. off, and SSE delivery latency."""
    text = (
        "The worker (specialized decoder, in this process) catches up the same backlog of "
        f"{feed['transactions']:,} transactions with `CDC_CHANGES=on` and `off`, alternating, "
        f"{feed['repeats']} repeat(s); the read model equals SQL after every run "
        f"(worst differences: {feed['differences']}). Delivery: `cdc-worker api` and "
        "`cdc-worker run` in their own processes; the clock starts when COMMIT of a title "
        "change returns and stops when an SSE client (asyncio, in the bench process) reads "
        "the event; every subscriber of every probe is a sample."
    )
    rates = [
        [name, number(median(summary)), number(summary["min"]), number(summary["max"])]
        for name, summary in feed["transactions_per_s"].items()
    ]
    latency = [
        [name, number(v["p50"], 1), number(v["p99"], 1), number(v["max"], 1), str(v["samples"])]
        for name, v in feed.get("latency_ms", {}).items()
    ]
    return "\n\n".join(
        [
            "## feed\n\n" + text,
            table(["catch-up", "tx/s (median)", "min", "max"], rates),
            f"Feed on / feed off: **{times(feed['on_off_ratio'])}** (ratio of medians); "
            "within each repeat: " + ", ".join(times(r) for r in feed.get("pair_ratios", [])) + ".",
            table(["COMMIT -> SSE client", "p50 ms", "p99 ms", "max ms", "samples"], latency),
        ]
    )


def source_failover_section(f: dict[str, Any]) -> str:
    text = (
        f"From the promotion of the replica (`STOP SLAVE; RESET SLAVE ALL; read_only=OFF`) to "
        f"the worker's checkpoint holding the first transaction committed on the new primary, "
        f"over {f['failovers']} failovers (the primary SIGKILLed once its replica had "
        f"everything, the two servers swapping roles each round), with "
        f"`CDC_SOURCE_FAILOVER_AFTER_S={f['failover_after_s']:g}`: the worker waits that long "
        f"after the primary stops answering before it switches; the rest is noticing the "
        f"failure, checking the new server and starting the stream. Percentiles are "
        f"nearest-rank (p99: the slowest of fewer than 100)."
    )
    runs = ", ".join(number(s, 2) for s in f["seconds"]["runs"])
    rebuilds = {k: v for k, v in f["snapshots_by_reason"].items() if k != "no_checkpoint"}
    rows: list[Row] = [
        ["p50 s", number(f["p50_s"], 2)],
        ["p99 s", number(f["p99_s"], 2)],
        ["every failover, s", runs],
        ["switches counted", number(f["switches"])],
        ["rebuilds (snapshots after the first)", number(sum(rebuilds.values()))],
        ["read model equal to SQL at the end", "yes" if f["read_model_exact"] else "NO"],
    ]
    return "\n\n".join(["## Source failover", text, table(["figure", "value"], rows)])


SECTIONS: list[tuple[str, Callable[[Any], str]]] = [
    ("catchup", catchup_section),
    ("latency", latency_section),
    ("fanout", fanout_section),
    ("resync", resync_section),
    ("api", api_section),
    ("ha", ha_section),
    ("feed", feed_section),
    ("source_failover", source_failover_section),
]


def render_markdown(results: dict[str, Any]) -> str:
    """The whole of docs/benchmarks.md."""
    meta = results.get("meta", {})
    intro = (
        "# Benchmarks\n\nGenerated by `make bench` (`python -m bench.all`); do not edit by hand. "
        "Every figure below was measured in the run described under *Machine and run*, each "
        "next to its baseline measured in the same run; ratios are ratios of medians. This "
        "machine is shared and noisy: compare ratios rather than absolute numbers."
    )
    notes = "\n".join(f"- {note}" for note in meta.get("notes", []))
    parts = [intro, notes] if notes else [intro]
    parts += [machine_section(meta), "## Targets\n\n" + targets_table(results)]
    for key, render in SECTIONS:
        section = results.get(key)
        problem = failed(section)
        title = render.__name__.removesuffix("_section")
        parts.append(f"## {title}\n\n{problem}" if problem else render(section))
    parts += [memory_section(results), profiles_section(results)]
    return "\n\n".join(parts) + "\n"


def targets_table(results: dict[str, Any]) -> str:
    return table(["target", "measured (ratio of medians)", "verdict"], target_rows(results))
