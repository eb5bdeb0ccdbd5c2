"""/v1/webhooks: hooks that are told when your jobs end (`job.succeeded`, `job.failed`,
`job.cancelled`), and every delivery attempt. The API only records: deliveries are sent by the
workers' dispatchers (service/control/delivery.py), never from a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import ID_PATTERN, INT32_MAX, CurrentKey, FieldError, PlaneDep, SettingsDep
from service.api.routes.jobs import json_body
from service.api.schemas_registry import CreateWebhook, DeliveriesPublic, DeliveryPublic, WebhookPublic, WebhooksPublic
from service.control.egress import UnsafeTarget, check_target
from service.control.models import Webhook
from service.control.plane import ControlPlane

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="A webhook id (wh_...).")]


def owned(plane: ControlPlane, webhook_id: str, owner: str) -> Webhook:
    hook = plane.webhooks.get(webhook_id, owner)
    if hook is None:
        raise HTTPException(404, f"webhook {webhook_id} not found")
    return hook


@router.post("", status_code=201, response_model=WebhookPublic, dependencies=[Depends(json_body)],
             responses={409: {"description": "The key has as many webhooks as it may"},
                        415: {"description": "Not sent as JSON"}})
async def create_webhook(body: Annotated[CreateWebhook, Body()], response: Response, owner: CurrentKey,
                         plane: PlaneDep, settings: SettingsDep) -> WebhookPublic:
    """`{"url": "https://...", "events": ["job.succeeded", "job.failed", "job.cancelled"]}`. The answer
    holds the signing `secret`, shown this once. Each delivery is a POST of `{"id", "type", "created",
    "data": {job}}` with `X-DCL-Signature: t=UNIX_SECONDS,v1=HEX(hmac_sha256(secret, f"{t}.{raw_body}"))`."""
    try:  # the name is looked up: not on the event loop
        await run_in_threadpool(check_target, body.url, allow_private=settings.webhook_allow_private)
    except UnsafeTarget as exc:
        raise FieldError(["body", "url"], f"{body.url[:200]!r}: {exc}") from None
    cap = settings.max_webhooks_per_key
    if await run_in_threadpool(plane.webhooks.count, owner) >= cap:
        raise HTTPException(409, f"this key has {cap} webhooks, the most it may have; delete one first")
    hook = await run_in_threadpool(plane.webhooks.create, owner, body.url, list(dict.fromkeys(body.events)))
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookPublic.from_webhook(hook, with_secret=True)


@router.get("", response_model=WebhooksPublic)
def list_webhooks(owner: CurrentKey, plane: PlaneDep) -> WebhooksPublic:
    return WebhooksPublic(items=[WebhookPublic.from_webhook(h) for h in plane.webhooks.list(owner)])


@router.get("/{webhook_id}", response_model=WebhookPublic)
def get_webhook(webhook_id: WebhookId, owner: CurrentKey, plane: PlaneDep) -> WebhookPublic:
    return WebhookPublic.from_webhook(owned(plane, webhook_id, owner))


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: WebhookId, owner: CurrentKey, plane: PlaneDep) -> Response:
    """The webhook and its deliveries: pending ones are not sent."""
    if not plane.webhooks.delete(webhook_id, owner):
        raise HTTPException(404, f"webhook {webhook_id} not found")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveriesPublic)
def list_deliveries(webhook_id: WebhookId, owner: CurrentKey, plane: PlaneDep,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0) -> DeliveriesPublic:
    """Its deliveries, newest first, each with every attempt (status code, error, duration)."""
    hook = owned(plane, webhook_id, owner)
    items, total = plane.webhooks.deliveries(hook.id, limit=limit, offset=offset)
    return DeliveriesPublic(webhook_id=hook.id, items=[DeliveryPublic.from_delivery(d) for d in items],
                            total=total, limit=limit, offset=offset)
