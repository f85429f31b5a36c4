"""The demo: private servers, schema, sample data and the worker, until Ctrl-C.

Uses CDC_MYSQL_URL/CDC_REDIS_URL when they are set; otherwise starts private MariaDB and
Redis under the state directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import orjson
import redis
from sqlalchemy import create_engine, text

from cdc_worker import keys, migrate
from cdc_worker.localservers import start_mariadb, start_redis
from cdc_worker.seed import seed
from cdc_worker.settings import Settings, mask_url

READY_TIMEOUT_S = 120.0


def _servers(settings: Settings, state_dir: Path, stack: ExitStack) -> dict[str, str]:
    """The CDC_ variables for the worker: given ones, or private servers'."""
    given = {"mysql_url", "redis_url"} & settings.model_fields_set
    if given:
        return {
            "CDC_MYSQL_URL": settings.mysql_url.get_secret_value(),
            "CDC_ADMIN_MYSQL_URL": settings.admin_url,
            "CDC_REDIS_URL": settings.redis_url.get_secret_value(),
        }
    shutil.rmtree(state_dir, ignore_errors=True)
    mariadb = start_mariadb(state_dir / "mariadb")
    stack.callback(mariadb.stop)
    redis_server = start_redis(state_dir / "redis")
    stack.callback(redis_server.stop)
    redis.Redis.from_url(redis_server.url).flushdb()
    return {
        "CDC_MYSQL_URL": mariadb.cdc_url,
        "CDC_ADMIN_MYSQL_URL": mariadb.root_url,
        "CDC_REDIS_URL": redis_server.url,
    }


def _prepare_source(admin_url: str, tickets: int) -> int:
    migrate.upgrade(admin_url)
    engine = create_engine(admin_url)
    try:
        report = seed(engine, tickets)
        print(f"seeded {report.total_rows:,} rows in {report.seconds:.1f} s")
        with engine.connect() as conn:
            live = conn.execute(text("SELECT COUNT(*) FROM tickets WHERE is_deleted = 0"))
            return int(live.scalar_one())
    finally:
        engine.dispose()


def _start_worker(env: dict[str, str], stack: ExitStack) -> subprocess.Popen[bytes]:
    child_env = {**os.environ, **env, "CDC_LOG_FORMAT": "console"}
    worker = subprocess.Popen([sys.executable, "-m", "cdc_worker.cli", "run"], env=child_env)

    def stop() -> None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)

    stack.callback(stop)
    return worker


def _wait_for(client: redis.Redis, count: int, worker: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while client.hlen(keys.DOCUMENTS) != count:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with status {worker.returncode}")
        if time.monotonic() - started > READY_TIMEOUT_S:
            raise SystemExit("the read model did not fill in time")
        time.sleep(0.05)
    return time.monotonic() - started


def _live_change(admin_url: str, client: redis.Redis) -> float:
    engine = create_engine(admin_url)
    title = f"Printer on fire 🔥 (demo at {time.strftime('%H:%M:%S')})"
    try:
        with engine.begin() as conn:
            ticket_id = conn.execute(text("SELECT MIN(id) FROM tickets WHERE is_deleted = 0"))
            chosen = int(ticket_id.scalar_one())
            conn.execute(
                text("UPDATE tickets SET title = :t WHERE id = :i"), {"t": title, "i": chosen}
            )
        started = time.monotonic()
        while orjson.loads(client.hget(keys.DOCUMENTS, str(chosen)) or b"{}").get("title") != title:
            time.sleep(0.001)
        return time.monotonic() - started
    finally:
        engine.dispose()


def _print_summary(env: dict[str, str], count: int, fill_s: float, change_s: float) -> None:
    print(f"\nread model ready: {count:,} documents in hash '{keys.DOCUMENTS}' in {fill_s:.1f} s")
    print(f"a live UPDATE reached Redis in {change_s * 1000:.1f} ms")
    print(f"  MySQL:  {mask_url(env['CDC_MYSQL_URL'])}")
    print(f"  Redis:  {env['CDC_REDIS_URL']}")
    redis_port = env["CDC_REDIS_URL"].rsplit(":", 1)[-1].split("/")[0]
    print("try:")
    print(f"  redis-cli -p {redis_port} -n 1 HLEN tickets")
    print(f"  redis-cli -p {redis_port} -n 1 HGET tickets 1")
    print("Ctrl-C stops the worker and the servers.")


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run everything; ``--once`` exits after the live change (used by the e2e test)."""
    with ExitStack() as stack:
        env = _servers(settings, Path(args.state_dir), stack)
        count = _prepare_source(env["CDC_ADMIN_MYSQL_URL"], args.tickets)
        worker = _start_worker(env, stack)
        client = redis.Redis.from_url(env["CDC_REDIS_URL"])
        stack.callback(client.close)
        fill_s = _wait_for(client, count, worker)
        change_s = _live_change(env["CDC_ADMIN_MYSQL_URL"], client)
        _print_summary(env, count, fill_s, change_s)
        if not args.once:
            try:
                worker.wait()
            except KeyboardInterrupt:
                print("\nstopping...")
    return 0
