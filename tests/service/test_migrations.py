"""Schema migrations: a job store made by the release before them (0.1.0, no Alembic), or by
an earlier revision with jobs in it, is upgraded in place at start, its rows intact, on SQLite
and PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from datetime import datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text,
    UniqueConstraint, create_engine, insert, inspect,
)

from service.control import migrations
from service.control.db import Database
from service.control.plane import ControlPlane
from service.control.settings import Settings
from service.control.tables import artifacts, jobs, metadata
from tests.fixtures.control import submit

# The tables exactly as release 0.1.0's service/store.py created them (metadata.create_all).
RELEASE_0_1 = MetaData()
Table("jobs", RELEASE_0_1,
      Column("id", String(64), primary_key=True), Column("owner", String(64), nullable=False, index=True),
      Column("type", String(32), nullable=False), Column("status", String(16), nullable=False, index=True),
      Column("spec", JSON, nullable=False), Column("queue", String(64)),
      Column("created_at", DateTime, nullable=False), Column("enqueued_at", DateTime),
      Column("started_at", DateTime), Column("finished_at", DateTime), Column("worker", String(255)),
      Column("attempts", Integer, nullable=False, default=0), Column("lease_expires_at", DateTime),
      Column("heartbeat_at", DateTime), Column("cancel_requested", Boolean, nullable=False, default=False),
      Column("step", Integer, nullable=False, default=0), Column("total_steps", Integer),
      Column("epoch", Float), Column("latest_metrics", JSON), Column("result", JSON), Column("error", Text))
Table("metrics", RELEASE_0_1,
      Column("job_id", String(64), nullable=False, index=True), Column("step", Integer, nullable=False),
      Column("attempt", Integer, nullable=False, default=1), Column("values", JSON, nullable=False),
      UniqueConstraint("job_id", "step", name="uq_metrics_job_step"))
Table("datasets", RELEASE_0_1,
      Column("id", String(64), primary_key=True), Column("owner", String(64), nullable=False, index=True),
      Column("name", String(255), nullable=False), Column("summary", JSON, nullable=False),
      Column("bytes", BigInteger, nullable=False), Column("created_at", DateTime, nullable=False))
Table("artifacts", RELEASE_0_1,
      Column("job_id", String(64), nullable=False, index=True), Column("name", String(255), nullable=False),
      Column("size", BigInteger, nullable=False), Column("sha256", String(64), nullable=False),
      Column("created_at", DateTime, nullable=False),
      UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"))
Table("workers", RELEASE_0_1,
      Column("name", String(255), primary_key=True), Column("info", JSON),
      Column("seen_at", DateTime, nullable=False))

NOW = datetime(2026, 11, 1, 12, 0, 0)
JOB = dict(id="job_0123456789abcdef", owner="alice", type="pretrain", status="succeeded",
           spec={"type": "pretrain", "config": {"method": "dcl", "batch_size": 64}}, queue="gpu",
           created_at=NOW, enqueued_at=NOW, started_at=NOW, finished_at=NOW, worker="w/1", attempts=2,
           cancel_requested=False, step=30, total_steps=30, epoch=1.0, latest_metrics={"step": 30, "loss": -1.5},
           result={"final_metrics": {"loss": -1.5}, "steps": 30}, error=None)


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request, tmp_path):
    """(url, schema) of a job store made by release 0.1.0, with a job, its metrics, an
    artifact and a dataset in it."""
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path}/old.db", None
        engine = create_engine(url)
    else:
        url, schema = request.getfixturevalue("postgres_url"), f"sweep_migration_{secrets.token_hex(4)}"
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine = engine.execution_options(schema_translate_map={None: schema})
    tables = RELEASE_0_1.tables
    RELEASE_0_1.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(tables["jobs"]).values(**JOB))
        conn.execute(insert(tables["metrics"]).values(
            [{"job_id": JOB["id"], "step": s, "attempt": 1, "values": {"loss": -s / 20}} for s in (10, 20, 30)]))
        conn.execute(insert(tables["artifacts"]).values(
            job_id=JOB["id"], name="encoder.json", size=12, sha256="ab" * 32, created_at=NOW))
        conn.execute(insert(tables["datasets"]).values(
            id="ds_0123456789abcdef", owner="alice", name="pets.zip", summary={"num_images": 6}, bytes=1234,
            created_at=NOW))
    engine.dispose()
    yield url, schema
    if schema is not None:
        db = Database(url, schema=schema, create=False)
        db.drop()
        db.dispose()


def test_a_release_0_1_store_is_upgraded_with_its_rows_intact(old_database, tmp_path):
    url, schema = old_database
    db = Database(url, schema=schema)  # what the API and the worker do at start
    plane = ControlPlane(Settings(data_dir=tmp_path / "data"), db=db)
    try:
        job = plane.jobs.get(JOB["id"], "alice")
        assert job.spec_data == JOB["spec"] and job.spec.config.batch_size == 64
        for key in ("owner", "type", "status", "attempts", "step", "total_steps", "latest_metrics", "result"):
            assert getattr(job, key) == JOB[key], key
        assert job.created_at.replace(tzinfo=None) == NOW and job.parent_id is None
        assert [m["loss"] for m in plane.metrics.since(JOB["id"])] == [-0.5, -1.0, -1.5]
        assert plane.artifacts.get(JOB["id"], "encoder.json").sha256 == "ab" * 32
        assert plane.datasets.get("ds_0123456789abcdef", "alice").summary == {"num_images": 6}
        with db.engine.connect() as conn:
            migrations._use_schema(conn, schema)
            assert migrations.current(conn) == migrations.head()
            assert "ix_jobs_parent_id" in {ix["name"] for ix in inspect(conn).get_indexes("jobs")}
        # The new column works, and opening the store again changes nothing.
        parent = submit(plane, "alice", {"type": "sweep", "config": {"device": "cpu"}, "grid": {"seed": [0]}})
        Database(url, schema=schema).dispose()
        assert plane.jobs.get(parent.id).id == parent.id
        assert [c.parent_id for c in plane.jobs.children(parent.id)] == [parent.id]
    finally:
        plane.close()


def at_revision(url: str, schema: str | None, revision: str) -> None:
    """Bring a fresh store to `revision` (not the head), as the release that shipped it would have."""
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if schema is not None:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            migrations._use_schema(conn, schema)
            command.upgrade(migrations.alembic_config(conn), revision)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_at_0002(request, tmp_path):
    """(url, schema) of a job store at revision 0002 (before names, tags and scores), empty."""
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path}/at0002.db", None
    else:
        url, schema = request.getfixturevalue("postgres_url"), f"labels_migration_{secrets.token_hex(4)}"
    at_revision(url, schema, "0002")
    yield url, schema
    if schema is not None:
        db = Database(url, schema=schema, create=False)
        db.drop()
        db.dispose()


def test_a_0002_store_with_jobs_gets_encoder_links_and_scores(store_at_0002, tmp_path):
    url, schema = store_at_0002
    engine = create_engine(url)
    if schema is not None:
        engine = engine.execution_options(schema_translate_map={None: schema})
    old = MetaData()
    jobs = Table("jobs", old, autoload_with=engine)
    assert "score" not in jobs.c

    def job(job_id, type_, spec, result=None, status="succeeded", minute=0):
        at = NOW.replace(minute=minute)
        return dict(JOB, id=job_id, type=type_, spec={"type": type_, **spec}, result=result, status=status,
                    created_at=at, finished_at=at)

    probe = {"train": {"source": "builtin:digits"}, "test": {"source": "builtin:digits"}}
    rows = [
        job("job_evaluated", "pretrain", {"config": {}}, {"scores": {"linear_top1": 0.6}}),
        job("job_probed", "pretrain", {"config": {}}, {"steps": 3}),
        job("job_probe_old", "linear_probe", {**probe, "encoder_job": "job_probed", "classifier": "logistic"},
            {"accuracy": 0.4}, minute=1),
        job("job_probe_new", "linear_probe", {**probe, "encoder_job": "job_probed", "classifier": "logistic"},
            {"accuracy": 0.5}, minute=2),
        job("job_probe_knn", "linear_probe", {**probe, "encoder_job": "job_probed", "classifier": "knn"},
            {"accuracy": 0.9}, minute=3),
        job("job_probe_evaluated", "linear_probe", {**probe, "encoder_job": "job_evaluated"}, {"accuracy": 0.99}),
        job("job_embed", "embed", {"data": {"source": "builtin:digits"}, "encoder_job": "job_probed"}),
        job("job_failed", "pretrain", {"config": {}}, None, status="failed"),
    ]
    with engine.begin() as conn:
        conn.execute(insert(jobs), rows)
    engine.dispose()

    plane = ControlPlane(Settings(data_dir=tmp_path / "data"), db=Database(url, schema=schema))
    try:
        got = {j.id: j for j in plane.jobs.list("alice", limit=50)[0]}
        assert {k: (v.score, v.encoder_job) for k, v in got.items()} == {
            "job_evaluated": (0.6, None), "job_probed": (0.5, None), "job_failed": (None, None),
            "job_probe_old": (0.4, "job_probed"), "job_probe_new": (0.5, "job_probed"),
            "job_probe_knn": (0.9, "job_probed"), "job_probe_evaluated": (0.99, "job_evaluated"),
            "job_embed": (None, "job_probed")}
        assert all((j.name, j.tags, j.notes) == (None, [], None) for j in got.values())
        assert got["job_probed"].spec_data == rows[1]["spec"] and got["job_probed"].result == {"steps": 3}
        assert [j.id for j in plane.jobs.evaluations("job_probed")] == [
            "job_probe_knn", "job_probe_new", "job_probe_old", "job_embed"]
        # The new columns and table work on the upgraded store.
        plane.lifecycle.label("job_probed", "alice", name="r18", tags=["prod"])
        assert [j.id for j in plane.jobs.list("alice", tags=["prod"])[0]] == ["job_probed"]
    finally:
        plane.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_at_0002_with_a_job(request, tmp_path):
    """(url, schema) of a job store at revision 0002 (parent jobs, before the model registry and
    webhooks), with a succeeded job and its artifact in it."""
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path}/at-0002.db", None
    else:
        url, schema = request.getfixturevalue("postgres_url"), f"at_0002_{secrets.token_hex(4)}"
    db = Database(url, schema=schema, create=False)
    with db.engine.begin() as conn:
        migrations._use_schema(conn, schema)
        command.upgrade(migrations.alembic_config(conn), "0002")
    with db.engine.begin() as conn:
        conn.execute(insert(jobs).values(**{**JOB, "parent_id": None}))
        conn.execute(insert(artifacts).values(job_id=JOB["id"], name="encoder.safetensors", size=3, sha256="cd" * 32,
                                              created_at=NOW))
    db.dispose()
    yield url, schema
    if schema is not None:
        Database(url, schema=schema, create=False).drop()


def test_a_store_with_jobs_in_it_gains_the_registry_and_webhooks(store_at_0002_with_a_job, tmp_path):
    url, schema = store_at_0002_with_a_job
    plane = ControlPlane(Settings(data_dir=tmp_path / "data"), db=Database(url, schema=schema))
    try:
        job = plane.jobs.get(JOB["id"], "alice")
        assert (job.status, job.result, job.spec_data) == ("succeeded", JOB["result"], JOB["spec"])
        version = plane.registry.register("alice", "digits", JOB["id"])
        assert (version.version, version.sha256) == (1, "cd" * 32)
        hook = plane.webhooks.create("alice", "https://hooks.example/x", ["job.succeeded"])
        assert plane.webhooks.get(hook.id, "alice") is not None
        with db_connection(plane) as conn:
            assert migrations.current(conn) == migrations.head()
    finally:
        plane.close()


def db_connection(plane):
    conn = plane.db.engine.connect()
    migrations._use_schema(conn, plane.db.schema)
    return conn


def test_the_migrated_schema_is_the_one_tables_py_declares(plane):
    with plane.db.engine.connect() as conn:
        migrations._use_schema(conn, plane.db.schema)
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, metadata) == []


def test_processes_starting_at_once_migrate_one_at_a_time(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Database(url).dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    plane = ControlPlane(Settings(data_dir=tmp_path / "data"), db=Database(url))
    try:
        assert submit(plane, "alice", {"type": "pretrain"}).status == "queued"
    finally:
        plane.close()
