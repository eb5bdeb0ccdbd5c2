"""The model registry: an owner's named models, their numbered versions (each a succeeded
pretrain job's encoder) and aliases (`production`) that point at one version and can be moved.

Like jobs, models are per owner: every read and write takes the owner, and another owner's
model is simply not there. Refusals are `Refusal`s (field, message, 404/409/422), as at
admission. A job a version points at cannot be deleted (`lifecycle.delete` asks
`versions_of`).
"""

from __future__ import annotations

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dcl_core.jobs import Refusal
from dcl_core.jobs.base import ModelRef
from service.control.clock import SYSTEM, Clock
from service.control.db import Database, new_id
from service.control.models import ModelVersion, RegisteredModel
from service.control.tables import artifacts, jobs, model_aliases, model_versions, registered_models

ENCODER_FILE = "encoder.safetensors"
"""The file whose sha256 identifies a version."""

rm, mv, ma = registered_models.c, model_versions.c, model_aliases.c


def versions_of(conn, job_ids: list[str]) -> list[tuple[str, int, str]]:
    """(model name, version, job id) of every version that points at one of `job_ids`."""
    rows = conn.execute(select(rm.name, mv.version, mv.job_id).join(registered_models, rm.id == mv.model_id)
                        .where(mv.job_id.in_(job_ids)).order_by(rm.name, mv.version)).all()
    return [(r.name, r.version, r.job_id) for r in rows]


