"""The PostgreSQL server on 127.0.0.1:5432 (trust auth): tests make fresh databases on it and drop them."""

from __future__ import annotations

import subprocess
import uuid

PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
SKIP_REASON = "no PostgreSQL answers on 127.0.0.1:5432"


def postgres_available() -> bool:
    return subprocess.run(["pg_isready", "-h", PG["host"], "-p", PG["port"]], capture_output=True).returncode == 0


def psql(sql: str, database: str = "postgres") -> str:
    done = subprocess.run(["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", database, "-tAc", sql],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url(database: str) -> str:
    return f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{database}"
