"""Redis over TLS with an ACL user, both configured through CDC_REDIS_URL alone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from cdc_worker.api.app import create_app
from cdc_worker.devtools.localservers import free_port
from cdc_worker.devtools.seed import seed
from cdc_worker.settings import load_settings
from tests.conftest import SourceDatabase
from tests.harness import wait_synced, worker_env, worker_thread
from tests.integration.test_tls import make_certificates

ACL_PASSWORD = "acl-pass-7d1e"


@pytest.fixture
def tls_redis_url(tmp_path: Path) -> Iterator[str]:
    certs = make_certificates(tmp_path / "certs")
    port = free_port()
    log = (tmp_path / "redis.log").open("wb")
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certs["server"]),
            "--tls-key-file",
            str(certs["server-key"]),
            "--tls-ca-cert-file",
            str(certs["ca"]),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--user",
            "default",
            "off",
            "--user",
            "cdc",
            "on",
            f">{ACL_PASSWORD}",
            "~*",
            "&*",
            "+@all",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"rediss://cdc:{ACL_PASSWORD}@127.0.0.1:{port}/1?ssl_ca_certs={certs['ca']}"
    try:
        wait_for(url)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with redis.Redis.from_url(url) as client:
                client.ping()
                return
        except redis.RedisError:
            assert time.monotonic() < deadline, "TLS Redis did not answer"
            time.sleep(0.1)


def test_worker_api_and_check_work_over_tls_with_an_acl_user(
    source_db: SourceDatabase, tls_redis_url: str
) -> None:
    seed(source_db.engine, 40)
    with worker_thread(source_db.cdc_url, tls_redis_url):
        wait_synced(source_db.engine, tls_redis_url)
        with TestClient(create_app(load_settings(redis_url=tls_redis_url))) as api:
            deadline = time.monotonic() + 20
            while (ready := api.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
            page = api.get("/tickets", params={"limit": 5})
            assert page.status_code == 200
            first = page.json()["tickets"][0]
            single = api.get(f"/tickets/{first['id']}")  # the pipelined single-read path
            assert single.status_code == 200
            assert single.json() == first
        check = subprocess.run(
            [sys.executable, "-m", "cdc_worker.cli", "check"],
            env=worker_env(source_db.cdc_url, tls_redis_url),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert check.returncode == 0, check.stdout + check.stderr
    assert ACL_PASSWORD not in check.stdout + check.stderr


def test_a_wrong_acl_password_is_refused_without_printing_it(
    source_db: SourceDatabase, tls_redis_url: str
) -> None:
    wrong = tls_redis_url.replace(ACL_PASSWORD, "not-the-password-9")
    check = subprocess.run(
        [sys.executable, "-m", "cdc_worker.cli", "check"],
        env=worker_env(source_db.cdc_url, wrong),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 1
    assert "not-the-password-9" not in check.stdout + check.stderr


def test_a_certificate_from_another_ca_exits_2_instead_of_waiting(
    source_db: SourceDatabase, tls_redis_url: str, tmp_path: Path
) -> None:
    other_ca = make_certificates(tmp_path / "other")["ca"]
    url = tls_redis_url.split("?")[0] + f"?ssl_ca_certs={other_ca}"
    worker = subprocess.run(
        [sys.executable, "-m", "cdc_worker.cli", "run"],
        env=worker_env(source_db.cdc_url, url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 2, worker.stderr
    [line] = [line for line in worker.stderr.splitlines() if "TLS handshake" in line]
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert ACL_PASSWORD not in worker.stdout + worker.stderr
