"""RoutingService: a school's rule set (stored, versioned, validated on write) and the decision
"which adapters, in which order, may take this payment -- and why".

The decision is made once per payment, before anything is committed, and recorded on the
payment (``payments.routing``) and in its audit entry. Candidates are filtered by what the
adapter can do (method, currency, amount limits), whether the school configured it, whether it
reaches the payer's funding source, and its circuit breaker. See docs/routing.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from adapters.registry import AdapterRegistry
from gateway.errors import Unprocessable
from gateway.payments.breaker import Breaker
from gateway.payments.routing import (
    AdapterInfo,
    BreakerPolicy,
    PaymentFacts,
    Reason,
    RuleSet,
    SchoolFacts,
    first_match,
    strictest_code,
    validate_rules,
)
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.cache import SettingsCache
from gateway.store.db import Database
from gateway.store.models import Card, FundingSource, RoutingConfig, Store, utcnow
from gateway.tenancy.funding import FundingService, is_co_branded
from gateway.tenancy.providers import ProviderSettings

__all__ = ["Decision", "RoutingService", "StoredRules"]


@dataclass(frozen=True)
class StoredRules:
    ruleset: RuleSet | None
    version: int
    updated_at: datetime | None


@dataclass
class Decision:
    method: str
    funding: str | None
    version: int
    rule: int | None = None
    rule_name: str | None = None
    default_route: bool = False
    candidates: list[str] = field(default_factory=list)  # usable, in order
    skipped: list[dict[str, str]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    breaker: dict[str, str] = field(default_factory=dict)
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)

    @property
    def reason(self) -> str:
        if self.default_route:
            return (
                "default route (no rules configured)"
                if not self.version
                else "no rule matched: default route"
            )
        return f"rule {self.rule}" + (f" ({self.rule_name})" if self.rule_name else "")

    def record(self) -> dict[str, Any]:
        """What is stored on the payment and in its audit entry."""
        return {
            "version": self.version,
            "rule": self.rule,
            "rule_name": self.rule_name,
            "reason": self.reason,
            "funding": self.funding,
            "candidates": list(self.candidates),
            "skipped": list(self.skipped),
            "chosen": None,
            "attempts": [],
        }


class RoutingService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        registry: AdapterRegistry,
        funding: FundingService,
        breaker: Breaker,
        clock: Callable[[], datetime],
        providers: ProviderSettings,
    ) -> None:
        self.db, self.keyring, self.registry, self.funding = db, keyring, registry, funding
        self.providers = providers
        self.breaker, self.clock = breaker, clock
        self._rules: SettingsCache[str, StoredRules] = SettingsCache()

    # the stored rule set ----------------------------------------------------------------

    async def get(self, school_id: str) -> StoredRules:
        """The school's rule set, cached up to 5 s (a change made here drops it at once)."""
        fresh, stored = self._rules.fresh(school_id)
        if fresh and stored is not None:
            return stored
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(RoutingConfig, school_id)
        if row is None:
            return self._rules.put(school_id, StoredRules(None, 0, None))
        return self._rules.put(
            school_id, StoredRules(RuleSet.model_validate(row.document), row.version, row.updated_at)
        )

    async def facts(self, school_id: str) -> SchoolFacts:
        configured = await self.providers.configured(school_id)
        async with self.db.transaction(readonly=True) as session:
            bank_sources = await session.scalar(
                select(FundingSource.id)
                .where(FundingSource.school_id == school_id, FundingSource.kind == "bank_agreement")
                .limit(1)
            )
        bins = await self.funding.card_bins(school_id)
        adapters = {
            name: AdapterInfo(
                methods=self.registry.capabilities(name).methods,
                funding=self.registry.capabilities(name).funding,
                configured=name in configured,
            )
            for name in self._known(configured)
        }
        in_use = {"ecard_account"} | ({"bank_agreement"} if bins or bank_sources else set())
        return SchoolFacts(adapters=adapters, co_branded_bins=bins, funding_in_use=frozenset(in_use))

    async def validate(self, school_id: str, ruleset: RuleSet) -> list[Reason]:
        return validate_rules(ruleset, await self.facts(school_id))

    async def put(self, school_id: str, ruleset: RuleSet, actor: str) -> StoredRules:
        reasons = await self.validate(school_id, ruleset)
        if reasons:
            raise Unprocessable(
                strictest_code(reasons),
                "; ".join(r.message for r in reasons),
                reasons=[r.as_dict() for r in reasons],
            )
        document = ruleset.model_dump(mode="json", exclude_none=True)
        async with self.db.transaction() as session:
            row = await session.get(RoutingConfig, school_id, with_for_update=True)
            if row is None:
                row = RoutingConfig(school_id=school_id, document=document, version=1, updated_at=utcnow())
                session.add(row)
            else:
                row.document, row.version, row.updated_at = document, row.version + 1, utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="routing.updated",
                object_type="school",
                object_id=school_id,
                data={"version": row.version, "rules": len(ruleset.rules)},
            )
        self._rules.drop(lambda key: key == school_id)
        return StoredRules(ruleset, row.version, row.updated_at)

    async def delete(self, school_id: str, actor: str) -> None:
        async with self.db.transaction() as session:
            row = await session.get(RoutingConfig, school_id, with_for_update=True)
            if row is None:
                return
            await session.delete(row)
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="routing.deleted",
                object_type="school",
                object_id=school_id,
                data={"version": row.version},
            )
        self._rules.drop(lambda key: key == school_id)

    # the decision ------------------------------------------------------------------------

    async def decide(
        self,
        school_id: str,
        *,
        method: str,
        amount: int,
        currency: str,
        store: Store,
        at: datetime,
        default: list[str],
        card_bin: str | None = None,
        card_type: str | None = None,
        funding: str | None = None,
    ) -> Decision:
        """Candidates for a new payment, in order, with the reason for every one left out.

        Breakers are only *looked at* here (``peek``); the payment flow takes a half-open trial
        with ``allow`` right before it commits an attempt."""
        stored = await self.get(school_id)
        policy = stored.ruleset.breaker if stored.ruleset else BreakerPolicy()
        decision = Decision(method=method, funding=funding, version=stored.version, policy=policy)
        names = default
        if stored.ruleset is not None:
            facts = PaymentFacts(
                method=method,
                amount=amount,
                merchant_category=store.merchant_category,
                local_time=at.astimezone(ZoneInfo(store.timezone)),
                card_bin=card_bin,
                card_type=card_type,
                funding=funding,
            )
            match = first_match(stored.ruleset.rules, facts)
            decision.rules = match.explanations
            if match.rule is not None:
                decision.rule, decision.rule_name = match.index, match.rule.name
                names = list(match.rule.adapters)
        decision.default_route = decision.rule is None
        configured = await self.providers.configured(school_id)
        for name in names:
            why = self._unusable(name, method, amount, currency, funding, configured)
            if why is None:
                state = await self.breaker.peek(school_id, name, policy)
                decision.breaker[name] = state
                if state == "open":
                    why = "breaker open: not called"
            if why is None:
                decision.candidates.append(name)
            else:
                decision.skipped.append({"adapter": name, "reason": why})
        return decision

    async def dry_run(
        self,
        school_id: str,
        *,
        method: str,
        amount: int,
        currency: str,
        store: Store,
        at: datetime,
        card_no: str | None = None,
        bin_prefix: str | None = None,
    ) -> dict[str, Any]:
        """Which adapter would take this payment, the candidates in order, and why each was kept
        or skipped. Breakers are looked at, never tripped or trialled."""
        funding = card_type = None
        refusal = None
        default: list[str] = []
        configured = await self.providers.configured(school_id)
        async with self.db.transaction(readonly=True) as session:
            card = None
            if card_no is not None:
                digest = self.keyring.keyed_hash("card", f"{school_id}:{card_no}")
                card = (
                    await session.execute(
                        select(Card).where(Card.school_id == school_id, Card.card_hash == digest)
                    )
                ).scalar_one_or_none()
        if method == "card":
            digits = card_no or bin_prefix or ""
            if card is not None:
                payer = await self.funding.payer(school_id, card.funding_source_id, card.funding_adapter)
                if card.status == "lost":
                    refusal = "card_reported_lost"
                if payer is None:
                    refusal = "funding_source_inactive"
                else:
                    funding, default = payer.kind, [payer.adapter]
            else:
                if card_no is not None:
                    refusal = "card_unknown"
                funding = (
                    "bank_agreement"
                    if is_co_branded(digits, await self.funding.card_bins(school_id))
                    else "ecard_account"
                )
                default = [
                    n
                    for n in self._known(configured)
                    if n in configured
                    and "card" in self.registry.capabilities(n).methods
                    and funding in self.registry.capabilities(n).funding
                ]
            card_type = "co_branded" if funding == "bank_agreement" else "campus"
        else:
            default = [
                n
                for n in self._known(configured)
                if n in configured and "face" in self.registry.capabilities(n).methods
            ]
        decision = await self.decide(
            school_id,
            method=method,
            amount=amount,
            currency=currency,
            store=store,
            at=at,
            default=default,
            card_bin=card_no or bin_prefix,
            card_type=card_type,
            funding=funding,
        )
        adapter = decision.candidates[0] if decision.candidates else None
        if refusal is None and adapter is None:
            refusal = (
                "provider_unavailable"
                if decision.breaker and "open" in decision.breaker.values()
                else ("provider_not_configured" if decision.default_route else "no_route")
            )
        return {
            "adapter": adapter,
            "candidates": decision.candidates,
            "skipped": decision.skipped,
            "rule": decision.rule,
            "rule_name": decision.rule_name,
            "reason": decision.reason,
            "default_route": decision.default_route,
            "rules": decision.rules,
            "breakers": decision.breaker,
            "funding": funding,
            "version": decision.version,
            "would_fail_with": refusal,
        }

    async def breakers(self, school_id: str) -> dict[str, str]:
        stored = await self.get(school_id)
        policy = stored.ruleset.breaker if stored.ruleset else BreakerPolicy()
        configured = await self.providers.configured(school_id)
        return {name: await self.breaker.peek(school_id, name, policy) for name in sorted(configured)}

    def _known(self, configured: set[str]) -> list[str]:
        """Every registered adapter, and the instances (``ecard.backup``) this school configured."""
        return sorted(set(self.registry) | {n for n in configured if n in self.registry})

    def _unusable(
        self, name: str, method: str, amount: int, currency: str, funding: str | None, configured: set[str]
    ) -> str | None:
        if name not in self.registry:
            return "no such adapter"
        caps = self.registry.capabilities(name)
        if method not in caps.methods:
            return f"does not take {method} payments"
        if name not in configured:
            return "not configured at this school"
        if currency not in caps.currencies:
            return f"does not take {currency}"
        if not caps.min_amount <= amount <= caps.max_amount:
            return f"amount outside {caps.min_amount}..{caps.max_amount}"
        if funding is not None and funding not in caps.funding:
            return f"does not reach the payer's funding source ({funding})"
        return None
