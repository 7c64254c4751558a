"""Fixtures that start the real server, as an operator would, on free ports.

`xmpp_server` runs `python manage.py runxmpp` in a subprocess with its own
data directory (SQLite), or against PostgreSQL when DATABASE_URL is set
(CI runs the suite both ways). Accounts are made with the real management
commands. Clients then talk to it over real sockets.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port free for TCP and for UDP (STUN listens on both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@dataclass
class RunningServer:
    host: str
    domain: str
    c2s_port: int
    tls_port: int
    http_port: int
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    https_port: int = 0
    accounts: list[str] = field(default_factory=list)

    def manage(self, *args: str, check: bool = True, input: str | None = None):
        """Run a management command against this server's database."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=120,
        )

    def jid(self, user: str, resource: str = "") -> str:
        return f"{user}@{self.domain}/{resource}" if resource else f"{user}@{self.domain}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_port(
    port: int, process: subprocess.Popen, log_path: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port}:\n{log_path.read_text()}")


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server whose files are in `data_dir`. On SQLite
    its database is a file there; on PostgreSQL (DATABASE_URL set) it is a
    database of its own, named after the directory, so that servers started
    side by side (and the flushes they start with) never share accounts."""
    env = dict(os.environ)
    env.update(
        XMPP_DATA_DIR=str(data_dir),
        XMPP_DOMAIN="localhost",
        XMPP_AUTH_FAILURE_DELAY="0.2",
        DJANGO_SETTINGS_MODULE="imserver.settings",
    )
    if env.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        env["DATABASE_URL"] = private_database(env["DATABASE_URL"], data_dir)
    env.update(extra)
    return env


def _database_name(data_dir: Path) -> str:
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return f"test_{digest}"


def private_database(base_url: str, data_dir: Path) -> str:
    """Create (once) the PostgreSQL database of the server in `data_dir`, on
    the server `base_url` names; return its URL."""
    import psycopg
    from psycopg import sql

    name = _database_name(data_dir)
    with psycopg.connect(base_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return base_url.rsplit("/", 1)[0] + "/" + name


def drop_private_database(server: RunningServer) -> None:
    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith(("postgres://", "postgresql://")):
        return
    if server.env.get("DATABASE_URL") != private_database(base_url, server.data_dir):
        return  # the test gave it a database of its own choosing
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(_database_name(server.data_dir))
            )
        )


def start_server(data_dir: Path, **extra_env: str) -> RunningServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    c2s, tls, http, https = free_port(), free_port(), free_port(), free_port()
    # STUN/TURN (stun/): a free port, never 3478; no TLS port unless asked.
    extra_env.setdefault("XMPP_STUN_PORT", str(free_udp_tcp_port()))
    extra_env.setdefault("XMPP_STUN_TLS_PORT", "0")
    env = server_env(data_dir, **extra_env)
    log_path = data_dir / "server.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runxmpp",
            "--host",
            "127.0.0.1",
            "--c2s-port",
            str(c2s),
            "--c2s-tls-port",
            str(tls),
            "--http-port",
            str(http),
            "--https-port",
            str(https),
        ],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(
        "127.0.0.1", "localhost", c2s, tls, http, data_dir, env, process, log_path, https
    )
    try:
        wait_for_port(c2s, process, log_path)
        wait_for_port(http, process, log_path)
    except Exception:
        process.kill()
        raise
    return server


@contextmanager
def private_server(tmp_path_factory, name: str, **env: str) -> Iterator[RunningServer]:
    """A server of its own with `env` overrides (limits, ...), on the suite's
    kind of database (SQLite, or a PostgreSQL database of its own when
    DATABASE_URL is set), with the accounts alice and bob."""
    server = start_server(tmp_path_factory.mktemp(name), **env)
    try:
        server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")
        yield server
    finally:
        stop_server(server)


def stop_server(server: RunningServer, timeout: float = 15, drop_database: bool = True) -> int:
    """SIGTERM, then the server's own PostgreSQL database is dropped, unless
    `drop_database` is false (a test that starts it again on the same data)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    if drop_database:
        drop_private_database(server)
    return server.process.returncode


@pytest.fixture(scope="session")
def xmpp_server(tmp_path_factory) -> RunningServer:
    """One server for the session, with the accounts alice, bob and carol."""
    data_dir = tmp_path_factory.mktemp("xmpp-server")
    env = server_env(data_dir)
    # A clean database: PostgreSQL's `test` is shared between runs.
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [sys.executable, "manage.py", "flush", "--noinput"], cwd=ROOT, env=env, check=True
    )
    server = start_server(data_dir)
    for user in ("alice", "bob", "carol"):
        server.manage("register", user, PASSWORD)
        server.accounts.append(user)
    yield server
    stop_server(server)
