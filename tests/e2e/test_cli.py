"""The command line as a user runs it: the demo, migrate and seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from cdc_worker.devtools.localservers import MariaDBServer

CLI = [sys.executable, "-m", "cdc_worker.cli"]
ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}


def test_the_demo_builds_a_live_read_model_and_shows_a_live_change(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "demo", "--tickets", "300", "--once", "--state-dir", str(tmp_path / "demo")],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "read model ready:" in result.stdout
    assert "a live UPDATE reached Redis in" in result.stdout
    assert "API:    http://127.0.0.1:" in result.stdout
    assert "cdc-local-secret" not in result.stdout + result.stderr


def test_ctrl_c_stops_the_demo_its_worker_and_its_servers(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    demo = subprocess.Popen(
        [*CLI, "demo", "--tickets", "100", "--state-dir", str(state)],
        env=CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    deadline = time.monotonic() + 240
    for line in demo.stdout:
        if "Ctrl-C stops" in line or time.monotonic() > deadline:
            break
    os.killpg(demo.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    demo.stdout.read()
    demo.stdout.close()
    assert demo.wait(60) == 0
    leftovers = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == ""


def test_migrate_and_seed_use_the_admin_url_and_report_their_rate(
    mariadb: MariaDBServer,
) -> None:
    root_url, _ = mariadb.create_database("e2e_cli")
    env = {**CLEAN_ENV, "CDC_ADMIN_MYSQL_URL": root_url}
    subprocess.run([*CLI, "migrate"], env=env, check=True, timeout=120)
    seeded = subprocess.run(
        [*CLI, "seed", "--tickets", "200"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "rows/s" in seeded.stdout
    engine = create_engine(root_url)
    try:
        assert "tickets" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM tickets")).scalar_one() == 200
    finally:
        engine.dispose()
    subprocess.run([*CLI, "migrate", "--downgrade", "--revision", "base"], env=env, check=True)
    alembic = str(Path(sys.executable).with_name("alembic"))
    subprocess.run([alembic, "upgrade", "head"], env=env, check=True, cwd=ROOT)
    subprocess.run([alembic, "downgrade", "base"], env=env, check=True, cwd=ROOT)