class ModelRegistry:
    def __init__(self, db: Database, clock: Clock = SYSTEM):
        self.db = db
        self.clock = clock

    # ---- writes ------------------------------------------------------------------------------

    def register(self, owner: str, name: str, job_id: str) -> ModelVersion:
        """The owner's succeeded pretrain job `job_id` as the next version of model `name` (made
        if new). Two registrations at once get different numbers."""
        for _ in range(5):
            try:
                with self.db.engine.begin() as conn:
                    version = self._register(conn, owner, name, job_id)
                break
            except IntegrityError:  # a concurrent registration made the same model first: again
                continue
        else:
            raise Refusal("name", f"model {name} is being changed by another request; try again", 409)
        return self.version(owner, name, version=version)  # type: ignore[return-value]

    def _register(self, conn, owner: str, name: str, job_id: str) -> int:
        # FOR UPDATE: a delete of the job waits for this registration (PostgreSQL), then sees it.
        job = conn.execute(select(jobs.c.type, jobs.c.status).where(jobs.c.id == job_id, jobs.c.owner == owner)
                           .with_for_update()).first()
        if job is None:
            raise Refusal("job", f"job {job_id} not found", 404)
        if job.type != "pretrain":
            raise Refusal("job", f"job {job_id} is a {job.type} job; register a pretrain job (its encoder)", 409)
        if job.status != "succeeded":
            raise Refusal("job", f"job {job_id} is {job.status}; only a pretrain job that succeeded can be "
                                 "registered (wait for it to finish)", 409)
        now = self.clock.now()
        model_id = conn.execute(select(rm.id).where(rm.owner == owner, rm.name == name)).scalar()
        if model_id is None:
            model_id = new_id("mdl")
            conn.execute(insert(registered_models).values(id=model_id, owner=owner, name=name, last_version=0,
                                                          created_at=now))
        existing = conn.execute(select(mv.version).where(mv.model_id == model_id, mv.job_id == job_id)).scalar()
        if existing is not None:
            raise Refusal("job", f"job {job_id} is already version {existing} of model {name}", 409)
        version = conn.execute(update(registered_models).where(rm.id == model_id)
                               .values(last_version=rm.last_version + 1).returning(rm.last_version)).scalar_one()
        conn.execute(insert(model_versions).values(model_id=model_id, version=version, job_id=job_id,
                                                   created_at=now))
        return version

    def set_alias(self, owner: str, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version` (made, or moved from where it pointed)."""
        with self.db.engine.begin() as conn:
            model_id = self._model_id(conn, owner, name)
            if conn.execute(select(mv.version).where(mv.model_id == model_id, mv.version == version)).first() is None:
                numbers = conn.execute(select(mv.version).where(mv.model_id == model_id)
                                       .order_by(mv.version)).scalars().all()
                raise Refusal("version", f"model {name} has no version {version}; its versions are "
                                         f"{', '.join(map(str, numbers)) or 'none'}")
            stmt = self.db.upsert(model_aliases).values(model_id=model_id, alias=alias, version=version,
                                                        updated_at=self.clock.now())
            conn.execute(stmt.on_conflict_do_update(index_elements=["model_id", "alias"], set_={
                "version": stmt.excluded.version, "updated_at": stmt.excluded.updated_at}))

    def delete_alias(self, owner: str, name: str, alias: str) -> None:
        with self.db.engine.begin() as conn:
            model_id = self._model_id(conn, owner, name)
            if not conn.execute(delete(model_aliases).where(ma.model_id == model_id, ma.alias == alias)).rowcount:
                raise Refusal("alias", f"model {name} has no alias {alias!r}", 404)

    def delete_version(self, owner: str, name: str, version: int) -> None:
        """Forget a version (its job stays, and can then be deleted). Refused while an alias points at it."""
        with self.db.engine.begin() as conn:
            model_id = self._model_id(conn, owner, name)
            aliases = conn.execute(select(ma.alias).where(ma.model_id == model_id, ma.version == version)
                                   .order_by(ma.alias)).scalars().all()
            if aliases:
                raise Refusal("version", f"alias {', '.join(aliases)} of model {name} points at version {version}; "
                                         "move or delete the alias first", 409)
            if not conn.execute(delete(model_versions).where(mv.model_id == model_id, mv.version == version)).rowcount:
                raise Refusal("version", f"model {name} has no version {version}", 404)

    def delete_model(self, owner: str, name: str) -> None:
        """Forget a model with its versions and aliases (the jobs stay)."""
        with self.db.engine.begin() as conn:
            model_id = self._model_id(conn, owner, name)
            conn.execute(delete(model_aliases).where(ma.model_id == model_id))
            conn.execute(delete(model_versions).where(mv.model_id == model_id))
            conn.execute(delete(registered_models).where(rm.id == model_id))

    def _model_id(self, conn, owner: str, name: str) -> str:
        model_id = conn.execute(select(rm.id).where(rm.owner == owner, rm.name == name)).scalar()
        if model_id is None:
            raise Refusal("name", f"model {name} not found", 404)
        return model_id

    # ---- reads -------------------------------------------------------------------------------

    def list(self, owner: str, *, limit: int = 50, offset: int = 0) -> tuple[list[RegisteredModel], int]:
        """A page of the owner's models by name, and how many there are."""
        with self.db.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(registered_models).where(rm.owner == owner)).scalar()
            count = select(mv.model_id, func.count().label("n"), func.max(mv.version).label("latest")) \
                .group_by(mv.model_id).subquery()
            rows = conn.execute(select(registered_models, func.coalesce(count.c.n, 0).label("n"), count.c.latest)
                                .outerjoin(count, count.c.model_id == rm.id).where(rm.owner == owner)
                                .order_by(rm.name).limit(limit).offset(offset)).all()
            aliases = self._aliases(conn, [r.id for r in rows])
        return [RegisteredModel(r.name, r.created_at, r.latest, int(r.n), aliases.get(r.id, {}))
                for r in rows], int(total)

    def get(self, owner: str, name: str) -> RegisteredModel | None:
        """The model with every version, newest first."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(registered_models).where(rm.owner == owner, rm.name == name)).first()
            if row is None:
                return None
            aliases = self._aliases(conn, [row.id]).get(row.id, {})
            versions = self._versions(conn, row.id, name, aliases)
        latest = versions[0].version if versions else None
        return RegisteredModel(row.name, row.created_at, latest, len(versions), aliases, tuple(versions))

    def version(self, owner: str, name: str, *, version: int | None = None,
                alias: str | None = None) -> ModelVersion | None:
        """One version, by number or by alias; None when the model, the version or the alias is not there."""
        with self.db.engine.connect() as conn:
            model_id = conn.execute(select(rm.id).where(rm.owner == owner, rm.name == name)).scalar()
            if model_id is None:
                return None
            aliases = self._aliases(conn, [model_id]).get(model_id, {})
            if alias is not None:
                version = aliases.get(alias)
            if version is None:
                return None
            found = self._versions(conn, model_id, name, aliases, only=version)
        return found[0] if found else None

    def resolve(self, owner: str, ref: ModelRef) -> ModelVersion | None:
        """The version `model:NAME@ALIAS` or `model:NAME/N` names now."""
        return self.version(owner, ref.name, version=ref.version, alias=ref.alias)

    def _aliases(self, conn, model_ids: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        if model_ids:
            for r in conn.execute(select(ma.model_id, ma.alias, ma.version).where(ma.model_id.in_(model_ids))
                                  .order_by(ma.alias)).all():
                out.setdefault(r.model_id, {})[r.alias] = r.version
        return out

    def _versions(self, conn, model_id: str, name: str, aliases: dict[str, int],
                  only: int | None = None) -> list[ModelVersion]:
        encoder = artifacts.alias("encoder")
        query = (select(mv.version, mv.job_id, mv.created_at, jobs.c.result, encoder.c.sha256)
                 .outerjoin(jobs, jobs.c.id == mv.job_id)
                 .outerjoin(encoder, and_(encoder.c.job_id == mv.job_id, encoder.c.name == ENCODER_FILE))
                 .where(mv.model_id == model_id).order_by(mv.version.desc()))
        if only is not None:
            query = query.where(mv.version == only)
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(number, []).append(alias)
        return [ModelVersion(name, r.version, r.job_id, r.created_at, tuple(by_version.get(r.version, ())),
                             dict((r.result or {}).get("scores") or {}), r.sha256)
                for r in conn.execute(query).all()]
