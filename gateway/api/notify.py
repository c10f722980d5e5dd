"""Where providers send their notifications: verified on the raw bytes, applied once."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from gateway.api.deps import ServicesDep
from gateway.errors import NotFound, Unprocessable

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["notify"])


@router.post(
    "/v1/notify/{adapter}/{school_id}",
    response_class=PlainTextResponse,
    summary="Provider notifications (answered `success` once verified and recorded)",
)
async def notify(adapter: str, school_id: str, request: Request, services: ServicesDep) -> Response:
    instance = await services.providers.adapter(school_id, adapter) if adapter in services.registry else None
    if instance is None:
        raise NotFound("no such provider at this school")
    body = await request.body()
    try:
        event = await instance.parse_notification(body, {k.lower(): v for k, v in request.headers.items()})
    except Exception as exc:
        # Forged, altered or malformed: nothing changes, and the provider is told it failed.
        log.warning("rejected %s notification for %s: %s", adapter, school_id, type(exc).__name__)
        raise Unprocessable("notification_rejected", "the notification did not verify") from exc
    await services.payments.on_notification(school_id, adapter, event)
    return PlainTextResponse("success")
