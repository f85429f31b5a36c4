"""TLS to MySQL: with ssl_ca in the URL the worker verifies the server and uses TLS for the
snapshot, the start-up checks and the replication stream. (PyMySQL 1.2 already tries TLS
opportunistically without options, unverified; the URL options make it verified.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import create_engine

from cdc_worker.devtools.localservers import MariaDBServer
from cdc_worker.devtools.seed import seed
from cdc_worker.schema.models import Base
from tests.harness import wait_synced, worker_env, worker_thread


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A private CA and a server certificate valid for 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key")}
    csr, ext = folder / "server.csr", folder / "san.ext"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(files["ca-key"]),
        "-out",
        str(files["ca"]),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(files["server-key"]),
        "-out",
        str(csr),
    )
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(files["ca"]),
        "-CAkey",
        str(files["ca-key"]),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(files["server"]),
    )
    return files


@pytest.fixture
def tls_mariadb(own_mariadb: MariaDBServer, tmp_path: Path) -> tuple[MariaDBServer, Path]:
    files = make_certificates(tmp_path)
    server = own_mariadb.restart(
        [
            f"--ssl-ca={files['ca']}",
            f"--ssl-cert={files['server']}",
            f"--ssl-key={files['server-key']}",
        ]
    )
    with (
        pymysql.connect(host="127.0.0.1", port=server.port, user="root") as conn,
        conn.cursor() as cur,
    ):
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"ALTER USER 'cdc'@'{host}' REQUIRE SSL")
    return server, files["ca"]


def test_the_worker_streams_over_tls_when_the_user_requires_it(
    tls_mariadb: tuple[MariaDBServer, Path], redis_url: str
) -> None:
    server, ca = tls_mariadb
    engine = create_engine(server.root_url)
    Base.metadata.create_all(engine)
    seed(engine, 50)
    with worker_thread(f"{server.cdc_url}?ssl_ca={ca}", redis_url):
        wait_synced(engine, redis_url)
        seed(engine, 20, seed=1)  # streamed over the TLS replication connection
        wait_synced(engine, redis_url)
    engine.dispose()


def test_a_server_certificate_from_another_ca_is_refused_with_a_clear_error(
    tls_mariadb: tuple[MariaDBServer, Path], redis_url: str, tmp_path: Path
) -> None:
    server, _ = tls_mariadb
    other_ca = make_certificates(tmp_path / "other")["ca"]
    url = f"{server.cdc_url}?ssl_ca={other_ca}"
    result = subprocess.run(
        [sys.executable, "-m", "cdc_worker.cli", "run"],
        env=worker_env(url, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot connect to CDC_MYSQL_URL" in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
