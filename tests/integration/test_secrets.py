"""Secrets never reach logs, metrics or error bodies, even when things go wrong."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cdc_worker.devtools.loadgen import run_workload
from cdc_worker.devtools.localservers import CDC_PASSWORD, MariaDBServer, RedisServer, free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from tests.harness import kill_dump_threads, spawn_worker, wait_synced, worker_env

ADMIN_TOKEN = "admin-token-4f9c2e7d"


def get(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())
    except OSError as error:
        return str(error)


def test_a_full_run_with_faults_never_prints_a_password_or_token(
    own_mariadb: MariaDBServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(own_mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    seed(engine, 50)
    worker_port, api_port = free_port(), free_port()
    env = worker_env(
        own_mariadb.cdc_url,
        own_redis.url,
        CDC_ADMIN_TOKEN=ADMIN_TOKEN,
        CDC_WORKER_HTTP_PORT=str(worker_port),
        CDC_API_PORT=str(api_port),
        CDC_LOG_LEVEL="debug",
    )
    worker = spawn_worker(env, tmp_path / "worker.log")
    api_log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "cdc_worker.cli", "api"], env=env, stdout=api_log, stderr=api_log
    )
    bodies: list[str] = []
    try:
        wait_synced(engine, own_redis.url)
        assert kill_dump_threads(own_mariadb.port, wait_s=30) >= 1
        own_redis.kill()
        time.sleep(1.5)
        api_url = f"http://127.0.0.1:{api_port}"
        bodies += [get(f"{api_url}/tickets/1"), get(f"{api_url}/readyz")]
        own_redis.restart()
        engine.dispose()
        own_mariadb.kill()
        own_mariadb.restart()
        run_workload(engine, 30, seed=4)
        wait_synced(engine, own_redis.url, timeout_s=90)
        bodies += [
            get(f"{api_url}/admin/resync/000000000000", "wrong-token"),
            get(f"{api_url}/tickets?cursor=%ff"),
            get(f"http://127.0.0.1:{worker_port}/metrics"),
            get(f"{api_url}/metrics"),
        ]
    finally:
        for process in (worker, api):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        api_log.close()
        engine.dispose()
    everything = "\n".join([*bodies, *(p.read_text() for p in tmp_path.glob("*.log"))])
    assert "session ended" in everything  # the faults really produced error logs
    for secret in (CDC_PASSWORD, ADMIN_TOKEN):
        leaks = [line for line in everything.splitlines() if secret in line]
        assert leaks == [], f"{secret!r} leaked: {leaks[:3]}"


def wait_ready(api_url: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        body = get(f"{api_url}/readyz")
        if '"ready":true' in body.replace(" ", "") or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_passwords_given_as_query_parameters_never_reach_the_logs(
    own_mariadb: MariaDBServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    import redis
    from sqlalchemy import create_engine

    redis_secret, key_secret, admin_secret = "redis-q-secret-71c", "key-q-secret-3a9", "adm-q-5e2"
    with redis.Redis.from_url(own_redis.url) as client:
        client.config_set("requirepass", redis_secret)
    engine = create_engine(own_mariadb.root_url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    seed(engine, 20)
    redis_url = f"{own_redis.url}?password={redis_secret}"
    mysql_url = own_mariadb.cdc_url.replace(f":{CDC_PASSWORD}@", "@") + f"?passwd={CDC_PASSWORD}"
    admin_url = f"{own_mariadb.root_url}?ssl_key_password={key_secret}&PWD={admin_secret}"
    api_port = free_port()
    env = worker_env(
        mysql_url, redis_url, CDC_ADMIN_MYSQL_URL=admin_url, CDC_API_PORT=str(api_port)
    )
    worker = spawn_worker(env, tmp_path / "worker.log")
    api_log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "cdc_worker.cli", "api"], env=env, stdout=api_log, stderr=api_log
    )
    try:
        wait_synced(engine, redis_url)  # both logged in with the query parameters' passwords
        readiness = wait_ready(f"http://127.0.0.1:{api_port}")
    finally:
        for process in (worker, api):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        api_log.close()
        engine.dispose()
    assert '"ready":true' in readiness.replace(" ", "")
    everything = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert '"starting"' in everything
    assert '"api listening"' in everything
    assert "password=***" in everything
    assert "passwd=***" in everything
    for secret in (redis_secret, CDC_PASSWORD, key_secret, admin_secret):
        leaks = [line for line in everything.splitlines() if secret in line]
        assert leaks == [], f"{secret!r} leaked: {leaks[:3]}"
