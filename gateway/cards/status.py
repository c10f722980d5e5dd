"""The card-status cache, kept by the e-card system's blacklist version (COMPLIANCE rule 19).

The e-card system owns card status. The gateway caches it per card (by keyed hash, never the
number) with the blacklist version that set it, so a lost card is refused at once -- before any
provider is called -- and offline records made after a loss report can be held for review.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from adapters.ecard.types import EcardRefused
from gateway.cards import losses
from gateway.errors import BadGateway, Conflict, NotFound, Unprocessable
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import BlacklistState, Card, ProviderSetting, new_id
from gateway.tenancy.providers import ProviderSettings
from gateway.tenancy.service import card_fingerprint

__all__ = ["CardStatusService"]

log = logging.getLogger(__name__)
ADAPTER = "ecard"
_STATUS = {"ACTIVE": "active", "LOST": "lost", "FROZEN": "frozen"}


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class CardStatusService:
    def __init__(
        self, db: Database, keyring: Keyring, providers: ProviderSettings, *, clock: Callable[[], datetime]
    ) -> None:
        self.db, self.keyring, self.providers, self.clock = db, keyring, providers, clock

    async def _adapter(self, school_id: str, name: str = ADAPTER) -> Any:
        adapter = await self.providers.adapter(school_id, name)
        if adapter is None:
            raise Unprocessable("provider_not_configured", f"the school has no {name} provider")
        return adapter

    async def _apply(self, school_id: str, changes: list[dict[str, Any]], version: int | None) -> None:
        async with self.db.transaction() as session:
            for change in changes:
                card_no = str(change.get("card_no", ""))
                status = _STATUS.get(str(change.get("status", "")).upper())
                if not card_no or status is None:
                    continue
                digest = card_fingerprint(self.keyring, school_id, card_no)
                card = (
                    await session.execute(
                        select(Card)
                        .where(Card.school_id == school_id, Card.card_hash == digest)
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                change_version = int(change.get("version") or 0)
                if card is None or change_version <= card.status_version:
                    continue  # history the card's status already reflects (a replay, a new terminal)
                at = _when(change.get("at")) or self.clock()
                if not (status == card.status == "lost" and card.status_changed_at is not None):
                    card.status_changed_at = at  # a card that stays lost keeps its first time
                card.status, card.status_version = status, change_version
                await self._history(session, card, status, at)
            if version is not None:
                state = await session.get(BlacklistState, (school_id, ADAPTER), with_for_update=True)
                if state is None:
                    session.add(
                        BlacklistState(
                            school_id=school_id, adapter=ADAPTER, version=version, synced_at=self.clock()
                        )
                    )
                elif version >= state.version:
                    state.version, state.synced_at = version, self.clock()

    async def sync(self, school_id: str) -> int:
        """Follow the provider's blacklist from the cached version; returns the new version."""
        async with self.db.transaction() as session:
            state = await session.get(BlacklistState, (school_id, ADAPTER))
        since = state.version if state else 0
        adapter = await self._adapter(school_id)
        try:
            version, changes = await adapter.blacklist(since)
        except Exception as exc:
            raise BadGateway("provider_check_failed", f"e-card blacklist: {type(exc).__name__}") from exc
        await self._apply(school_id, list(changes), int(version))
        return int(version)

    async def blacklist(self, school_id: str, since_version: int) -> dict[str, Any]:
        """What a terminal needs: every status change since its version (numbers included, since a
        terminal matches the card in its hand; the gateway itself keeps none)."""
        adapter = await self._adapter(school_id)
        try:
            version, changes = await adapter.blacklist(since_version)
        except Exception as exc:
            raise BadGateway("provider_check_failed", f"e-card blacklist: {type(exc).__name__}") from exc
        changes = list(changes)
        await self._apply(school_id, changes, int(version))
        return {
            "version": int(version),
            "changes": [
                {
                    "card_no": c.get("card_no"),
                    "status": _STATUS.get(str(c.get("status", "")).upper(), "unknown"),
                    "version": c.get("version"),
                    "at": c.get("at"),
                }
                for c in changes
            ],
        }

    async def _card(self, school_id: str, card_no: str) -> Card:
        digest = card_fingerprint(self.keyring, school_id, card_no)
        async with self.db.transaction() as session:
            card = (
                await session.execute(
                    select(Card).where(Card.school_id == school_id, Card.card_hash == digest)
                )
            ).scalar_one_or_none()
        if card is None:
            raise NotFound("no such card at this school")
        return card

    def _on_ecard(self, card: Card) -> bool:
        """Whether an e-card system (``ecard``, or an instance such as ``ecard.backup``) holds
        this card's status. A card that pays from another source (a bank co-branded card) has
        its status here alone: blocking it must not wait for a system that does not know it."""
        return card.funding_adapter.partition(".")[0] == ADAPTER

    async def report_lost(self, school_id: str, card_no: str, actor: str) -> Card:
        card = await self._card(school_id, card_no)
        # Blocked here first, whatever the provider says next: refusing a found card's payments
        # is the safe side, and must not depend on another system answering.
        await self._mark(card, "lost", actor, "card.reported_lost")
        if self._on_ecard(card):
            adapter = await self._adapter(school_id, card.funding_adapter)
            try:
                await adapter.report_lost(card_no)
            except EcardRefused as exc:
                _refused(
                    exc, "the card is blocked at the gateway, but the e-card system refused the loss report"
                )
                raise BadGateway(
                    "provider_check_failed",
                    "the card is blocked at the gateway, but the e-card system refused our request "
                    f"({exc.code}); send it again once that is fixed",
                ) from exc
            except Exception as exc:
                raise BadGateway(
                    "provider_check_failed",
                    "the card is blocked at the gateway, but the e-card system did not confirm the loss "
                    f"report ({type(exc).__name__}); send it again so that offline terminals learn it too",
                ) from exc
            await self.sync(school_id)
        return await self._card(school_id, card_no)

    async def cancel_loss(self, school_id: str, card_no: str, actor: str) -> Card:
        card = await self._card(school_id, card_no)
        if self._on_ecard(card):
            # unblocked only once the e-card system has unblocked it too
            adapter = await self._adapter(school_id, card.funding_adapter)
            try:
                await adapter.cancel_loss(card_no)
            except EcardRefused as exc:
                _refused(exc, "the card stays blocked: the e-card system refused to cancel the loss")
                raise BadGateway("provider_check_failed", f"e-card cancel loss: {exc.code}") from exc
            except Exception as exc:
                why = f"e-card cancel loss: {type(exc).__name__}; the card stays blocked"
                raise BadGateway("provider_check_failed", why) from exc
        await self._mark(card, "active", actor, "card.loss_cancelled")
        if self._on_ecard(card):
            await self.sync(school_id)
        return await self._card(school_id, card_no)

    async def replace(self, school_id: str, old_card_no: str, new_card_no: str, actor: str) -> Card:
        old = await self._card(school_id, old_card_no)
        if not self._on_ecard(old):
            # the guardian's agreement names the bank card; a new card needs its own agreement
            raise Unprocessable(
                "funding_source_required",
                "a card paying from a bank agreement is replaced by binding the new card to the "
                "guardian's agreement for it (POST /v1/schools/{id}/cards with funding_source_id); "
                "report the old card lost to block it",
            )
        adapter = await self._adapter(school_id, old.funding_adapter)
        try:
            await adapter.replace_card(old_card_no, new_card_no)
        except EcardRefused as exc:
            _refused(exc, "the e-card system refused the replacement")
            raise BadGateway("provider_check_failed", f"e-card replacement: {exc.code}") from exc
        except Exception as exc:
            raise BadGateway("provider_check_failed", f"e-card replacement: {type(exc).__name__}") from exc
        new_hash = card_fingerprint(self.keyring, school_id, new_card_no)
        async with self.db.transaction() as session:
            exists = await session.scalar(
                select(Card.id).where(Card.school_id == school_id, Card.card_hash == new_hash)
            )
            if exists is None:
                session.add(
                    Card(
                        id=new_id("crd"),
                        school_id=school_id,
                        student_id=old.student_id,
                        card_hash=new_hash,
                        last4=new_card_no[-4:],
                        funding_adapter=old.funding_adapter,
                        funding_source_id=old.funding_source_id,  # the account stays the same
                    )
                )
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="card.replaced",
                object_type="card",
                object_id=old.id,
                data={"student_id": old.student_id, "new_last4": new_card_no[-4:]},
            )
        await self._mark(old, "lost", actor, None)
        await self.sync(school_id)
        return await self._card(school_id, new_card_no)

    async def _mark(self, card: Card, status: str, actor: str, action: str | None) -> None:
        async with self.db.transaction() as session:
            row = await session.get(Card, card.id, with_for_update=True)
            assert row is not None
            now = self.clock()
            if row.status != status or row.status_changed_at is None:
                row.status_changed_at = now  # a repeated report keeps the first time
            row.status = status
            await self._history(session, row, status, now)
            # Newer than every e-card change seen so far, so replaying that history (a terminal
            # reading the blacklist from 0, a feed reset) can never undo this; only a change the
            # e-card makes from now on can.
            seen = await session.get(BlacklistState, (row.school_id, ADAPTER))
            row.status_version = max(row.status_version, seen.version if seen is not None else 0)
            if action:
                await audit.append(
                    session,
                    self.keyring,
                    chain=row.school_id,
                    actor=actor,
                    action=action,
                    object_type="card",
                    object_id=row.id,
                    data={"last4": row.last4},
                )

    @staticmethod
    async def _history(session: Any, card: Card, status: str, at: datetime) -> None:
        """Every loss and every end of one is kept (offline records are judged by the card's
        status at their sale time, COMPLIANCE 20). A frozen card is not a lost one."""
        if status == "lost":
            await losses.record_lost(session, card, at)
        elif status == "active":
            await losses.record_found(session, card, at)

    async def sync_all(self) -> None:
        """Worker: follow every configured school's blacklist (failures are retried next time)."""
        async with self.db.transaction() as session:
            schools = list(
                (
                    await session.execute(
                        select(ProviderSetting.school_id).where(ProviderSetting.adapter == ADAPTER)
                    )
                ).scalars()
            )
        for school_id in schools:
            try:
                await self.sync(school_id)
            except Exception as exc:
                log.warning("blacklist sync for %s failed: %s", school_id, exc)


def _refused(exc: EcardRefused, what: str) -> None:
    """A verified refusal of the card operation itself (the new number is already a card, the
    card was replaced, is frozen, is unknown there) is the answer, with the provider's reason:
    409, not 502. Sending it again changes nothing; a 502 said it might. A refusal of the
    gateway's own request (its credentials, its clock) returns, for the caller's 502."""
    if exc.of_request:
        return
    reason = f"{exc.code} ({exc.message})" if exc.message else exc.code
    raise Conflict("provider_refused", f"{what}: {reason}") from exc
