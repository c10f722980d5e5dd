"""Run a money-moving request under its Idempotency-Key (see gateway.idempotency.service)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.api.deps import device_headers, path_and_query
from gateway.idempotency.service import Answer, Claim, validate_key
from gateway.payments.service import Caller, is_pending
from gateway.payments.state import payment_resource, refund_resource
from gateway.services import Services
from gateway.store.models import Payment, Refund

__all__ = ["run_idempotent"]

# (status, payload) to store now, or the Answer already stored with the change it reports
Execute = Callable[[Claim], Awaitable[tuple[int, dict[str, Any]] | Answer]]


def _json(status: int, body: dict[str, Any], **headers: str) -> Response:
    return Response(
        json.dumps(body).encode(), status_code=status, media_type="application/json", headers=headers
    )


def resource_response(resource: Payment | Refund) -> Response:
    if isinstance(resource, Payment):
        return _json(202 if is_pending(resource) else 200, payment_resource(resource))
    return _json(202 if resource.status == "processing" else 200, refund_resource(resource))


async def run_idempotent(request: Request, services: Services, caller: Caller, execute: Execute) -> Response:
    # The very value the signature covered (authenticate_device refused a repeated header).
    key = validate_key(device_headers(request).get("idempotency-key"))
    body = await request.body()
    fingerprint = services.idempotency.fingerprint(request.method, path_and_query(request), body)
    claim = await services.idempotency.claim(caller.device_id, key, fingerprint)
    if claim.action == "replay":
        assert claim.status is not None and claim.body is not None
        return Response(
            claim.body,
            status_code=claim.status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    if claim.action == "resource":
        assert claim.resource_type is not None and claim.resource_id is not None
        resource = await services.payments.snapshot(claim.resource_type, claim.resource_id)
        return resource_response(resource)
    try:
        result = await execute(claim)
    except BaseException:
        # Nothing was created (or the claim already points at what was): forget the claim.
        await services.idempotency.release(claim)
        raise
    if isinstance(result, Answer):
        return Response(result.body, status_code=result.status, media_type="application/json")
    status, payload = result
    data = json.dumps(payload).encode()
    if status == 202:
        await services.idempotency.mark_processing(claim)
    else:
        await services.idempotency.finish(claim, status, data)
    return Response(data, status_code=status, media_type="application/json")
