"""An API server on the job store a test names: SQLite (its own folder) or PostgreSQL (a
database of its own from DCL_TEST_POSTGRES_URL, dropped afterwards)."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures.servers import ApiServer, run_api_server
from tests.integration.helpers import postgres_database

DATABASES = ["sqlite", "postgres"]


@contextmanager
def api_on(database: str, data_dir: Path, *, keys: list[str] | None = None,
           env: dict[str, str] | None = None) -> Iterator[ApiServer]:
    env = dict(env or {})
    with ExitStack() as stack:
        if database == "postgres":
            admin = os.environ.get("DCL_TEST_POSTGRES_URL")
            if not admin:
                pytest.skip("DCL_TEST_POSTGRES_URL is not set")
            env["DCL_DATABASE_URL"] = stack.enter_context(postgres_database(admin))
        yield stack.enter_context(run_api_server(data_dir, keys=keys, env=env))
