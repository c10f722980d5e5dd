"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import ServicesDep
from gateway.errors import Unavailable
from gateway.metrics import REGISTRY

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
    if services.redis is not None:
        try:
            await services.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            raise Unavailable("not_ready", f"redis: {type(exc).__name__}") from exc
    return {"status": "ready", "checks": checks}


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
