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
from gateway.payments.rules import (
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
from gateway.protection.limits import LimitCheck, Limits, LimitService
from gateway.store.cache import SettingsCache
from gateway.store.db import Database
from gateway.store.models import Card, FundingSource, RoutingConfig, Store, utcnow
from gateway.tenancy.funding import FundingService, Payer, is_co_branded
from gateway.tenancy.providers import ProviderSettings
from gateway.tenancy.service import card_fingerprint

__all__ = ["Decision", "Plan", "RoutingService", "StoredRules", "unrouted_failure"]


def unrouted_failure(decision: Decision) -> str:
    """Why a payment with no usable candidate fails, for the payment and its dry run alike."""
    if decision.method == "face" and not decision.candidates and not decision.skipped:
        return "method_unavailable"  # no face provider at this school at all
    if any(s["reason"].startswith("breaker open") for s in decision.skipped):
        return "provider_unavailable"  # nothing was sent anywhere
    if decision.default_route:
        return "provider_not_configured"
    return "no_route"


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


@dataclass
class Plan:
    card: Card | None
    payer: Payer | None
    decision: Decision
    # the refusal that ends the payment before routing: the card's own (unknown, lost, funding
    # gone), or a guardian's limit
    refusal: str | None
    # the payer's limits, read with the card (None: the payer is not known yet -- a face
    # payment learns its student from the provider -- so the payment reads them itself)
    limits: Limits | None = None
    limit_check: LimitCheck | None = None  # what the limits said here (per payment; counted in a dry run)
    student: str | None = None

    @property
    def student_id(self) -> str | None:
        return self.card.student_id if self.card is not None else self.student


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
        limits: LimitService,
    ) -> None:
        self.db, self.keyring, self.registry, self.funding = db, keyring, registry, funding
        self.limits = limits
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

    async def plan(
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
        student_id: str | None = None,
        count: bool = False,
    ) -> Plan:
        """What a payment would do before any provider is asked: its card and payer, the funding
        source, the payer's limits, the route, and the refusal that ends it here if there is
        one. A payment is made by this plan and the dry run shows it, so the two cannot
        disagree. Breakers are looked at here; taking a half-open trial is the payment's own
        step (``take_candidate``).

        ``student_id``: the payer of a face dry run (a real face payment learns it from the
        provider). ``count``: add up the limits' windows here too (the dry run); a payment
        counts in its own write transaction instead, where the count is exact."""
        configured = await self.providers.configured(school_id)
        card: Card | None = None
        payer: Payer | None = None
        limits: Limits | None = None
        check: LimitCheck | None = None
        funding = card_type = refusal = None
        default: list[str] = []
        if method == "card":
            if card_no is not None:
                # the card, its payer and the payer's limits: one read
                async with self.db.transaction(readonly=True) as session:
                    digest = card_fingerprint(self.keyring, school_id, card_no)
                    card = (
                        await session.execute(
                            select(Card).where(Card.school_id == school_id, Card.card_hash == digest)
                        )
                    ).scalar_one_or_none()
                    if card is not None and card.status != "lost":
                        payer = await self.funding.payer(
                            school_id, card.funding_source_id, card.funding_adapter, session=session
                        )
                        limits = await self.limits.for_student(session, school_id, card.student_id)
                        check = await self.limits.check(
                            session,
                            student_id=card.student_id,
                            amount=amount,
                            at=at,
                            store=store,
                            limits=limits,
                            count=count,
                        )
            if card is not None:
                if card.status == "lost":
                    refusal = "card_reported_lost"  # COMPLIANCE rule 19: no provider is asked
                elif payer is None:
                    refusal = "funding_source_inactive"
                else:
                    funding, default = payer.kind, [payer.adapter]
            else:
                if card_no is not None:
                    refusal = "card_unknown"
                digits = card_no or bin_prefix or ""
                funding = (
                    "bank_agreement"
                    if is_co_branded(digits, await self.funding.card_bins(school_id))
                    else "ecard_account"
                )
                default = self._configured_for("card", configured, funding)
            card_type = "co_branded" if funding == "bank_agreement" else "campus"
        else:
            default = self._configured_for("face", configured, None)
            if student_id is not None:
                async with self.db.transaction(readonly=True) as session:
                    limits = await self.limits.for_student(session, school_id, student_id)
                    check = await self.limits.check(
                        session,
                        student_id=student_id,
                        amount=amount,
                        at=at,
                        store=store,
                        limits=limits,
                        count=count,
                    )
        if refusal is None and check is not None and check.exceeded is not None:
            refusal = "limit_exceeded"  # COMPLIANCE rule 15: every method, before any provider
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
        return Plan(
            card=card,
            payer=payer,
            decision=decision,
            refusal=refusal,
            limits=limits,
            limit_check=check,
            student=student_id,
        )

    async def take_candidate(self, school_id: str, decision: Decision, start: int) -> str | None:
        """The first candidate from ``start`` on whose breaker lets a new payment through (taking
        the half-open trial if that is what it is); refused ones are recorded as skipped."""
        for name in decision.candidates[start:]:
            if await self.breaker.allow(school_id, name, decision.policy):
                return name
            decision.skipped.append({"adapter": name, "reason": "breaker open: not called"})
        return None

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
        student_id: str | None = None,
    ) -> dict[str, Any]:
        """Which adapter would take this payment, the candidates in order, and why each was kept
        or skipped: the payment's own plan, with the payer's limits counted. Breakers are looked
        at, never tripped or trialled."""
        plan = await self.plan(
            school_id,
            method=method,
            amount=amount,
            currency=currency,
            store=store,
            at=at,
            card_no=card_no,
            bin_prefix=bin_prefix,
            student_id=student_id,
            count=True,
        )
        decision = plan.decision
        adapter = decision.candidates[0] if decision.candidates else None
        refusal = plan.refusal
        if refusal is None and adapter is None:
            refusal = unrouted_failure(decision)
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
            "funding": decision.funding,
            "version": decision.version,
            "would_fail_with": refusal,
            "limits": plan.limit_check.record() if plan.limit_check is not None else None,
        }

    async def breakers(self, school_id: str) -> dict[str, str]:
        stored = await self.get(school_id)
        policy = stored.ruleset.breaker if stored.ruleset else BreakerPolicy()
        configured = await self.providers.configured(school_id)
        return {name: await self.breaker.peek(school_id, name, policy) for name in sorted(configured)}

    def _configured_for(self, method: str, configured: set[str], funding: str | None) -> list[str]:
        """The default route: every adapter this school configured that takes ``method`` (and
        reaches ``funding``), registered order."""
        return [
            n
            for n in self._known(configured)
            if n in configured
            and method in self.registry.capabilities(n).methods
            and (funding is None or funding in self.registry.capabilities(n).funding)
        ]

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
