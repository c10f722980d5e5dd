"""Per-school network allow-lists: the private networks a school's own servers live in.

On-site e-card servers sit on campus LANs, so production must be able to reach private addresses,
but only where the platform admin opened them for that one school. Read at each call that meets
a private address (never cached), so narrowing a list takes effect at once in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.errors import NotFound, Unprocessable
from gateway.outbound.addresses import IPNetwork, parse_allowlist
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.db import Database
from gateway.store.models import NetworkAllowlist, School, utcnow

__all__ = ["AllowlistView", "NetworkAllowlists"]


@dataclass(frozen=True)
class AllowlistView:
    school_id: str
    cidrs: list[str]
    updated_at: datetime | None


class NetworkAllowlists:
    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db, self.keyring = db, keyring

    async def networks(self, school_id: str) -> list[IPNetwork]:
        async with self.db.transaction() as session:
            row = await session.get(NetworkAllowlist, school_id)
        return parse_allowlist(row.cidrs) if row is not None else []

    async def view(self, school_id: str) -> AllowlistView:
        async with self.db.transaction() as session:
            if await session.get(School, school_id) is None:
                raise NotFound("no such school")
            row = await session.get(NetworkAllowlist, school_id)
        if row is None:
            return AllowlistView(school_id, [], None)
        return AllowlistView(school_id, list(row.cidrs), row.updated_at)

    async def put(self, school_id: str, cidrs: list[str], actor: str) -> AllowlistView:
        try:
            networks = [str(n) for n in parse_allowlist(cidrs)]
        except ValueError as exc:
            raise Unprocessable("validation_error", f"cidrs: {exc}") from None
        async with self.db.transaction() as session:
            if await session.get(School, school_id) is None:
                raise NotFound("no such school")
            row = await session.get(NetworkAllowlist, school_id, with_for_update=True)
            if row is None:
                row = NetworkAllowlist(school_id=school_id, cidrs=networks)
                session.add(row)
            else:
                row.cidrs, row.updated_at = networks, utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="network_allowlist.updated",
                object_type="network_allowlist",
                object_id=school_id,
                data={"cidrs": networks},
            )
        return AllowlistView(school_id, networks, row.updated_at)
