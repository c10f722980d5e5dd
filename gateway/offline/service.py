"""Offline batches (CONTRACT.md "Offline records", COMPLIANCE rule 20).

Each record is answered on its own: ``posted``, ``duplicate`` (same device and terminal
sequence number as one already taken: nothing moves again), ``held_for_review`` with a reason
(the card was reported lost before the record was made, or the record is over a limit and the
offline terminal could not ask for the PIN), or ``rejected`` with a reason. Records are posted
to the e-card system's own offline upload, which de-duplicates on the same key, so a batch that
is retried after a crash anywhere moves each record's money at most once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from adapters.ecard.types import OfflineRecord as EcardOfflineRecord
from gateway.errors import BadGateway
from gateway.idempotency.service import Claim, IdempotencyService
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import Card, OfflineRecord, Payment, Store, new_id
from gateway.tenancy.providers import ProviderSettings
from gateway.tenancy.service import card_fingerprint
from gateway.webhooks.outbox import emit

__all__ = ["MAX_RECORDS", "OfflineInput", "OfflineService"]

log = logging.getLogger(__name__)
MAX_RECORDS = 500
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class OfflineInput:
    terminal_seq: int
    merchant_order_id: str
    amount: int
    currency: str
    card_no: str
    store_id: str
    occurred_at: datetime


def _reference(device_id: str, seq: int) -> str:
    return f"off-{device_id}-{seq}"  # stable: the same record always carries the same order_ref


class OfflineService:
    def __init__(
        self, db: Database, keyring: Keyring, providers: ProviderSettings, *, clock: Callable[[], datetime]
    ) -> None:
        self.db, self.keyring, self.providers, self.clock = db, keyring, providers, clock

    async def upload(
        self, school_id: str, device_id: str, records: Sequence[OfflineInput], claim: Claim
    ) -> dict[str, Any]:
        now = self.clock()
        results: list[dict[str, Any]] = [{} for _ in records]  # answered record by record, in order
        async with self.db.transaction() as session:
            seqs = [r.terminal_seq for r in records]
            seen = set(
                (
                    await session.execute(
                        select(OfflineRecord.terminal_seq).where(
                            OfflineRecord.device_id == device_id, OfflineRecord.terminal_seq.in_(seqs)
                        )
                    )
                ).scalars()
            )
            stores = {
                s.id: s
                for s in (await session.execute(select(Store).where(Store.school_id == school_id))).scalars()
            }
            highest = await session.scalar(
                select(OfflineRecord.terminal_seq)
                .where(OfflineRecord.device_id == device_id)
                .order_by(OfflineRecord.terminal_seq.desc())
                .limit(1)
            )
            cards: dict[str, Card | None] = {}
            for record in records:
                digest = card_fingerprint(self.keyring, school_id, record.card_no)
                if digest not in cards:
                    cards[digest] = (
                        await session.execute(
                            select(Card).where(Card.school_id == school_id, Card.card_hash == digest)
                        )
                    ).scalar_one_or_none()
        batch_seen: set[int] = set()
        to_send: list[tuple[int, OfflineInput, Card]] = []
        for index, record in enumerate(records):
            seq = record.terminal_seq
            if seq in seen or seq in batch_seen:
                results[index] = {"terminal_seq": seq, "status": "duplicate"}
                continue
            batch_seen.add(seq)
            card = cards[card_fingerprint(self.keyring, school_id, record.card_no)]
            reason = None
            if record.currency != "CNY" or record.amount <= 0:
                reason = "invalid_amount"
            elif record.store_id not in stores:
                reason = "store_unknown"
            elif record.occurred_at > now + FUTURE_TOLERANCE:
                reason = "occurred_in_future"
            elif card is None:
                reason = "card_unknown"
            if reason:
                results[index] = {"terminal_seq": seq, "status": "rejected", "reason": reason}
            elif (
                card is not None
                and card.status == "lost"
                and card.status_changed_at is not None
                and card.status_changed_at <= record.occurred_at
            ):
                results[index] = {
                    "terminal_seq": seq,
                    "status": "held_for_review",
                    "reason": "card_lost_before_record",
                }
            else:
                assert card is not None
                to_send.append((index, record, card))
        provider_results = {}
        if to_send:
            provider_results = await self._send(school_id, device_id, [(r, c) for _, r, c in to_send])
        async with self.db.transaction() as session:
            batch_id = new_id("ob")
            for index, record, card in to_send:
                answer = provider_results.get(record.terminal_seq, {})
                status = str(answer.get("status", "")).lower()
                payment_id = None
                if status in ("posted", "duplicate"):
                    payment_id = await self._record_payment(
                        session, school_id, device_id, record, card, answer, now
                    )
                    results[index] = {
                        "terminal_seq": record.terminal_seq,
                        "status": "posted",
                        "payment_id": payment_id,
                    }
                elif status == "held_for_review":
                    results[index] = {
                        "terminal_seq": record.terminal_seq,
                        "status": status,
                        "reason": answer.get("reason") or "provider_review",
                    }
                else:
                    results[index] = {
                        "terminal_seq": record.terminal_seq,
                        "status": "rejected",
                        "reason": str(answer.get("reason") or "provider_rejected").lower(),
                    }
            for record, result in zip(records, results, strict=True):
                if result["status"] == "duplicate":
                    continue
                session.add(
                    OfflineRecord(
                        id=new_id("ofr"),
                        school_id=school_id,
                        device_id=device_id,
                        batch_id=batch_id,
                        terminal_seq=record.terminal_seq,
                        merchant_order_id=record.merchant_order_id,
                        amount=record.amount,
                        currency=record.currency,
                        card_hash=card_fingerprint(self.keyring, school_id, record.card_no),
                        card_last4=record.card_no[-4:],
                        store_id=record.store_id,
                        occurred_at=record.occurred_at,
                        status=result["status"],
                        reason=result.get("reason"),
                        payment_id=result.get("payment_id"),
                    )
                )
            counts: dict[str, int] = {}
            for result in results:
                counts[result["status"]] = counts.get(result["status"], 0) + 1
            await IdempotencyService.attach(session, claim, "offline_batch", batch_id)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=f"device:{device_id}",
                action="offline.batch",
                object_type="offline_batch",
                object_id=batch_id,
                data={"counts": counts},
            )
        first = min((r.terminal_seq for r in records), default=None)
        gaps = []
        if highest is not None and first is not None and first > highest + 1:
            gaps.append({"from": highest + 1, "to": first - 1})
        unique = sorted(set(seqs))
        gaps += [{"from": a + 1, "to": b - 1} for a, b in itertools.pairwise(unique) if b > a + 1]
        return {"batch_id": batch_id, "results": results, "counts": counts, "gaps": gaps}

    async def _send(
        self, school_id: str, device_id: str, items: list[tuple[OfflineInput, Card]]
    ) -> dict[int, dict[str, Any]]:
        adapter: Any = await self.providers.adapter(school_id, "ecard")
        if adapter is None or not hasattr(adapter, "upload_offline"):
            raise BadGateway("provider_check_failed", "no e-card provider to post offline records to")
        payload = [
            EcardOfflineRecord(
                terminal_seq=r.terminal_seq,
                order_ref=_reference(device_id, r.terminal_seq),
                card_no=r.card_no,
                amount=r.amount,
                occurred_at=r.occurred_at,
                currency=r.currency,
                store_ref=r.store_id,
            )
            for r, _ in items
        ]
        try:
            answers = await adapter.upload_offline(device_id, payload)
        except Exception as exc:
            # Nothing is recorded: the terminal retries the batch (same key) and the e-card
            # system's own de-duplication keeps every record to one debit.
            log.warning("offline upload for %s failed: %s", device_id, type(exc).__name__)
            raise BadGateway(
                "provider_check_failed",
                "the e-card system did not confirm the upload; retry the batch with the same Idempotency-Key",
            ) from exc
        out: dict[int, dict[str, Any]] = {}
        for (record, _), answer in zip(items, answers, strict=True):
            status = answer.result
            if status == "duplicate":  # stored before (e.g. a retry after a crash): what it was then
                status = answer.original_result or "posted"
            out[record.terminal_seq] = {"status": status, "reason": answer.reason, "txn_id": answer.txn_id}
        return out

    async def _record_payment(
        self,
        session: Any,
        school_id: str,
        device_id: str,
        record: OfflineInput,
        card: Card,
        answer: dict[str, Any],
        now: datetime,
    ) -> str:
        payment = Payment(
            id=new_id("pay"),
            school_id=school_id,
            device_id=device_id,
            store_id=record.store_id,
            merchant_order_id=record.merchant_order_id,
            amount=record.amount,
            currency=record.currency,
            method="card",
            adapter="ecard",
            student_id=card.student_id,
            card_last4=card.last4,
            status="succeeded",
            provider_reference=_reference(device_id, record.terminal_seq),
            provider_txn_id=answer.get("txn_id"),
            created_at=record.occurred_at,
            updated_at=now,
            description="offline",
        )
        session.add(payment)
        await session.flush()
        await audit.append(
            session,
            self.keyring,
            chain=school_id,
            actor=f"device:{device_id}",
            action="payment.succeeded",
            object_type="payment",
            object_id=payment.id,
            data={"amount": payment.amount, "offline": True, "terminal_seq": record.terminal_seq},
        )
        emit(
            session,
            school_id=school_id,
            event_type="payment.succeeded",
            data={
                "payment_id": payment.id,
                "status": "succeeded",
                "amount": payment.amount,
                "currency": payment.currency,
                "merchant_order_id": payment.merchant_order_id,
                "store_id": payment.store_id,
                "failure_code": None,
                "refunded_amount": 0,
                "offline": True,
            },
        )
        return payment.id
