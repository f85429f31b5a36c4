"""Sampling profiles with py-spy (speedscope files), and where the time goes in them.

py-spy samples only threads that are running (not those blocked in a socket read), so the
shares below are shares of CPU time, per function (self) and per package (self, grouped).

    .venv/bin/python -m bench.profile docs/bench/profile-worker-catchup.speedscope.json
"""

from __future__ import annotations

import argparse
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
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_recording(recorder: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write the file out; wait for it."""
    recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


def load_samples(path: Path) -> tuple[list[dict[str, Any]], list[tuple[list[int], float]]]:
    """The frames and every (stack, weight) sample of every thread in a speedscope file."""
    data = json.loads(path.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    samples = []
    for profile in data["profiles"]:
        samples += list(zip(profile["samples"], profile["weights"], strict=True))
    return frames, samples


def package_of(frame: dict[str, Any]) -> str:
    """The package a frame's file belongs to, or "other"."""
    where = str(frame.get("file", ""))
    for fragment, name in PACKAGES:
        if fragment in where:
            return name
    return "other (stdlib, interpreter)"


def frame_label(frame: dict[str, Any]) -> str:
    """``function (file:line)`` with the path shortened to its last two parts."""
    short = "/".join(Path(str(frame.get("file", "?"))).parts[-2:])
    return f"{frame['name']} ({short}:{frame.get('line', 0)})"


def summarize(path: Path, top: int = TOP_FUNCTIONS) -> dict[str, Any]:
    """Self-time shares per function and per package, total-time shares per function."""
    frames, samples = load_samples(path)
    total = sum(weight for _, weight in samples) or 1.0
    own: dict[int, float] = defaultdict(float)
    inclusive: dict[int, float] = defaultdict(float)
    for stack, weight in samples:
        if stack:
            own[stack[-1]] += weight  # speedscope stacks run root first, leaf last
        for index in set(stack):
            inclusive[index] += weight
    packages: dict[str, float] = defaultdict(float)
    for index, weight in own.items():
        packages[package_of(frames[index])] += weight
    # Thread entry points and the CLI's frames hold every sample: they say nothing.
    telling = [i for i in most_common(inclusive) if not _is_scaffolding(frames[i])]
    return {
        "file": path.name,
        "samples": len(samples),
        "threads": thread_shares(path),
        "self": [(frame_label(frames[i]), own[i] / total) for i in most_common(own)[:top]],
        "total": [(frame_label(frames[i]), inclusive[i] / total) for i in telling[:top]],
        "packages": [(name, packages[name] / total) for name in most_common(packages)],
    }


def most_common(weights: dict[Any, float]) -> list[Any]:
    """Keys by weight, heaviest first."""
    return sorted(weights, key=lambda key: -weights[key])


def _is_scaffolding(frame: dict[str, Any]) -> bool:
    where = str(frame.get("file", ""))
    return package_of(frame).startswith("other") or where.endswith("cdc_worker/cli.py")


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
