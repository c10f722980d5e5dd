"""Offline batches (CONTRACT.md "Offline records", COMPLIANCE rule 20).

Each record is answered on its own: ``posted``, ``duplicate`` (same device and terminal
sequence number as one already taken: nothing moves again), ``held_for_review`` with a reason
(the card was lost at the sale time by any of its loss reports, the record is older than the
offline window or dated in the future, or it is over a limit and the offline terminal could not
ask for the PIN), or ``rejected`` with a reason. Records are posted to the e-card system's own
offline upload, which de-duplicates on the same key, so a batch that is retried after a crash
anywhere moves each record's money at most once.

The sale time (``occurred_at``) is the terminal's word. It decides what the loss check and
limits see, so it is bounded (decision 0019): a record older than ``max_age`` is not posted on
the terminal's word alone -- the card may have been lost and its history since forgotten by the
terminal, and the sale's day has long closed -- and neither is one dated in the future beyond the
signature clock skew. A posted record becomes a payment whose ``created_at`` is the posting time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from adapters.ecard.types import OfflineRecord as EcardOfflineRecord
from gateway.cards.losses import losses_of, was_lost
from gateway.errors import BadGateway, Unprocessable
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


@dataclass(frozen=True)
class OfflineInput:
    terminal_seq: int
    merchant_order_id: str
    amount: int
    currency: str
    card_no: str
    store_id: str
    occurred_at: datetime


def _same_sale(record: OfflineInput, digest: str, other: Any, other_digest: str | None = None) -> bool:
    """Whether two uploads under one sequence number describe the same sale."""
    theirs = other_digest if other_digest is not None else other.card_hash
    occurred = other.occurred_at
    if occurred.tzinfo is None:  # read back from SQLite: stored as UTC
        occurred = occurred.replace(tzinfo=UTC)
    return (
        record.merchant_order_id == other.merchant_order_id
        and record.amount == other.amount
        and record.currency == other.currency
        and record.store_id == other.store_id
        and digest == theirs
        and record.occurred_at == occurred
    )


def _held(seq: int, reason: str) -> dict[str, Any]:
    return {"terminal_seq": seq, "status": "held_for_review", "reason": reason}


def _reference(device_id: str, seq: int) -> str:
    return f"off-{device_id}-{seq}"  # stable: the same record always carries the same order_ref


class OfflineService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        providers: ProviderSettings,
        *,
        clock: Callable[[], datetime],
        max_age: timedelta,
        future_skew: timedelta,
    ) -> None:
        self.db, self.keyring, self.providers, self.clock = db, keyring, providers, clock
        self.max_age, self.future_skew = max_age, future_skew

    async def upload(
        self, school_id: str, device_id: str, records: Sequence[OfflineInput], claim: Claim
    ) -> dict[str, Any]:
        # One upload per device at a time, across processes: its checks of orders and sequence
        # numbers hold until its answers are stored, so two batches sent at once (other keys,
        # same order) cannot both be charged.
        async with self.db.exclusive(f"offline-upload:{device_id}"):
            return await self._upload(school_id, device_id, records, claim)

    async def _upload(
        self, school_id: str, device_id: str, records: Sequence[OfflineInput], claim: Claim
    ) -> dict[str, Any]:
        now = self.clock()
        results: list[dict[str, Any]] = [{} for _ in records]  # answered record by record, in order
        digests = [card_fingerprint(self.keyring, school_id, r.card_no) for r in records]
        async with self.db.transaction() as session:
            seqs = [r.terminal_seq for r in records]
            prior = {
                row.terminal_seq: row
                for row in (
                    await session.execute(
                        select(OfflineRecord).where(
                            OfflineRecord.device_id == device_id, OfflineRecord.terminal_seq.in_(seqs)
                        )
                    )
                ).scalars()
            }
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
            for digest in digests:
                if digest not in cards:
                    cards[digest] = (
                        await session.execute(
                            select(Card).where(Card.school_id == school_id, Card.card_hash == digest)
                        )
                    ).scalar_one_or_none()
            history = await losses_of(session, [c.id for c in cards.values() if c is not None])
            # an order id already taken on this device: by a live payment, or by a record held
            # for review (its money may still be posted after the review)
            orders = {r.merchant_order_id for r in records}
            taken_orders = set(
                (
                    await session.execute(
                        select(Payment.merchant_order_id).where(
                            Payment.device_id == device_id,
                            Payment.merchant_order_id.in_(orders),
                            Payment.status != "failed",
                        )
                    )
                ).scalars()
            ) | set(
                (
                    await session.execute(
                        select(OfflineRecord.merchant_order_id).where(
                            OfflineRecord.device_id == device_id,
                            OfflineRecord.merchant_order_id.in_(orders),
                            OfflineRecord.status == "held_for_review",
                        )
                    )
                ).scalars()
            )
        funding = {c.funding_adapter for c in cards.values() if c is not None}
        configured = {name: await self.providers.adapter(school_id, name) for name in funding}
        unconfigured = {name for name, adapter in configured.items() if adapter is None}
        # None: the funding source takes no offline uploads (a bank agreement, say)
        offline_adapters: dict[str, Any] = {
            name: adapter if hasattr(adapter, "upload_offline") else None
            for name, adapter in configured.items()
        }
        in_batch: dict[int, tuple[OfflineInput, str]] = {}
        to_send: list[tuple[int, OfflineInput, Card]] = []
        for index, record in enumerate(records):
            seq, digest = record.terminal_seq, digests[index]
            earlier = prior.get(seq)
            if earlier is not None and earlier.status != "rejected":
                # taken before: the same sale again, or a sequence number used for another sale
                if _same_sale(record, digest, earlier):
                    results[index] = {"terminal_seq": seq, "status": "duplicate"}
                    if earlier.payment_id:
                        results[index]["payment_id"] = earlier.payment_id
                else:
                    results[index] = {"terminal_seq": seq, "status": "rejected", "reason": "sequence_reused"}
                continue
            if seq in in_batch:
                sale, sale_digest = in_batch[seq]
                same = _same_sale(record, digest, sale, sale_digest)
                results[index] = (
                    {"terminal_seq": seq, "status": "duplicate"}
                    if same
                    else {"terminal_seq": seq, "status": "rejected", "reason": "sequence_reused"}
                )
                continue
            in_batch[seq] = (record, digest)
            card = cards[digest]
            reason = None
            if record.currency != "CNY" or record.amount <= 0:
                reason = "invalid_amount"
            elif record.store_id not in stores:
                reason = "store_unknown"
            elif card is None:
                reason = "card_unknown"
            elif record.merchant_order_id in taken_orders:
                reason = "duplicate_order"  # one order, one sale: it never moves money twice
            if reason:
                results[index] = {"terminal_seq": seq, "status": "rejected", "reason": reason}
                continue
            assert card is not None
            taken_orders.add(record.merchant_order_id)
            if card.funding_adapter in unconfigured:
                # a school set-up error, not an answer about this sale: nothing is posted or
                # stored, and the terminal keeps the batch and sends it again later
                raise Unprocessable(
                    "provider_not_configured",
                    f"the school has no {card.funding_adapter} provider for card "
                    f"…{card.last4}; nothing in this batch was posted",
                )
            if record.occurred_at > now + self.future_skew:
                # a terminal clock ahead of time: the sale happened, but when is unknown
                results[index] = _held(seq, "occurred_in_future")
            elif record.occurred_at < now - self.max_age:
                results[index] = _held(seq, "too_old")
            elif was_lost(history[card.id], record.occurred_at):
                results[index] = _held(seq, "card_lost_before_record")
            elif offline_adapters.get(card.funding_adapter) is None:
                # e.g. a bank co-branded card: its funding source takes no offline uploads, and
                # posting it to the e-card account would charge the wrong payer
                results[index] = _held(seq, "funding_not_offline")
            else:
                to_send.append((index, record, card))
        batch_id = new_id("ob")
        stored: set[int] = set()
        failure: BadGateway | None = None
        for name in sorted({card.funding_adapter for _, _, card in to_send}):
            group = [(i, r, c) for i, r, c in to_send if c.funding_adapter == name]
            try:
                answers = await self._send(
                    offline_adapters[name], name, school_id, device_id, [(r, c) for _, r, c in group]
                )
            except BadGateway as exc:
                failure = failure or exc
                continue
            # Each provider's answers are kept at once, in their own transaction: money one
            # provider moved is recorded even if another provider of the batch fails.
            async with self.db.transaction() as session:
                for index, record, card in group:
                    results[index] = await self._posted(
                        session, school_id, device_id, record, card, answers.get(record.terminal_seq, {}), now
                    )
                    await self._store_record(
                        session, school_id, device_id, batch_id, record, digests[index], results[index], prior
                    )
                    stored.add(index)
        if failure is not None:
            # Nothing else is stored and the key is released: the retry re-sends only what no
            # provider has answered yet (the rest answers duplicate), each provider de-duplicating.
            raise failure
        async with self.db.transaction() as session:
            for index, (record, result) in enumerate(zip(records, results, strict=True)):
                on_file = result["status"] == "duplicate" or result.get("reason") == "sequence_reused"
                if index in stored or on_file:
                    continue  # stored above, or the sale on file stays as it was
                await self._store_record(
                    session, school_id, device_id, batch_id, record, digests[index], result, prior
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

    async def _posted(
        self,
        session: Any,
        school_id: str,
        device_id: str,
        record: OfflineInput,
        card: Card,
        answer: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        """The provider's answer to one sent record, as the terminal sees it."""
        status = str(answer.get("status", "")).lower()
        seq = record.terminal_seq
        if status in ("posted", "duplicate"):
            payment_id = await self._record_payment(session, school_id, device_id, record, card, answer, now)
            if payment_id is None:
                # a payment for this order appeared meanwhile (an online sale, a batch sent at
                # the same time): the money moved, so someone must look at it
                return _held(seq, "order_conflict")
            return {"terminal_seq": seq, "status": "posted", "payment_id": payment_id}
        if status == "held_for_review":
            return _held(seq, answer.get("reason") or "provider_review")
        reason = str(answer.get("reason") or "provider_rejected").lower()
        return {"terminal_seq": seq, "status": "rejected", "reason": reason}

    async def _store_record(
        self,
        session: Any,
        school_id: str,
        device_id: str,
        batch_id: str,
        record: OfflineInput,
        digest: str,
        result: dict[str, Any],
        prior: dict[int, OfflineRecord],
    ) -> None:
        """Keep the record and its answer. A record rejected before is overwritten by its
        corrected upload, so a fixed sale is charged instead of being taken for a duplicate."""
        values = {
            "batch_id": batch_id,
            "merchant_order_id": record.merchant_order_id,
            "amount": record.amount,
            "currency": record.currency,
            "card_hash": digest,
            "card_last4": record.card_no[-4:],
            "store_id": record.store_id,
            "occurred_at": record.occurred_at,
            "status": result["status"],
            "reason": result.get("reason"),
            "payment_id": result.get("payment_id"),
        }
        earlier = prior.get(record.terminal_seq)
        if earlier is not None:
            await session.execute(
                update(OfflineRecord)
                .where(OfflineRecord.id == earlier.id, OfflineRecord.status == "rejected")
                .values(**values)
            )
            return
        session.add(
            OfflineRecord(
                id=new_id("ofr"),
                school_id=school_id,
                device_id=device_id,
                terminal_seq=record.terminal_seq,
                **values,
            )
        )

    async def _send(
        self, adapter: Any, name: str, school_id: str, device_id: str, items: list[tuple[OfflineInput, Card]]
    ) -> dict[int, dict[str, Any]]:
        payload = [
            EcardOfflineRecord(
                terminal_seq=r.terminal_seq,
                order_ref=_reference(device_id, r.terminal_seq),
                card_no=r.card_no,
                amount=r.amount,
                occurred_at=r.occurred_at,
                currency=r.currency,
                store_ref=await self.providers.store_ref(school_id, name, r.store_id),
            )
            for r, _ in items
        ]
        try:
            answers = await adapter.upload_offline(device_id, payload)
        except Exception as exc:
            # Nothing is recorded: the terminal retries the batch (same key) and the e-card
            # system's own de-duplication keeps every record to one debit.
            log.warning("offline upload for %s to %s failed: %s", device_id, name, type(exc).__name__)
            raise BadGateway(
                "provider_check_failed",
                f"{name} did not confirm the upload; retry the batch with the same Idempotency-Key",
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
    ) -> str | None:
        """The posted record as a succeeded payment; None when its order id is already taken by
        a live payment (the partial unique index decides, inside a savepoint)."""
        payment = Payment(
            id=new_id("pay"),
            school_id=school_id,
            device_id=device_id,
            store_id=record.store_id,
            merchant_order_id=record.merchant_order_id,
            amount=record.amount,
            currency=record.currency,
            method="card",
            adapter=card.funding_adapter,
            student_id=card.student_id,
            card_last4=card.last4,
            status="succeeded",
            provider_reference=_reference(device_id, record.terminal_seq),
            provider_txn_id=answer.get("txn_id"),
            created_at=now,  # posted now: today's cancel window and statement
            occurred_at=record.occurred_at,  # sold then: that day's limits
            updated_at=now,
            description="offline",
        )
        try:
            async with session.begin_nested():
                session.add(payment)
        except IntegrityError:
            log.error(
                "offline record %s of %s posted (txn %s) but order %r is taken: held for review",
                record.terminal_seq,
                device_id,
                answer.get("txn_id"),
                record.merchant_order_id,
            )
            return None
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
