"""One SQL database (SQLite in WAL mode, or PostgreSQL) for the whole control plane: the engine,
its schema migrations at open, and the small helpers every repository shares."""

from __future__ import annotations

import math
import secrets
from typing import Any

from sqlalchemy import create_engine, event, select

from service.control.tables import metadata


class Database:
    """The engine over `database_url`, brought to the newest schema when `create` (Alembic, under
    a lock). `schema` (PostgreSQL only) keeps the tables in their own schema: tests sharing one
    database use a schema each."""

    def __init__(self, database_url: str, *, schema: str | None = None, create: bool = True):
        self.url = database_url
        if database_url.startswith("sqlite"):
            engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30},
                                   pool_size=20, max_overflow=20)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(database_url, pool_pre_ping=True, pool_size=20, max_overflow=20)
        self.schema = schema
        if schema is not None:
            if engine.dialect.name != "postgresql":
                raise ValueError("schema= is for PostgreSQL only")
            with engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            engine = engine.execution_options(schema_translate_map={None: schema})
        self.engine = engine
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        self.upsert = upsert
        """INSERT with ON CONFLICT for this dialect."""
        if create:
            self.migrate()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        from service.control.migrations import upgrade

        upgrade(self.engine, self.schema)

    def drop(self) -> None:
        """Drop the tables (or the whole schema); for tests."""
        if self.schema is not None:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        else:
            metadata.drop_all(self.engine)
            with self.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: they are not JSON (PostgreSQL refuses them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
