"""A school's audit chain as a service: reading, verifying, and the sealer (decision 0021).

Every gateway process runs the sealer: a pass every ``interval`` chains what ``append`` wrote
since the last one. Several processes on one PostgreSQL database share the work chain by chain
(``SKIP LOCKED`` on the heads); on SQLite there is one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import AuditEntry

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        clock: Callable[[], datetime],
        interval: float,
        seal_deadline: float,
        batch: int = 500,
        chains_per_pass: int = 200,
    ) -> None:
        self.db, self.keyring, self.clock = db, keyring, clock
        self.interval, self.seal_deadline = interval, timedelta(seconds=seal_deadline)
        self.batch, self.chains_per_pass = batch, chains_per_pass
        self._task: asyncio.Task[None] | None = None

    async def seal(self, chain: str | None = None, *, wait: bool = True) -> int:
        """Chain what has committed and is not sealed yet (of ``chain``, or of every chain);
        the number of entries sealed. ``wait``: also the chains another process is sealing
        right now, once it is done (the background passes skip them)."""
        total = 0
        while True:
            async with self.db.transaction(readonly=True) as session:
                chains = await audit.pending_chains(session, self.chains_per_pass, chain)
            if not chains:
                return total
            async with self.db.transaction() as session:
                sealed = await audit.seal(session, self.keyring, chains, wait=wait, limit=self.batch)
            total += sealed
            more_chains = chain is None and len(chains) == self.chains_per_pass
            if sealed == 0 or (sealed < self.batch and not more_chains):
                return total

    async def read(self, chain: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Sealed entries after ``after_seq`` in chain order, then, while the page has room,
        the entries not sealed yet in the order they will be sealed (``seq`` and ``hash``
        null): a change shows in the log as soon as it has committed."""
        async with self.db.transaction(readonly=True) as session:
            # sealed first: an entry sealed between the two reads is then on the next page
            # (its seq is above every seq read here), never on this one twice
            rows = list(
                (
                    await session.execute(
                        select(AuditEntry)
                        .where(AuditEntry.chain == chain, AuditEntry.seq > after_seq)
                        .order_by(AuditEntry.seq)
                        .limit(limit)
                    )
                ).scalars()
            )
            if len(rows) < limit:
                rows += (
                    await session.execute(
                        select(AuditEntry)
                        .where(AuditEntry.chain == chain, AuditEntry.seq.is_(None))
                        .order_by(AuditEntry.id)
                        .limit(limit - len(rows))
                    )
                ).scalars()
        return [
            {
                "seq": e.seq,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "object_type": e.object_type,
                "object_id": e.object_id,
                "data": e.data,
                "hash": e.hash,
            }
            for e in rows
        ]

    async def verify(self, chain: str, known_head: tuple[int, str] | None = None) -> dict[str, Any]:
        """``{"intact", "first_break", "head", "unsealed"}``; ``head`` is what to keep and pass
        back later as ``known_head`` (admin-api.md, "Audit log")."""
        async with self.db.transaction(readonly=True) as session:
            state = await audit.verify_chain(
                session,
                self.keyring,
                chain,
                now=self.clock(),
                seal_deadline=self.seal_deadline,
                known_head=known_head,
            )
        broken = state.broken
        return {
            "intact": broken is None,
            "first_break": None if broken is None else {"seq": broken.seq, "reason": broken.reason},
            "head": {"seq": state.head_seq, "hash": state.head_hash},
            "unsealed": state.unsealed,
        }

    async def _loop(self) -> None:
        while True:
            try:
                await self.seal(wait=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sealing the audit log failed; will retry")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="campuspay-audit-sealer")

    async def stop(self) -> None:
        """Stop the background passes, then seal what this process committed last."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        try:
            await self.seal(wait=False)
        except Exception:  # the next process to start seals it
            log.warning("final audit seal at shutdown failed", exc_info=True)
