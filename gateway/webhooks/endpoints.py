"""Webhook endpoints: a school system's URL, the event types it wants, and its signing secret.

The secret (``whsec_`` + 32 random bytes, base64, as Standard Webhooks spells it) is shown once,
at creation and at each rotation, and stored encrypted with the keyring. A rotation keeps the
previous secret signing beside the new one for the overlap the admin chose, so a receiver can
switch without losing a delivery (both signatures are sent, space-separated).

URLs are judged by ``gateway.outbound`` (the guard every call out goes through) when they are
saved; production also requires ``https``. Every delivery is judged again when it is sent.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select

from gateway.errors import NotFound, Unprocessable
from gateway.outbound import EndpointInvalid, EndpointRefused, Outbound
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.settings import Environment
from gateway.store.db import Database
from gateway.store.models import School, WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id
from gateway.webhooks.outbox import EVENT_TYPES

__all__ = ["EndpointPage", "EndpointView", "WebhookEndpoints", "new_secret"]

SECRET_PREFIX = "whsec_"
MAX_OVERLAP = timedelta(days=7)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class EndpointView:
    id: str
    url: str
    description: str
    event_types: list[str] | None
    status: str
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: str | None = None  # only right after creation or rotation

    @classmethod
    def of(cls, row: WebhookEndpoint, now: datetime, secret: str | None = None) -> EndpointView:
        expires = row.previous_secret_expires_at
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            event_types=list(row.event_types) if row.event_types is not None else None,
            status=row.status,
            disabled_reason=row.disabled_reason,
            previous_secret_expires_at=expires if expires is not None and expires > now else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
            secret=secret,
        )


@dataclass(frozen=True)
class EndpointPage:
    data: list[EndpointView]
    next_cursor: str | None


_UNSET: Any = object()


def _aad(school_id: str, endpoint_id: str) -> str:
    return f"webhook_endpoints/{school_id}/{endpoint_id}"


def _event_types(types: list[str] | None) -> list[str] | None:
    if types is None:
        return None
    unknown = sorted(set(types) - EVENT_TYPES)
    if unknown:
        raise Unprocessable("validation_error", f"event_types: unknown event types {unknown}")
    if not types:
        raise Unprocessable("validation_error", "event_types: leave it out (or null) for every type")
    return sorted(set(types))


class WebhookEndpoints:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        outbound: Outbound,
        env: Environment,
        clock: Callable[[], datetime],
    ) -> None:
        self.db, self.keyring, self.outbound, self.env, self.clock = db, keyring, outbound, env, clock

    async def check_url(self, school_id: str, url: str) -> None:
        """422 ``endpoint_not_allowed`` where this environment may not deliver to ``url``."""
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL:
            scheme = ""
        if self.env is Environment.PRODUCTION and scheme == "http":
            raise Unprocessable("endpoint_not_allowed", "production delivers webhooks over https only")
        try:
            await self.outbound.check_url(url, school_id)
        except EndpointInvalid as exc:
            raise Unprocessable("validation_error", f"url: {exc}") from None
        except EndpointRefused as exc:
            raise Unprocessable("endpoint_not_allowed", str(exc)) from None

    async def locked(self, session: Any, school_id: str, endpoint_id: str) -> WebhookEndpoint:
        row = await session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if row is None or row.school_id != school_id:
            raise NotFound("no such webhook endpoint")
        assert isinstance(row, WebhookEndpoint)
        return row

    async def audit(self, session: Any, row: WebhookEndpoint, action: str, actor: str, **data: Any) -> None:
        await audit.append(
            session,
            self.keyring,
            chain=row.school_id,
            actor=actor,
            action=f"webhook_endpoint.{action}",
            object_type="webhook_endpoint",
            object_id=row.id,
            data=data,
        )

    async def create(
        self, school_id: str, *, url: str, event_types: list[str] | None, description: str, actor: str
    ) -> EndpointView:
        types = _event_types(event_types)
        await self.check_url(school_id, url)
        secret, now = new_secret(), self.clock()
        endpoint_id = new_id("whe")
        async with self.db.transaction() as session:
            if await session.get(School, school_id) is None:
                raise NotFound("no such school")
            row = WebhookEndpoint(
                id=endpoint_id,
                school_id=school_id,
                url=url,
                description=description,
                event_types=types,
                status="enabled",
                secret_enc=self.keyring.encrypt(secret, aad=_aad(school_id, endpoint_id)),
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await self.audit(session, row, "created", actor, url=url, event_types=types)
        return EndpointView.of(row, now, secret)

    async def page(self, school_id: str, *, limit: int, cursor: str | None) -> EndpointPage:
        async with self.db.transaction() as session:
            query = select(WebhookEndpoint).where(WebhookEndpoint.school_id == school_id)
            if cursor:
                query = query.where(WebhookEndpoint.id > cursor)
            rows = list(
                (await session.execute(query.order_by(WebhookEndpoint.id).limit(limit + 1))).scalars()
            )
        now = self.clock()
        more = len(rows) > limit
        rows = rows[:limit]
        return EndpointPage([EndpointView.of(r, now) for r in rows], rows[-1].id if more else None)

    async def view(self, school_id: str, endpoint_id: str) -> EndpointView:
        async with self.db.transaction() as session:
            row = await session.get(WebhookEndpoint, endpoint_id)
        if row is None or row.school_id != school_id:
            raise NotFound("no such webhook endpoint")
        return EndpointView.of(row, self.clock())

    async def update(
        self,
        school_id: str,
        endpoint_id: str,
        *,
        actor: str,
        url: str | None = None,
        event_types: list[str] | None = _UNSET,
        description: str | None = None,
        status: str | None = None,
    ) -> EndpointView:
        types = _UNSET if event_types is _UNSET else _event_types(event_types)
        if url is not None:
            await self.check_url(school_id, url)
        now = self.clock()
        async with self.db.transaction() as session:
            row = await self.locked(session, school_id, endpoint_id)
            changed: dict[str, Any] = {}
            if url is not None and url != row.url:
                row.url = changed["url"] = url
            if types is not _UNSET and types != row.event_types:
                row.event_types = changed["event_types"] = types
            if description is not None and description != row.description:
                row.description = description
                changed["description"] = True  # free text: the log says it changed, not what to
            if changed:
                row.updated_at = now
                await self.audit(session, row, "updated", actor, **changed)
            if status is not None and status != row.status:
                row.status, row.updated_at = status, now
                if status == "enabled":
                    # a fresh start: the five failing days count again from the next failure
                    row.disabled_reason, row.failing_since = None, None
                    await self.audit(session, row, "enabled", actor)
                else:
                    row.disabled_reason = "disabled_by_admin"
                    await self.audit(session, row, "disabled", actor, reason=row.disabled_reason)
        return EndpointView.of(row, now)

    async def delete(self, school_id: str, endpoint_id: str, *, actor: str) -> None:
        async with self.db.transaction() as session:
            row = await self.locked(session, school_id, endpoint_id)
            deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == row.id)
            await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
            await session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == row.id))
            await session.delete(row)
            await self.audit(session, row, "deleted", actor, url=row.url)

    async def rotate_secret(
        self, school_id: str, endpoint_id: str, *, overlap: timedelta, actor: str
    ) -> EndpointView:
        if not timedelta(0) <= overlap <= MAX_OVERLAP:
            raise Unprocessable("validation_error", "overlap_seconds: 0 to 604800 (7 days)")
        secret, now = new_secret(), self.clock()
        async with self.db.transaction() as session:
            row = await self.locked(session, school_id, endpoint_id)
            aad = _aad(school_id, endpoint_id)
            if overlap:
                row.previous_secret_enc, row.previous_secret_expires_at = row.secret_enc, now + overlap
            else:
                row.previous_secret_enc, row.previous_secret_expires_at = None, None
            row.secret_enc, row.updated_at = self.keyring.encrypt(secret, aad=aad), now
            await self.audit(
                session, row, "secret_rotated", actor, overlap_seconds=int(overlap.total_seconds())
            )
        return EndpointView.of(row, now, secret)

    def secrets(self, row: WebhookEndpoint, now: datetime) -> list[str]:
        """The secrets that sign a delivery made now: the current one, then the previous one
        while its overlap lasts."""
        aad = _aad(row.school_id, row.id)
        found = [self.keyring.decrypt(row.secret_enc, aad=aad)]
        expires = row.previous_secret_expires_at
        if row.previous_secret_enc is not None and expires is not None and expires > now:
            found.append(self.keyring.decrypt(row.previous_secret_enc, aad=aad))
        return found
