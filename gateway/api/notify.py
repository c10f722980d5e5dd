"""Where providers send their notifications: verified on the raw bytes, applied once.

Every refusal is the same answer (422 ``notification_rejected``): an unknown adapter, a school
that does not exist or has not configured that provider, and a forged or altered notification
look alike from outside, so the path cannot be used to find out which school ids exist. A
provider treats any answer but its acknowledgement as "not delivered" and tries again later
(Alipay wants HTTP 200 with the body ``success``; the bank HTTP 200), which is right for all of
them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from gateway.api.deps import ServicesDep
from gateway.errors import Unprocessable

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["notify"])

# Spelled out rather than ``model=``: FastAPI would file the model under the route's text/plain.
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Verified and recorded (or seen before). The body is exactly `success`, the "
            "acknowledgement Alipay requires; the bank takes any 200."
        ),
        "content": {"text/plain": {"schema": {"type": "string", "enum": ["success"]}}},
    },
    422: {
        **_PROBLEM,
        "description": (
            "`notification_rejected`: it did not verify, or there is no such provider at this "
            "school (one answer for both). Nothing changed; the provider sends it again later."
        ),
    },
    413: {**_PROBLEM, "description": "`payload_too_large`"},
}


@router.post(
    "/v1/notify/{adapter}/{school_id}",
    response_class=PlainTextResponse,
    responses=RESPONSES,
    summary="Provider notifications (answered `success` once verified and recorded)",
)
async def notify(adapter: str, school_id: str, request: Request, services: ServicesDep) -> Response:
    body = await request.body()
    instance = await services.providers.adapter(school_id, adapter) if adapter in services.registry else None
    try:
        if instance is None:
            raise LookupError("no such provider at this school")
        event = await instance.parse_notification(body, {k.lower(): v for k, v in request.headers.items()})
    except Exception as exc:
        # Forged, altered, malformed or for nobody: nothing changes, and the provider is told it
        # failed, in words that do not say which.
        log.warning("rejected %s notification for %s: %s", adapter, school_id, type(exc).__name__)
        raise Unprocessable("notification_rejected", "the notification was not accepted") from exc
    await services.payments.on_notification(school_id, adapter, event)
    return PlainTextResponse("success")
