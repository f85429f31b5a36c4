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
    assert "/board?department_id=1" in result.stdout
    assert "cdc-local-secret" not in result.stdout + result.stderr


def the_printed_lines_reach_the_demo(printed: list[str]) -> None:
    """Another shell, with exactly the export lines the demo printed: check and resync work,
    and the printed mariadb command line opens the demo's database."""
    text = "".join(printed)
    exports = [line.strip() for line in printed if line.strip().startswith("export ")]
    assert {line.split("=")[0] for line in exports} == {
        "export PATH",
        "export CDC_ADMIN_MYSQL_URL",
        "export CDC_REDIS_URL",
    }, text
    [mariadb] = [line.strip() for line in printed if line.strip().startswith("mariadb ")]
    # A shell where cdc-worker is not on the PATH until the printed line puts it there.
    commands_dir = str(Path(sys.executable).parent)
    path = ":".join(p for p in os.environ["PATH"].split(":") if p != commands_dir)
    commands = ["cdc-worker check", "cdc-worker resync --ticket 1", "cdc-worker seed --tickets 5"]
    script = "\n".join([*exports, *commands])
    shell = subprocess.run(
        ["bash", "-euc", script],
        env={**CLEAN_ENV, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert shell.stdout.startswith("ready\n"), shell.stdout
    assert ": done, 1 ticket rebuilt" in shell.stdout
    assert "(5 tickets)" in shell.stdout
    query = subprocess.run(
        ["bash", "-euc", f"{mariadb} -N -e 'SELECT COUNT(*) > 0 FROM tickets'"],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.strip() == "1"


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
    printed = []
    for line in demo.stdout:
        printed.append(line)
        if "Ctrl-C stops" in line or time.monotonic() > deadline:
            break
    try:
        the_printed_lines_reach_the_demo(printed)
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    demo.stdout.read()
    demo.stdout.close()
    assert demo.wait(60) == 0
    leftovers = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == ""


def cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_migrate_and_seed_use_the_admin_url_and_report_their_rate(
    mariadb: MariaDBServer,
) -> None:
    root_url, _ = mariadb.create_database("e2e_cli")
    env = {**CLEAN_ENV, "CDC_ADMIN_MYSQL_URL": root_url}
    migrated = cli(["migrate"], env)
    where = f"database e2e_cli on 127.0.0.1:{mariadb.port}"
    assert migrated == f"{where}: migrated from base (no tables) to 0001\n"
    assert cli(["migrate"], env) == f"{where}: already at revision 0001; nothing to do\n"
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
    downgraded = cli(["migrate", "--downgrade", "--revision", "base"], env)
    assert downgraded == f"{where}: migrated from 0001 to base\n"
    alembic = str(Path(sys.executable).with_name("alembic"))
    subprocess.run([alembic, "upgrade", "head"], env=env, check=True, cwd=ROOT)
    subprocess.run([alembic, "downgrade", "base"], env=env, check=True, cwd=ROOT)
