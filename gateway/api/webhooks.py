"""Webhook endpoints of a school (school admin): CONTRACT.md, "Events and webhooks"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Response

from gateway.api.admin import _PROBLEMS, _actor
from gateway.api.deps import AdminDep, ServicesDep
from gateway.api.schemas import (
    RotateSecretIn,
    WebhookEndpointCreated,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointPage,
    WebhookEndpointPatch,
)

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])
BASE = "/v1/schools/{school_id}/webhook-endpoints"


@router.post(BASE, status_code=201, response_model=WebhookEndpointCreated, responses=_PROBLEMS)
async def create_webhook_endpoint(
    school_id: str, body: WebhookEndpointIn, admin: AdminDep, services: ServicesDep
) -> Any:
    """The answer carries the endpoint's signing `secret`, shown this once."""
    admin.require_school(school_id)
    return await services.webhook_endpoints.create(
        school_id,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        actor=_actor(admin),
    )


@router.get(BASE, response_model=WebhookEndpointPage, responses=_PROBLEMS)
async def list_webhook_endpoints(
    school_id: str,
    admin: AdminDep,
    services: ServicesDep,
    limit: int = Query(100, ge=1, le=100),
    cursor: str | None = Query(None, max_length=40),
) -> Any:
    admin.require_school(school_id)
    return await services.webhook_endpoints.page(school_id, limit=limit, cursor=cursor)


@router.get(BASE + "/{endpoint_id}", response_model=WebhookEndpointOut, responses=_PROBLEMS)
async def get_webhook_endpoint(
    school_id: str, endpoint_id: str, admin: AdminDep, services: ServicesDep
) -> Any:
    admin.require_school(school_id)
    return await services.webhook_endpoints.view(school_id, endpoint_id)


@router.patch(BASE + "/{endpoint_id}", response_model=WebhookEndpointOut, responses=_PROBLEMS)
async def update_webhook_endpoint(
    school_id: str, endpoint_id: str, body: WebhookEndpointPatch, admin: AdminDep, services: ServicesDep
) -> Any:
    """Only the fields sent change; `event_types: null` means every type. `status` disables or
    enables the endpoint (enabling one the gateway disabled starts its failure count afresh)."""
    admin.require_school(school_id)
    changes: dict[str, Any] = {"url": body.url, "description": body.description, "status": body.status}
    if "event_types" in body.model_fields_set:
        changes["event_types"] = body.event_types
    return await services.webhook_endpoints.update(school_id, endpoint_id, actor=_actor(admin), **changes)


@router.delete(BASE + "/{endpoint_id}", status_code=204, responses=_PROBLEMS)
async def delete_webhook_endpoint(
    school_id: str, endpoint_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    """The endpoint, its pending deliveries and its delivery log."""
    admin.require_school(school_id)
    await services.webhook_endpoints.delete(school_id, endpoint_id, actor=_actor(admin))
    return Response(status_code=204)


@router.post(
    BASE + "/{endpoint_id}/rotate-secret", response_model=WebhookEndpointCreated, responses=_PROBLEMS
)
async def rotate_webhook_secret(
    school_id: str,
    endpoint_id: str,
    admin: AdminDep,
    services: ServicesDep,
    body: RotateSecretIn | None = None,
) -> Any:
    """A new `secret` (shown once). Until `previous_secret_expires_at` deliveries carry a
    signature with each secret, space-separated in `webhook-signature`."""
    admin.require_school(school_id)
    overlap = timedelta(seconds=(body or RotateSecretIn()).overlap_seconds)
    return await services.webhook_endpoints.rotate_secret(
        school_id, endpoint_id, overlap=overlap, actor=_actor(admin)
    )
