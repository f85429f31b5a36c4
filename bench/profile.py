"""Sampling profiles with py-spy (speedscope files), and where the time goes in them.

py-spy samples only threads that are running (not those blocked in a socket read), so the
shares below are shares of CPU time, per function (self) and per package (self, grouped).

    .venv/bin/python -m bench.profile docs/bench/profile-worker-catchup.speedscope.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

SAMPLE_RATE_HZ = 200
STOP_TIMEOUT_S = 60
TOP_FUNCTIONS = 12
PASS_THROUGH = 0.97
# Package of a frame, by the first path fragment that matches; order matters.
PACKAGES = (
    ("pymysqlreplication", "pymysqlreplication (binlog decoding)"),
    ("/pymysql/", "pymysql (MySQL protocol)"),
    ("/projections/", "projections (our pure core)"),
    ("cdc_worker", "cdc_worker (our adapters and loop)"),
    ("/redis/", "redis-py"),
    ("orjson", "orjson"),
    ("/starlette/", "starlette"),
    ("/fastapi/", "fastapi"),
    ("/uvicorn/", "uvicorn"),
    ("/pydantic", "pydantic"),
    ("/anyio/", "anyio"),
    ("/prometheus_client/", "prometheus_client"),
    ("asyncio", "asyncio (event loop)"),
    ("structlog", "structlog"),
)


def py_spy() -> str:
    """The py-spy binary installed beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is needed: .venv/bin/pip install py-spy")
    return found


def start_recording(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` (all its threads) until ``stop_recording``; speedscope format."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy(), "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ)]
    command += ["--format", "speedscope", "--output", str(out), "--nonblocking"]
    command += ["--subprocesses"]  # the worker's binlog reader may run in a child process
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_recording(recorder: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write the file out; wait for it."""
    recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


def load_samples(path: Path) -> tuple[list[dict[str, Any]], list[tuple[list[int], float, int]]]:
    """The frames, and every (stack, weight, thread number) sample in a speedscope file."""
    data = json.loads(path.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    samples = []
    for thread, profile in enumerate(data["profiles"]):
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            samples.append((stack, weight, thread))
    return frames, samples


def package_of(frame: dict[str, Any]) -> str:
    """The package a frame's file belongs to, or "other"."""
    where = str(frame.get("file", ""))
    for fragment, name in PACKAGES:
        if fragment in where:
            return name
    return "other (stdlib, interpreter)"


def frame_label(frame: dict[str, Any]) -> str:
    """``function (file)`` with the path shortened to its last two parts: a function's lines
    count together."""
    short = "/".join(Path(str(frame.get("file", "?"))).parts[-2:])
    return f"{frame['name']} ({short})"


def summarize(path: Path, top: int = TOP_FUNCTIONS) -> dict[str, Any]:
    """Self-time shares per function and per package, total-time shares per function."""
    frames, samples = load_samples(path)
    labels = [frame_label(frame) for frame in frames]
    total = sum(weight for _, weight, _ in samples) or 1.0
    own: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    packages: dict[str, float] = defaultdict(float)
    callees: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for stack, weight, _ in samples:
        if stack:  # speedscope stacks run root first, leaf last
            own[labels[stack[-1]]] += weight
            packages[package_of(frames[stack[-1]])] += weight
        for label in {labels[i] for i in stack}:
            inclusive[label] += weight
        for caller, callee in {(labels[a], labels[b]) for a, b in itertools.pairwise(stack)}:
            callees[caller][callee] += weight
    stdlib = stdlib_labels(frames)
    # A frame that hands (nearly) all its time to one callee, like a thread's entry points,
    # says nothing about where the time goes; neither do the standard library's frames.
    telling = [
        label
        for label in most_common(inclusive)
        if label not in stdlib
        and max(callees[label].values(), default=0.0) < PASS_THROUGH * inclusive[label]
    ]
    return {
        "file": path.name,
        "samples": len(samples),
        "threads": thread_shares(path),
        "self": [(label, own[label] / total) for label in most_common(own)[:top]],
        "total": [(label, inclusive[label] / total) for label in telling[:top]],
        "packages": [(name, packages[name] / total) for name in most_common(packages)],
    }


def stdlib_labels(frames: list[dict[str, Any]]) -> set[str]:
    """Labels of the standard library's and the event loop's frames."""
    return {frame_label(f) for f in frames if package_of(f).startswith(("other", "asyncio"))}


def most_common(weights: dict[Any, float]) -> list[Any]:
    """Keys by weight, heaviest first."""
    return sorted(weights, key=lambda key: -weights[key])


def thread_shares(path: Path) -> list[tuple[str, float]]:
    """Each sampled thread's share of all samples (py-spy writes one profile per thread)."""
    profiles = json.loads(path.read_text())["profiles"]
    weights = {str(p["name"]): float(sum(p["weights"])) for p in profiles}
    total = sum(weights.values()) or 1.0
    return sorted(((n, w / total) for n, w in weights.items()), key=lambda t: -t[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("speedscope", type=Path)
    args = parser.parse_args()
    summary = summarize(args.speedscope)
    for section in ("threads", "packages", "self", "total"):
        print(f"{section}:")
        for name, share in summary[section]:
            print(f"  {share:6.1%}  {name}")


if __name__ == "__main__":
    main()
