"""Liveness, readiness and metrics."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import ServicesDep
from gateway.api.schemas import Problem
from gateway.errors import NotFound, Unauthorized, Unavailable
from gateway.metrics import REGISTRY
from gateway.settings import Settings
from gateway.store.redis import RedisDown

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> dict[str, Any]:
    checks: dict[str, str] = {}
    try:
        await services.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        raise Unavailable("not_ready", f"database: {type(exc).__name__}") from exc
    link = services.redis_link
    if link is not None:
        # Redis down is degraded, not unready: the gateway serves from the database meanwhile,
        # and one gateway's Redis blip must not take every gateway out of the load balancer
        try:
            await link.call(link.client.ping)
            checks["redis"] = "ok"
        except RedisDown:
            checks["redis"] = "degraded"
    return {"status": "ready", "checks": checks}


_METRICS_TOKEN = HTTPBearer(
    scheme_name="metricsToken",
    description="`CAMPUSPAY_METRICS_TOKEN` (`Authorization: Bearer …`), for GET /metrics only.",
    auto_error=False,
)
_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        401: {**_PROBLEM, "description": "`token_invalid`: the metrics token is set and was not sent"},
        404: {**_PROBLEM, "description": "`not_found`: production without a metrics token"},
    },
)
async def metrics(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_METRICS_TOKEN)],
) -> Response:
    """Open in sandbox unless `CAMPUSPAY_METRICS_TOKEN` is set; then that Bearer token is needed.
    Production without a token does not serve it."""
    check_metrics_access(services.settings, credentials.credentials if credentials else None)
    await services.webhooks.observe()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def check_metrics_access(settings: Settings, presented: str | None) -> None:
    expected = settings.metrics_token
    if expected is None:
        if settings.is_sandbox:
            return
        # Latency by route and payment counts tell an outsider a school's trade: nothing to
        # see unless an operator chose a token.
        raise NotFound()
    # Digests of equal length, so the comparison takes the same time whatever was sent.
    sent = hashlib.sha256((presented or "").encode()).digest()
    if presented is None or not hmac.compare_digest(sent, hashlib.sha256(expected.encode()).digest()):
        raise Unauthorized("token_invalid", headers={"WWW-Authenticate": 'Bearer realm="campuspay-metrics"'})
