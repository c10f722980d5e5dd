"""Funding sources: where a card's money comes from, and the school's co-branded card BINs.

A card is bound to a student and to exactly one funding source: the student's e-card account
(the default), or -- for a bank co-branded campus card, recognised by a BIN prefix the school
configures -- a guardian's bank direct-debit agreement. The agreement token (obtained by the
guardian from the bank's own binding flow) is encrypted with the keyring, its AAD bound to the
row; of the bank card only the last four digits are kept. Only the token reaches the bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.registry import AdapterRegistry
from gateway.errors import NotFound, Unprocessable
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import CardBinSetting, FundingSource, Student, new_id, utcnow

__all__ = ["FundingService", "Payer", "is_co_branded"]

KINDS = ("ecard_account", "bank_agreement")


def is_co_branded(card_no: str, prefixes: Sequence[str]) -> bool:
    return any(card_no.startswith(p) for p in prefixes)


@dataclass(frozen=True)
class Payer:
    """The funding side of a card payment, resolved before routing."""

    kind: str
    adapter: str
    funding_source_id: str | None
    agreement_token: str | None = None
    card_last4: str | None = None

    def __repr__(self) -> str:  # the token must never reach a log line
        return f"Payer(kind={self.kind}, adapter={self.adapter}, source={self.funding_source_id})"


class FundingService:
    def __init__(self, db: Database, keyring: Keyring, registry: AdapterRegistry) -> None:
        self.db, self.keyring, self.registry = db, keyring, registry

    @staticmethod
    def _aad(source_id: str) -> str:
        return f"funding_source/{source_id}"

    # co-branded BINs -------------------------------------------------------------------

    async def card_bins(self, school_id: str) -> list[str]:
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(CardBinSetting, school_id)
        return list(row.co_branded.get("prefixes", [])) if row else []

    async def put_card_bins(self, school_id: str, prefixes: list[str], actor: str) -> list[str]:
        prefixes = sorted(set(prefixes))
        async with self.db.transaction() as session:
            row = await session.get(CardBinSetting, school_id, with_for_update=True)
            if row is None:
                session.add(CardBinSetting(school_id=school_id, co_branded={"prefixes": prefixes}))
            else:
                row.co_branded, row.updated_at = {"prefixes": prefixes}, utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="card_bins.updated",
                object_type="school",
                object_id=school_id,
                data={"co_branded_prefixes": prefixes},
            )
        return prefixes

    # funding sources --------------------------------------------------------------------

    async def create(
        self,
        school_id: str,
        *,
        student_id: str,
        kind: str,
        adapter: str,
        agreement_token: str | None,
        card_last4: str | None,
        actor: str,
    ) -> FundingSource:
        if adapter not in self.registry:
            raise Unprocessable("unknown_adapter", f"no adapter named {adapter!r}")
        if kind not in self.registry.capabilities(adapter).funding:
            raise Unprocessable("funding_unsupported", f"{adapter} does not reach {kind} funding sources")
        if kind == "bank_agreement" and (not agreement_token or not card_last4):
            raise Unprocessable("validation_error", "a bank agreement needs agreement_token and card_last4")
        if kind == "ecard_account" and (agreement_token or card_last4):
            raise Unprocessable("validation_error", "an e-card account has no agreement token")
        async with self.db.transaction() as session:
            await self._student(session, school_id, student_id)
            source = FundingSource(
                id=new_id("fs"),
                school_id=school_id,
                student_id=student_id,
                kind=kind,
                adapter=adapter,
                card_last4=card_last4,
                status="active",
                created_at=utcnow(),
            )
            if agreement_token:
                source.agreement_token_enc = self.keyring.encrypt(agreement_token, aad=self._aad(source.id))
            session.add(source)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="funding_source.created",
                object_type="funding_source",
                object_id=source.id,
                data={"student_id": student_id, "kind": kind, "adapter": adapter, "card_last4": card_last4},
            )
        return source

    async def list(self, school_id: str, student_id: str | None = None) -> list[FundingSource]:
        stmt = select(FundingSource).where(FundingSource.school_id == school_id)
        if student_id is not None:
            stmt = stmt.where(FundingSource.student_id == student_id)
        async with self.db.transaction(readonly=True) as session:
            return list((await session.execute(stmt.order_by(FundingSource.created_at))).scalars())

    async def get(self, school_id: str, source_id: str) -> FundingSource:
        async with self.db.transaction(readonly=True) as session:
            source = await self._get(session, school_id, source_id)
        if source is None:
            raise NotFound("no such funding source")
        return source

    async def revoke(self, school_id: str, source_id: str, actor: str) -> FundingSource:
        """The guardian ends a bank direct-debit agreement: from now on no payment is taken from
        it (cards bound to it fail with ``funding_source_inactive``), and its token is erased.
        Revoking twice is a no-op. The e-card account is not revocable: the card path must keep
        working (COMPLIANCE.md); report a card lost or bind it elsewhere instead."""
        async with self.db.transaction() as session:
            source = await self._get(session, school_id, source_id, lock=True)
            if source is None:
                raise NotFound("no such funding source")
            if source.kind != "bank_agreement":
                raise Unprocessable(
                    "funding_source_invalid", "only a bank agreement can be revoked; the e-card account stays"
                )
            if source.status != "revoked":
                # the token is what lets anyone debit the guardian: it goes, not just its status
                source.status, source.agreement_token_enc = "revoked", None
                await audit.append(
                    session,
                    self.keyring,
                    chain=school_id,
                    actor=actor,
                    action="funding_source.revoked",
                    object_type="funding_source",
                    object_id=source.id,
                    data={"student_id": source.student_id, "adapter": source.adapter},
                )
            return source

    @staticmethod
    async def _get(
        session: AsyncSession, school_id: str, source_id: str, *, lock: bool = False
    ) -> FundingSource | None:
        mine = (FundingSource.id == source_id, FundingSource.school_id == school_id)
        stmt = select(FundingSource).where(*mine)
        if lock:
            stmt = stmt.with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()

    @staticmethod
    async def _student(session: AsyncSession, school_id: str, student_id: str) -> Student:
        student = (
            await session.execute(
                select(Student).where(Student.id == student_id, Student.school_id == school_id)
            )
        ).scalar_one_or_none()
        if student is None:
            raise Unprocessable("validation_error", "no such student in this school")
        return student

    @staticmethod
    async def for_card(
        session: AsyncSession,
        school_id: str,
        *,
        student_id: str,
        card_no: str,
        funding_source_id: str | None,
        default_adapter: str,
    ) -> FundingSource:
        """The funding source a card being bound will pay from (inside the binding transaction).

        A co-branded card (by BIN) must name a bank agreement of the same student; any other card
        pays from the student's e-card account, created on first use."""
        row = await session.get(CardBinSetting, school_id)
        co_branded = is_co_branded(card_no, row.co_branded.get("prefixes", []) if row else [])
        if funding_source_id is not None:
            source = await FundingService._get(session, school_id, funding_source_id)
            if source is None or source.student_id != student_id or source.status != "active":
                raise Unprocessable(
                    "funding_source_invalid", "no active funding source with that id for this student"
                )
            if co_branded != (source.kind == "bank_agreement"):
                raise Unprocessable(
                    "funding_source_invalid",
                    "a co-branded card pays from a bank agreement; any other card from the e-card account",
                )
            if source.card_last4 is not None and source.card_last4 != card_no[-4:]:
                raise Unprocessable("funding_source_invalid", "the agreement is for another bank card")
            return source
        if co_branded:
            raise Unprocessable(
                "funding_source_required",
                "this card's BIN is a bank co-branded BIN: bind it with the funding_source_id of the "
                "guardian's bank agreement",
            )
        existing = (
            await session.execute(
                select(FundingSource).where(
                    FundingSource.school_id == school_id,
                    FundingSource.student_id == student_id,
                    FundingSource.kind == "ecard_account",
                    FundingSource.adapter == default_adapter,
                    FundingSource.status == "active",
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            return existing
        source = FundingSource(
            id=new_id("fs"),
            school_id=school_id,
            student_id=student_id,
            kind="ecard_account",
            adapter=default_adapter,
            status="active",
            created_at=utcnow(),
        )
        session.add(source)
        await session.flush()
        return source

    async def payer(
        self,
        school_id: str,
        funding_source_id: str | None,
        funding_adapter: str,
        *,
        session: AsyncSession | None = None,
    ) -> Payer | None:
        """The payer behind a card; None when its funding source is no longer active.
        ``session``: read in the caller's transaction (a payment reads its card and payer in one)."""
        if funding_source_id is None:
            return Payer("ecard_account", funding_adapter, None)
        if session is None:
            async with self.db.transaction(readonly=True) as own:
                source = await self._get(own, school_id, funding_source_id)
        else:
            source = await self._get(session, school_id, funding_source_id)
        if source is None or source.status != "active":
            return None
        token = None
        if source.agreement_token_enc is not None:
            token = self.keyring.decrypt(source.agreement_token_enc, aad=self._aad(source.id))
        return Payer(source.kind, source.adapter, source.id, token, source.card_last4)
