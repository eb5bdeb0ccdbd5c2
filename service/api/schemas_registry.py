"""What the API answers and takes for the model registry and webhooks (the jobs' shapes are in
`schemas.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dcl_core.jobs.base import MODEL_ALIAS, MODEL_NAME
from service.control.models import Delivery, ModelVersion, RegisteredModel, Webhook
from service.control.webhooks import EVENTS

ModelNamePattern = f"^{MODEL_NAME}$"
AliasPattern = f"^{MODEL_ALIAS}$"
EventType = Literal[EVENTS]  # type: ignore[valid-type]


def version_url(name: str, version: int) -> str:
    return f"/v1/models/{name}/versions/{version}"


# ---- models ----------------------------------------------------------------------------------

class RegisterModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ModelNamePattern, min_length=1, max_length=100, description=(
        "The model: 1-100 letters, digits, `_`, `.`, `-`. Made on its first registration."))
    job: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                     description="A succeeded pretrain job of yours; its encoder becomes the next version.")


class SetAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="The version the alias points at from now on.")


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    job: str = Field(description="The pretrain job whose encoder this version is.")
    created_at: datetime = Field(description="When it was registered.")
    aliases: list[str] = Field(description="The aliases that point at it.")
    scores: dict[str, Any] = Field(description="The job's scores (`result.scores`: linear_top1, knn_top1).")
    sha256: str | None = Field(description="sha256 of its encoder.safetensors.")
    source: str = Field(description="What a probe's or embed's `encoder_job` names to use this version.")
    url: str = Field(description="This version; its files are under `url + /files`.")

    @classmethod
    def from_version(cls, v: ModelVersion) -> "ModelVersionPublic":
        return cls(name=v.name, version=v.version, job=v.job_id, created_at=v.created_at, aliases=list(v.aliases),
                   scores=v.scores, sha256=v.sha256, source=v.source, url=version_url(v.name, v.version))


class ModelPublic(BaseModel):
    name: str
    created_at: datetime
    latest_version: int | None = Field(description="The newest version's number (None: every version deleted).")
    aliases: dict[str, int] = Field(description="Alias -> version.")
    version_count: int
    versions: list[ModelVersionPublic] = Field(default_factory=list, description="Newest first (not in listings).")

    @classmethod
    def from_model(cls, m: RegisteredModel) -> "ModelPublic":
        return cls(name=m.name, created_at=m.created_at, latest_version=m.latest_version, aliases=m.aliases,
                   version_count=m.version_count, versions=[ModelVersionPublic.from_version(v) for v in m.versions])


class ModelsPublic(BaseModel):
    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class AliasPublic(BaseModel):
    name: str
    alias: str
    version: int


# ---- webhooks --------------------------------------------------------------------------------

class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description=(
        "Where events are POSTed: https://... (or http://). Its host must resolve to public addresses "
        "unless the server sets DCL_WEBHOOK_ALLOW_PRIVATE."))
    events: list[EventType] = Field(default=list(EVENTS), min_length=1, max_length=len(EVENTS),
                                    description="The events it receives (default: all).")


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime
    secret: str | None = Field(default=None, description=(
        "The signing secret, shown once, when the webhook is made: check each delivery's X-DCL-Signature with it."))

    @classmethod
    def from_webhook(cls, hook: Webhook, *, with_secret: bool = False) -> "WebhookPublic":
        return cls(id=hook.id, url=hook.url, events=list(hook.events), created_at=hook.created_at,
                   secret=hook.secret if with_secret else None)


class WebhooksPublic(BaseModel):
    items: list[WebhookPublic]


class AttemptPublic(BaseModel):
    number: int
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status (None: no answer).")
    error: str | None = Field(description="What went wrong (None: delivered).")
    duration_ms: int


class DeliveryPublic(BaseModel):
    id: str
    event_id: str = Field(description="The event's `id` (the same in every retry: receivers de-duplicate on it).")
    type: str
    job: str
    state: Literal["pending", "delivered", "failed"] = Field(description=(
        "pending: tried again at next_attempt_at; failed: given up (24 h of retries)."))
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptPublic]

    @classmethod
    def from_delivery(cls, d: Delivery) -> "DeliveryPublic":
        return cls(id=d.id, event_id=d.event_id, type=d.type, job=d.job_id, state=d.state,
                   next_attempt_at=d.next_attempt_at, created_at=d.created_at, finished_at=d.finished_at,
                   attempts=[AttemptPublic(number=a.number, at=a.at, status_code=a.status_code, error=a.error,
                                           duration_ms=a.duration_ms) for a in d.tries])


class DeliveriesPublic(BaseModel):
    webhook_id: str
    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int
