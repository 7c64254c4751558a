"""Fixtures that start the real server, as an operator would, on free ports.

`xmpp_server` runs `python manage.py runxmpp` in a subprocess with its own
data directory (SQLite), or against PostgreSQL when DATABASE_URL is set
(CI runs the suite both ways). Accounts are made with the real management
commands. Clients then talk to it over real sockets.

Migrating a database takes seconds and the suite starts dozens of servers,
so the migrations run once per test session, into a template
(`MigratedTemplates`): each server's first start gets a copy of it (a file
on SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL) and runs
`runxmpp --no-migrate`. A server started again on the same data directory
keeps its database.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
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


# Where imserver/settings.py keeps the database when DATABASE_URL is empty.
SQLITE_FILE = "imserver.sqlite3"
# On PostgreSQL, the file in a data directory that says its database was made
# (so a restart keeps it; see MigratedTemplates.give_database).
POSTGRESQL_MARKER = "postgresql-database"


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server whose files are in `data_dir`. On SQLite
    its database is a file there; on PostgreSQL (DATABASE_URL set) it is a
    database of its own, named after the directory, so that servers started
    side by side never share accounts."""
    env = dict(os.environ)
    env.update(
        XMPP_DATA_DIR=str(data_dir),
        XMPP_DOMAIN="localhost",
        XMPP_AUTH_FAILURE_DELAY="0.2",
        DJANGO_SETTINGS_MODULE="imserver.settings",
    )
    if is_postgresql(env.get("DATABASE_URL", "")):
        env["DATABASE_URL"] = private_database_url(env["DATABASE_URL"], data_dir)
    env.update(extra)
    return env


def _database_name(data_dir: Path) -> str:
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return f"test_{digest}"


def with_database(url: str, name: str) -> str:
    """`url` with its database name replaced by `name`."""
    return url.rsplit("/", 1)[0] + "/" + name


def private_database_url(base_url: str, data_dir: Path) -> str:
    """The URL of the PostgreSQL database of the server in `data_dir`, on the
    server `base_url` names (made at the server's first start)."""
    return with_database(base_url, _database_name(data_dir))


def is_private_database(database_url: str, data_dir: Path) -> bool:
    """Whether `database_url` is the PostgreSQL database server_env gives the
    server in `data_dir` (and not one of the test's own choosing)."""
    base_url = os.environ.get("DATABASE_URL", "")
    return is_postgresql(base_url) and database_url == private_database_url(base_url, data_dir)


def run_on_postgresql(base_url: str, *statements) -> None:
    """Run statements outside a transaction, as CREATE/DROP DATABASE must be."""
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def drop_database_statement(name: str):
    from psycopg import sql

    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


def migrate(data_dir: Path, database_url: str) -> None:
    """`manage.py migrate` into `database_url` ("" = SQLite in `data_dir`)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=server_env(data_dir, DATABASE_URL=database_url),
        check=True,
        timeout=300,
    )


class MigratedTemplates:
    """Databases with every migration applied, made once per test session
    (on first use) and copied for each new server, so that no server spends
    its start migrating (about 3.7 s each, for dozens of servers a pass).

    SQLite: `migrate` into a data directory of its own, then VACUUM INTO one
    self-contained file (whatever WAL the migrate process left beside it is
    folded in), which `shutil.copyfile` gives each server.

    PostgreSQL: `migrate` into a template database named after this pytest
    process (other sessions may share the PostgreSQL server), then
    `CREATE DATABASE ... TEMPLATE` per server. PostgreSQL copies a database
    only while nobody is connected to it: only the migrate process ever was,
    and it has exited. The template is dropped when the session ends.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite_file: Path | None = None
        self._postgresql: tuple[str, str] | None = None  # (base URL, template name)

    def sqlite_file(self) -> Path:
        if self._sqlite_file is None:
            migrated = self.directory / "sqlite"
            migrate(migrated, "")
            template = self.directory / SQLITE_FILE
            with closing(sqlite3.connect(migrated / SQLITE_FILE)) as connection:
                connection.execute("VACUUM INTO ?", (str(template),))
            self._sqlite_file = template
        return self._sqlite_file

    def postgresql_template(self, base_url: str) -> str:
        """The name of the template database on `base_url`'s server."""
        if self._postgresql is None:
            from psycopg import sql

            name = f"test_template_{os.getpid()}"
            run_on_postgresql(
                base_url,
                drop_database_statement(name),  # left by an interrupted session of that pid
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)),
            )
            migrate(self.directory / "postgresql", with_database(base_url, name))
            self._postgresql = (base_url, name)
        return self._postgresql[1]

    def give_database(self, data_dir: Path, database_url: str) -> bool:
        """Give the server in `data_dir` a copy of the template as its database,
        unless it has one from an earlier start (a restart keeps its data).
        True if its database is migrated; False for a database of a test's
        own choosing, which runxmpp then migrates at start."""
        if not database_url:
            target = data_dir / SQLITE_FILE
            if not target.exists():
                shutil.copyfile(self.sqlite_file(), target)
            return True
        if not is_private_database(database_url, data_dir):
            return False
        marker = data_dir / POSTGRESQL_MARKER
        if not marker.exists():
            from psycopg import sql

            base_url = os.environ["DATABASE_URL"]
            name = _database_name(data_dir)
            template = self.postgresql_template(base_url)
            run_on_postgresql(
                base_url,
                # A database of that name without the marker is a leftover of
                # an interrupted run (the name comes from the directory's path).
                drop_database_statement(name),
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                ),
            )
            marker.write_text(name)
        return True

    def drop(self) -> None:
        if self._postgresql is not None:
            base_url, name = self._postgresql
            run_on_postgresql(base_url, drop_database_statement(name))
            self._postgresql = None


# start_server is a plain function that tests and fixtures of every scope
# call, so it finds the session's templates here (set by migrated_templates).
_templates: MigratedTemplates | None = None


@pytest.fixture(scope="session", autouse=True)
def migrated_templates(tmp_path_factory) -> Iterator[MigratedTemplates]:
    """The session's migrated templates; each is made when first needed."""
    global _templates
    _templates = MigratedTemplates(tmp_path_factory.mktemp("migrated"))
    yield _templates
    _templates.drop()
    _templates = None


def drop_private_database(server: RunningServer) -> None:
    if not is_private_database(server.env.get("DATABASE_URL", ""), server.data_dir):
        return  # SQLite, or a database of the test's own choosing
    run_on_postgresql(
        os.environ["DATABASE_URL"], drop_database_statement(_database_name(server.data_dir))
    )
    (server.data_dir / POSTGRESQL_MARKER).unlink(missing_ok=True)


def start_server(data_dir: Path, **extra_env: str) -> RunningServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    c2s, tls, http, https = free_port(), free_port(), free_port(), free_port()
    # STUN/TURN (stun/): a free port, never 3478; no TLS port unless asked.
    extra_env.setdefault("XMPP_STUN_PORT", str(free_udp_tcp_port()))
    extra_env.setdefault("XMPP_STUN_TLS_PORT", "0")
    env = server_env(data_dir, **extra_env)
    assert _templates is not None, "start_server runs under pytest (the migrated_templates fixture)"
    migrated = _templates.give_database(data_dir, env.get("DATABASE_URL", ""))
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
            *(["--no-migrate"] if migrated else []),
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
    server = start_server(tmp_path_factory.mktemp("xmpp-server"))
    for user in ("alice", "bob", "carol"):
        server.manage("register", user, PASSWORD)
        server.accounts.append(user)
    yield server
    stop_server(server)
