"""Private MariaDB and Redis processes for tests, the demo and benchmarks.

Each server lives in its own directory, listens on 127.0.0.1 only and is started with the
binlog settings the worker depends on. MariaDB datadirs are copied from a template built once
per MariaDB version, so a fresh server costs well under a second.

CLI: ``python -m cdc_worker.devtools.localservers up DIR`` prints ``export CDC_...=`` lines,
``python -m cdc_worker.devtools.localservers down DIR`` stops what ``up`` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pymysql
import redis

from cdc_worker.errors import LocalServerError

INSTALL_HINT = "apt-get install -y mariadb-server redis-server"
CDC_USER = "cdc"
# Only ever exists on private servers bound to 127.0.0.1.
CDC_PASSWORD = "cdc-local-secret"
READY_TIMEOUT_S = 30.0
PRIVATE_PORTS = (20_000, 32_000)  # below Linux's default ephemeral range (32768-60999)
PORT_BUSY_TIMEOUT_S = 90.0
_Server = TypeVar("_Server")
STOP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.02
SOCKET_PATH_MAX_CHARS = 100
COPY_BLOCK_BYTES = 1 << 20
MARIADB_FLAGS = (
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--server-id=1",
    "--log-bin=mysql-bin",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--max-allowed-packet=64M",
    "--innodb-buffer-pool-size=256M",
)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM a child process still running and wait up to ``timeout_s`` for it; SIGKILL
    it if it does not exit by then."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral range.

    Not from the kernel's ephemeral range (bind to port 0): outgoing connections take their
    source ports from that range, so while a server is down for a restart, a reconnecting
    client could take its port and the server could not listen on it again.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*PRIVATE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LocalServerError(f"no free port in {PRIVATE_PORTS} on 127.0.0.1")


def _while_port_busy(start: Callable[[], _Server]) -> _Server:
    """Retry a restart while the old port cannot be bound yet: after a SIGKILL, the killed
    server's sockets can keep the port busy for a while (seen in soak runs)."""
    deadline = time.monotonic() + PORT_BUSY_TIMEOUT_S
    while True:
        try:
            return start()
        except LocalServerError as exc:
            busy = "in use" in str(exc) or "Address already" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise LocalServerError(f"{name} is not installed; install it with: {INSTALL_HINT}")
    return found


def _user_flags() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []


def _pid_alive(pid: int) -> bool:
    proc = Path("/proc")
    if proc.is_dir():
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}  # zombies are dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def _signal_and_wait(
    pid_file: Path, signum: signal.Signals, timeout_s: float, pid: int | None = None
) -> None:
    pid = pid or _read_pid(pid_file)
    if pid is None or not _pid_alive(pid):
        return
    os.kill(pid, signum)
    if not _wait_gone(pid, timeout_s):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, timeout_s)


def _spawn_detached(command: Sequence[str]) -> int:
    """Start ``command`` as a daemon outside our process tree and return its pid."""
    # No Popen object survives, so nothing warns or needs reaping when a server object is
    # dropped; the process lives until stop() or kill(), like the daemonized redis-server.
    shell = subprocess.run(
        ["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *command],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    return int(shell.stdout)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


def _cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ticket-sync"


def _mariadb_version() -> str:
    out = subprocess.run([_binary("mariadbd"), "--version"], capture_output=True, text=True)
    words = out.stdout.split()
    return words[words.index("Ver") + 1] if "Ver" in words else "unknown"


def _mariadb_template() -> Path:
    """Return a pristine datadir for this MariaDB version, building it once (race-safe)."""
    template = _cache_root() / f"mariadb-template-{_mariadb_version()}"
    if template.is_dir():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=template.parent))
    try:
        _install_db(building / "datadir")
        try:
            (building / "datadir").rename(template)
        except OSError:
            if not template.is_dir():  # another process winning the race is fine
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return template


