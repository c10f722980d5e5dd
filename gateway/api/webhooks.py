"""Webhook endpoints of a school (school admin): CONTRACT.md, "Events and webhooks"."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from gateway.api.admin import _PROBLEMS, _actor
from gateway.api.deps import AdminDep, ServicesDep
from gateway.api.schemas import (
    BIGINT_MAX,
    EventPage,
    RedeliverIn,
    RedeliverOut,
    RotateSecretIn,
    TestEventOut,
    WebhookAttemptPage,
    WebhookEndpointCreated,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointPage,
    WebhookEndpointPatch,
)
from gateway.errors import Unprocessable
from gateway.webhooks.events import EventFilter
from gateway.webhooks.outbox import EVENT_TYPES

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


@router.get("/v1/schools/{school_id}/events", response_model=EventPage, responses=_PROBLEMS)
async def list_events(
    school_id: str,
    admin: AdminDep,
    services: ServicesDep,
    after_sequence: int = Query(0, ge=0, le=BIGINT_MAX, description="Events numbered above this"),
    types: Annotated[
        list[str] | None, Query(alias="type", max_length=20, description="Only these types (repeatable)")
    ] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = Query(100, ge=1, le=100),
    cursor: str | None = Query(None, max_length=20),
) -> Any:
    """The school's events in `sequence` order (commit order, no gaps): a receiver that was down
    asks for those after the last `sequence` it handled and follows `next_cursor`."""
    admin.require_school(school_id)
    unknown = sorted(set(types or ()) - EVENT_TYPES)
    if unknown:
        raise Unprocessable("validation_error", f"type: unknown event types {unknown}")
    where = EventFilter(after_sequence, tuple(sorted(set(types or ()))), created_after, created_before)
    return await services.webhook_events.page(school_id, where, limit=limit, cursor=cursor)


@router.get(BASE + "/{endpoint_id}/deliveries", response_model=WebhookAttemptPage, responses=_PROBLEMS)
async def list_webhook_deliveries(
    school_id: str,
    endpoint_id: str,
    admin: AdminDep,
    services: ServicesDep,
    event_id: str | None = Query(None, max_length=40, description="Only this event's attempts"),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = Query(100, ge=1, le=100),
    cursor: str | None = Query(None, max_length=20),
) -> Any:
    """Every attempt at this endpoint, newest first: status, latency, at most 1 KiB of the answer."""
    admin.require_school(school_id)
    return await services.webhook_log.attempts(
        school_id,
        endpoint_id=endpoint_id,
        event_id=event_id,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/v1/schools/{school_id}/events/{event_id}/deliveries",
    response_model=WebhookAttemptPage,
    responses=_PROBLEMS,
)
async def list_event_deliveries(
    school_id: str,
    event_id: str,
    admin: AdminDep,
    services: ServicesDep,
    limit: int = Query(100, ge=1, le=100),
    cursor: str | None = Query(None, max_length=20),
) -> Any:
    """Every attempt to deliver this event, at every endpoint, newest first."""
    admin.require_school(school_id)
    return await services.webhook_log.attempts(school_id, event_id=event_id, limit=limit, cursor=cursor)


@router.post(
    BASE + "/{endpoint_id}/redeliver", status_code=202, response_model=RedeliverOut, responses=_PROBLEMS
)
async def redeliver_webhook_events(
    school_id: str, endpoint_id: str, body: RedeliverIn, admin: AdminDep, services: ServicesDep
) -> Any:
    """Send `event_id` again (even one delivered already: same `webhook-id`), or every event
    since `since` whose delivery here failed. Deliveries start within a second."""
    admin.require_school(school_id)
    return await services.webhook_log.redeliver(
        school_id, endpoint_id, event_id=body.event_id, since=body.since, actor=_actor(admin)
    )


@router.post(BASE + "/{endpoint_id}/test", status_code=202, response_model=TestEventOut, responses=_PROBLEMS)
async def send_webhook_test(school_id: str, endpoint_id: str, admin: AdminDep, services: ServicesDep) -> Any:
    """A `webhook_endpoint.test` event for this endpoint alone, signed and retried like any other."""
    admin.require_school(school_id)
    return await services.webhook_log.send_test(school_id, endpoint_id, actor=_actor(admin))
