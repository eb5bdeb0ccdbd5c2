"""Schema migrations (Alembic), shipped inside the package and applied at start.

`upgrade(engine, schema)` brings a job store to the newest revision: the API and every worker
call it when they open the store (`JobStore(...)`), one process at a time under a lock (a
PostgreSQL advisory lock, or a lock file next to a SQLite database). A database made by
the release before migrations (tables, no `alembic_version`) is stamped at the baseline
first, then upgraded.

A new revision: `versions/NNNN_what.py` with `revision`/`down_revision`, and the matching
change to the tables in `service/control/tables.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
"""The schema of the first release (created without Alembic)."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _up_to_date(engine: Engine, schema: str | None) -> bool:
    """One read of alembic_version (every job's process opens the store: keep it cheap and quiet)."""
    try:
        with engine.connect() as conn:
            _use_schema(conn, schema)
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head()
    except DBAPIError:  # no alembic_version yet
        return False


def upgrade(engine: Engine, schema: str | None = None) -> None:
    """Apply pending revisions (none: returns after one read)."""
    if _up_to_date(engine, schema):
        return
    with _exclusive(engine, schema), engine.begin() as conn:
        _use_schema(conn, schema)
        _advisory_lock(conn, schema)
        if current(conn) == head():
            return  # another process did it while we waited
        config = alembic_config(conn)
        if current(conn) is None and inspect(conn).has_table("jobs"):
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


def _use_schema(conn: Connection, schema: str | None) -> None:
    """Unqualified names resolve to `schema` for this transaction (the store's tables and
    alembic_version alike)."""
    if schema is not None:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')


def _advisory_lock(conn: Connection, schema: str | None) -> None:
    """PostgreSQL: hold a transaction-scoped advisory lock (one migrating process at a time)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"dcl-service migrations {schema or ''}".encode()).digest()
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),))


@contextlib.contextmanager
def _exclusive(engine: Engine, schema: str | None):
    """SQLite: an exclusive lock on `DATABASE.migrate.lock` while migrating."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking serialises the DDL
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
