"""A throwaway PostgreSQL server on this machine, for the deployment test and the instance benchmark.

It runs the distribution's own server binaries (Debian/Ubuntu: `apt-get install postgresql`; `.ci/run`
installs them when missing). initdb refuses to run as root, so under root the server runs as an
unprivileged user (`postgres` when the package created it, else `nobody`) through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from batch_assets_tests.local.helpers import free_port

DEBIAN_SERVER_BINARIES = Path("/usr/lib/postgresql")


class PostgresNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str
    log_path: Path

    def dagster_env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads to reach this server."""
        return {"DAGSTER_POSTGRES_HOST": self.host, "DAGSTER_POSTGRES_PORT": str(self.port),
                "DAGSTER_POSTGRES_USER": self.user, "DAGSTER_POSTGRES_PASSWORD": self.password,
                "DAGSTER_POSTGRES_DB": self.database}

    def create_database(self, name: str) -> str:
        """A new database on this server; returns its SQLAlchemy URL (what BATCH_ASSETS_LEDGER_URL takes)."""
        con = self.connect()
        try:
            con.autocommit = True
            with con.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{name}"

    def connect(self, database: str | None = None) -> psycopg2.extensions.connection:
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=database or self.database)


def server_binaries() -> Path:
    """The folder holding initdb and pg_ctl: from PATH, else the newest Debian server package."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = sorted(DEBIAN_SERVER_BINARIES.glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return candidates[-1].parent
    raise PostgresNotInstalled(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: install them (Debian/Ubuntu: "
        "`apt-get install postgresql`, which `bash .ci/run` does when they are missing) or put their folder "
        "on PATH")


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresNotInstalled("running as root, and neither a `postgres` nor a `nobody` user exists to run "
                               "PostgreSQL as (initdb refuses root): create one, or run the tests as another user")


def _run(command: list[str], cwd: Path, log_path: Path, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        server_log = log_path.read_text()[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stdout}{result.stderr}{server_log}")


@contextmanager
def running_postgres(*, durable: bool = True, database: str = "dagster") -> Iterator[PostgresServer]:
    """A fresh server on a free loopback port with password authentication, stopped and deleted on exit.
    durable=False turns fsync off: faster, and fine for a server that lives for one test."""
    binaries = server_binaries()
    # Not under pytest's tmp_path: that folder is private to root and the server may run as another user.
    root = Path(tempfile.mkdtemp(prefix="batch_assets_postgres_"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = _unprivileged_user()
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", user.pw_name, "--"]
    server = PostgresServer(host="127.0.0.1", port=free_port(), user="dagster", password=secrets.token_hex(16),
                            database=database, log_path=root / "server.log")
    password_file = root / "password"
    password_file.write_text(server.password)
    if run_as:
        os.chown(password_file, user.pw_uid, user.pw_gid)
    data = root / "data"
    options = [f"-c listen_addresses={server.host}", f"-c port={server.port}", "-c unix_socket_directories=''"]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    started = False
    try:
        _run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", server.user, f"--pwfile={password_file}",
              "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"], root, server.log_path, "initdb")
        _run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(server.log_path), "-w", "-t", "60",
              "-o", " ".join(options), "start"], root, server.log_path, "starting PostgreSQL")
        started = True
        con = server.connect("postgres")
        try:
            con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with con.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{database}"')
        finally:
            con.close()
        yield server
    finally:
        if started:
            _run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], root,
                 server.log_path, "stopping PostgreSQL")
        shutil.rmtree(root, ignore_errors=True)