def _install_db(datadir: Path) -> None:
    command = [_binary("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}"]
    command += [*_user_flags(), "--auth-root-authentication-method=normal", "--skip-test-db"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise LocalServerError(f"mariadb-install-db failed:\n{done.stdout}\n{done.stderr}")


def _sparse_copy(source: str, target: str) -> str:
    """Copy a file leaving holes for zero blocks: InnoDB's redo log is ~96 MB of zeros."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(COPY_BLOCK_BYTES):
            if block.count(0) == len(block):
                writer.seek(len(block), os.SEEK_CUR)
            else:
                writer.write(block)
        writer.truncate()
    shutil.copystat(source, target)
    return target


def _socket_path(base_dir: Path, port: int) -> Path:
    preferred = base_dir / "mariadb.sock"
    if len(str(preferred)) <= SOCKET_PATH_MAX_CHARS:
        return preferred
    return Path(tempfile.gettempdir()) / f"ticket-sync-mariadb-{port}.sock"


def _mysql_url(user: str, port: int, database: str) -> str:
    return f"mysql+pymysql://{user}@127.0.0.1:{port}/{database}"


@contextlib.contextmanager
def _root_cursor(port: int) -> Iterator[pymysql.cursors.Cursor]:
    connection = pymysql.connect(
        host="127.0.0.1", port=port, user="root", connect_timeout=2, autocommit=True
    )
    try:
        yield connection.cursor()
    finally:
        connection.close()


def _stop_mariadb(port: int, pid_file: Path) -> None:
    pid = _read_pid(pid_file)
    if pid is None or not _pid_alive(pid):
        return
    admin = [_binary("mariadb-admin"), "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{port}"]
    subprocess.run([*admin, "--connect-timeout=5", "shutdown"], capture_output=True)
    _signal_and_wait(pid_file, signal.SIGTERM, STOP_TIMEOUT_S)  # no-op once it has exited


@dataclass(frozen=True)
class MariaDBServer:
    """A private mariadbd with a ROW/FULL binlog; root has an empty password."""

    port: int
    base_dir: Path
    datadir: Path
    socket: Path
    pid_file: Path
    database: str
    root_url: str
    cdc_url: str

    @property
    def error_log(self) -> Path:
        return self.base_dir / "mariadb.err"

    def stop(self) -> None:
        """Shut down cleanly (whichever process serves this datadir) and wait for exit."""
        _stop_mariadb(self.port, self.pid_file)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        _signal_and_wait(self.pid_file, signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self, extra_flags: Sequence[str] = ()) -> MariaDBServer:
        """Start again on the same port and datadir (stopping first if still running)."""
        self.stop()
        return _while_port_busy(lambda: self._launch(extra_flags))

    def create_database(self, name: str) -> tuple[str, str]:
        """Create database ``name``, let cdc read it, return its (root_url, cdc_url)."""
        with self._root_connection() as cursor:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            for host in ("127.0.0.1", "localhost"):
                cursor.execute(f"GRANT SELECT ON `{name}`.* TO %s@%s", (CDC_USER, host))
        cdc = f"{CDC_USER}:{CDC_PASSWORD}"
        return _mysql_url("root", self.port, name), _mysql_url(cdc, self.port, name)

    def _root_connection(self) -> contextlib.AbstractContextManager[pymysql.cursors.Cursor]:
        return _root_cursor(self.port)

    def _launch(self, extra_flags: Sequence[str]) -> MariaDBServer:
        # Its own tmpdir: MariaDB deletes "stale" #sql temp files in tmpdir when it starts, so
        # servers sharing /tmp delete each other's live temporary tables (seen in soak runs).
        tmpdir = self.base_dir / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        command = [_binary("mariadbd"), "--no-defaults", f"--datadir={self.datadir}"]
        command += [f"--tmpdir={tmpdir}"]
        command += [f"--socket={self.socket}", f"--port={self.port}", *_user_flags()]
        command += [f"--pid-file={self.pid_file}", f"--log-error={self.error_log}"]
        self._wait_ready(_spawn_detached([*command, *MARIADB_FLAGS, *extra_flags]))
        return self

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with self._root_connection():
                    return
            except pymysql.err.OperationalError:
                if not _pid_alive(pid) or time.monotonic() > deadline:
                    _signal_and_wait(self.pid_file, signal.SIGKILL, STOP_TIMEOUT_S, pid)
                    raise LocalServerError(
                        f"MariaDB on port {self.port} did not start; "
                        f"{self.error_log} ends with:\n{_log_tail(self.error_log)}"
                    ) from None
                time.sleep(POLL_INTERVAL_S)


def start_mariadb(
    base_dir: Path,
    *,
    port: int | None = None,
    database: str = "helpdesk",
    extra_flags: Sequence[str] = (),
) -> MariaDBServer:
    """Start a private MariaDB in ``base_dir`` (reusing its datadir if one is there)."""
    _binary("mariadbd")
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    datadir = base_dir / "datadir"
    if not datadir.exists():
        shutil.copytree(_mariadb_template(), datadir, copy_function=_sparse_copy)
    port = port or free_port()
    cdc = f"{CDC_USER}:{CDC_PASSWORD}"
    server = MariaDBServer(
        port=port,
        base_dir=base_dir,
        datadir=datadir,
        socket=_socket_path(base_dir, port),
        pid_file=base_dir / "mariadb.pid",
        database=database,
        root_url=_mysql_url("root", port, database),
        cdc_url=_mysql_url(cdc, port, database),
    )._launch(extra_flags)
    _create_cdc_user(server)
    server.create_database(database)
    return server


def _create_cdc_user(server: MariaDBServer) -> None:
    with server._root_connection() as cursor:
        for host in ("127.0.0.1", "localhost"):
            account = (CDC_USER, host)
            cursor.execute(
                "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (*account, CDC_PASSWORD)
            )
            cursor.execute("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO %s@%s", account)


@dataclass(frozen=True)
class RedisServer:
    """A private, non-persistent redis-server; ``url`` points at database 1."""

    port: int
    base_dir: Path
    url: str
    extra_args: tuple[str, ...] = ()

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "redis.log"

    def stop(self) -> None:
        """SIGTERM (nothing is saved) and wait for exit."""
        _signal_and_wait(self.pid_file, signal.SIGTERM, STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        _signal_and_wait(self.pid_file, signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self) -> RedisServer:
        """Start again on the same port; the new server is empty."""
        self.stop()
        return _while_port_busy(
            lambda: start_redis(self.base_dir, port=self.port, extra_args=self.extra_args)
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
                    client.ping()
                    return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise LocalServerError(
                        f"Redis on port {self.port} did not answer PING; "
                        f"{self.log_file} ends with:\n{_log_tail(self.log_file)}"
                    ) from None
                time.sleep(POLL_INTERVAL_S)


def start_redis(
    base_dir: Path, *, port: int | None = None, extra_args: Sequence[str] = ()
) -> RedisServer:
    """Start a private daemonized redis-server in ``base_dir``."""
    base_dir = base_dir.resolve()
    (base_dir / "redis-data").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    server = RedisServer(port, base_dir, f"redis://127.0.0.1:{port}/1", tuple(extra_args))
    command = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "yes"]
    command += ["--pidfile", str(server.pid_file), "--logfile", str(server.log_file)]
    command += ["--dir", str(base_dir / "redis-data"), *extra_args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise LocalServerError(f"redis-server failed:\n{done.stdout}\n{done.stderr}")
    server._wait_ready()
    return server


def _up(base_dir: Path) -> None:
    mariadb = start_mariadb(base_dir)
    try:
        redis_server = start_redis(base_dir)
    except LocalServerError:
        mariadb.stop()
        raise
    state = {"mariadb_port": mariadb.port, "redis_port": redis_server.port}
    (base_dir / "servers.json").write_text(json.dumps(state))
    print(f"export CDC_MYSQL_URL='{mariadb.cdc_url}'")
    print(f"export CDC_REDIS_URL='{redis_server.url}'")
    print(f"export CDC_ADMIN_MYSQL_URL='{mariadb.root_url}'")


def _down(base_dir: Path) -> None:
    base_dir = base_dir.resolve()
    state = json.loads((base_dir / "servers.json").read_text())
    _stop_mariadb(int(state["mariadb_port"]), base_dir / "mariadb.pid")
    RedisServer(int(state["redis_port"]), base_dir, "").stop()
    (base_dir / "servers.json").unlink()


def main(argv: Sequence[str]) -> int:
    """``up DIR`` or ``down DIR``; returns the exit code."""
    if len(argv) != 2 or argv[0] not in {"up", "down"}:
        print("usage: python -m cdc_worker.devtools.localservers up|down DIR", file=sys.stderr)
        return 2
    try:
        (_up if argv[0] == "up" else _down)(Path(argv[1]))
    except LocalServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
