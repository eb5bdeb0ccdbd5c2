"""Shared set-up for the service tests: a control plane on SQLite (and PostgreSQL when
DCL_TEST_POSTGRES_URL is set), one API server for the session, small datasets."""

from __future__ import annotations

import io
import secrets
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from service.control.clock import FakeClock
from service.control.db import Database
from service.control.plane import ControlPlane
from service.control.settings import Settings
from tests.fixtures.servers import run_api_server

ALICE, BOB, CAROL = "alice-key-0123456789", "bob-key-9876543210", "carol-key-5555555555"
OPERATOR = "operator-key-4444444444"


@pytest.fixture
def clock() -> FakeClock:
    """The time the `plane` fixture sees: it moves only when the test advances it."""
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def plane(request, tmp_path, clock):
    """A fresh control plane: its database SQLite in tmp_path, or a schema of its own in the test
    PostgreSQL; its broker the embedded SQLite one under tmp_path (submits send real messages)."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/store.db")
    else:
        db = Database(request.getfixturevalue("postgres_url"), schema=f"dcl_test_{secrets.token_hex(6)}")
    p = ControlPlane(settings, db=db, clock=clock)
    try:
        yield p
    finally:
        if db.schema is not None:
            db.drop()
        p.close()


def png_bytes(color=(255, 0, 0), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def image_zip(path: Path, per_class: int = 3) -> Path:
    members = {}
    for cls, color in (("cat", (200, 30, 30)), ("dog", (30, 200, 30))):
        for i in range(per_class):
            members[f"pets/{cls}/{i}.png"] = png_bytes(color)
    return make_zip(path, members)


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    """One API for the service tests: two keys, a small upload cap, quick event streams.
    Tests share it, so each works on jobs and datasets it made itself."""
    data_dir = tmp_path_factory.mktemp("api") / "data"
    env = {
        "DCL_MAX_UPLOAD_BYTES": "300000",
        "DCL_SSE_POLL_SECONDS": "0.05",
        "DCL_SSE_KEEPALIVE_SECONDS": "0.2",
        "DCL_MAX_ACTIVE_JOBS_PER_KEY": "10000",  # jobs stay queued here: no worker runs
        "DCL_OPERATOR_KEYS": OPERATOR,
    }
    with run_api_server(data_dir, keys=[ALICE, BOB, CAROL], env=env) as server:
        yield server


@pytest.fixture(scope="session")
def api_plane(api):
    """A control plane on the API's own database and broker, opened from the test (as a worker would)."""
    p = ControlPlane(Settings(data_dir=api.data_dir))
    yield p
    p.close()


@pytest.fixture
def alice(api):
    with api.client(ALICE) as c:
        yield c


@pytest.fixture
def bob(api):
    with api.client(BOB) as c:
        yield c
