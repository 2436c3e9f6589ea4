"""Private PostgreSQL and Redis servers for fault tests (restarting them disturbs nobody else).

* ``PgServer``: a throw-away cluster (``initdb``) on a free port; ``stop()``/``start()`` restart
  it. initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
* ``RedisServer``: ``redis-server`` on a free port without persistence; stopped by its PID.
* ``fault_servers`` (module scope): both servers; ``fault_env``: OPTFORGE_* pointing at them
  (a fresh database and a flushed Redis per test), settings caches reset before and after.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration.conftest import unavailable
from integration.fixtures_service import reset_service_caches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PgServer:
    """A PostgreSQL cluster in ``root`` listening on 127.0.0.1:``port`` (trust auth)."""

    root: Path
    port: int
    bin_dir: Path

    @property
    def data(self) -> Path:
        return self.root / "pg"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as ``postgres``
            cmd = ["su", "postgres", "-c", " ".join(f"'{a}'" for a in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown: open connections are terminated (what a restart does to clients)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """Teardown: SIGQUIT the postmaster by its PID if it still runs."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
            except (ProcessLookupError, ValueError):
                pass

    def create_database(self) -> str:
        from sqlalchemy import create_engine, text

        name = f"faults_{uuid.uuid4().hex[:8]}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)


@dataclass
class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``, no persistence."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    def start(self) -> None:
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(self.pid_file),
             "--dir", str(self.root)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self.client().ping()

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis(port=self.port, socket_timeout=5)
                client.ping()
                return client
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.pid_file.exists():
            try:
                os.kill(int(self.pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@dataclass
class FaultServers:
    pg: PgServer
    redis: RedisServer


@pytest.fixture(scope="module")
def fault_servers() -> Iterator[FaultServers]:
    """A private PostgreSQL cluster and Redis server for one test module.

    Their directory is a fresh one in the system temp dir: pytest's own tmp dirs are private
    to root, which the ``postgres`` user cannot enter."""
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("redis-server") is None:
        unavailable("PostgreSQL binaries (initdb, pg_ctl) or redis-server not installed")
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="optforge-faults-"))
    pg = PgServer(root, free_port(), bin_dir)
    rds = RedisServer(root, free_port())
    try:
        pg.init()
        pg.start()
        rds.start()
    except (subprocess.SubprocessError, OSError) as exc:
        pg.kill()
        rds.stop()
        stderr = getattr(exc, "stderr", b"") or b""
        unavailable(f"could not start private PostgreSQL/Redis: {exc} {stderr[-500:]!r}")
    yield FaultServers(pg, rds)
    rds.stop()
    pg.kill()
    time.sleep(0.5)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fault_env(
    fault_servers: FaultServers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """OPTFORGE_* for the private servers: a new, migrated database and a flushed Redis."""
    from migrations.runner import upgrade

    url = fault_servers.pg.create_database()
    env = {
        "OPTFORGE_DATA_DIR": str(tmp_path / "optforge"),
        "OPTFORGE_DATABASE_URL": url,
        "OPTFORGE_OPTUNA_STORAGE_URL": fault_servers.pg.create_database(),
        "OPTFORGE_BROKER_URL": fault_servers.redis.url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fault_servers.redis.client().flushall()
    reset_service_caches()
    upgrade(url)
    yield env
    reset_service_caches()
