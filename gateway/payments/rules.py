"""Routing rules: the document a school stores, how a payment is matched, how a rule set is judged.

Pure: no database, no I/O. ``RoutingService`` (``gateway.payments.routing``) feeds it the school's
state (registry, configured providers, co-branded BINs) and the payment in hand.

A document is an ordered list of rules; the first rule whose conditions all hold takes the
payment and names its candidate adapters, in order. A payment no rule matches takes the default
route (card: the funding source's adapter; face: the configured face adapter), which is also
what a school with no rules at all gets. See docs/routing.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

__all__ = [
    "FUNDING_KINDS",
    "AdapterInfo",
    "BreakerPolicy",
    "Match",
    "PaymentFacts",
    "Reason",
    "Rule",
    "RuleSet",
    "SchoolFacts",
    "TimeWindow",
    "first_match",
    "funding_kind_for_card",
    "rule_mismatch",
    "strictest_code",
    "validate_rules",
]

FUNDING_KINDS = ("ecard_account", "bank_agreement", "alipay_account")
Method = Literal["card", "face"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimeWindow(_Strict):
    """Store-local wall-clock window; ``start`` > ``end`` wraps midnight. ``days`` are ISO
    weekdays (1 = Monday); omitted means every day."""

    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["11:00"])]
    end: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["13:30"])]
    days: Annotated[list[Annotated[int, Field(ge=1, le=7)]] | None, Field(max_length=7)] = None

    def contains(self, local: datetime) -> bool:
        if self.days is not None and local.isoweekday() not in self.days:
            return False
        now = local.time().replace(second=0, microsecond=0, tzinfo=None)
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start <= end:
            return start <= now < end
        return now >= start or now < end


class Rule(_Strict):
    name: Annotated[str | None, Field(max_length=80)] = None
    method: Method
    card_bins: Annotated[
        list[Annotated[str, Field(pattern=r"^[0-9]{1,10}$")]] | None,
        Field(max_length=100, description="Card number prefixes (card rules only)"),
    ] = None
    card_type: Annotated[
        Literal["campus", "co_branded"] | None,
        Field(description="campus: e-card account cards; co_branded: bank co-branded cards (by BIN)"),
    ] = None
    amount_min: Annotated[StrictInt | None, Field(ge=0, description="Inclusive, fen")] = None
    amount_max: Annotated[StrictInt | None, Field(ge=0, description="Inclusive, fen")] = None
    merchant_categories: Annotated[
        list[Annotated[str, Field(max_length=40)]] | None, Field(max_length=50)
    ] = None
    time_window: TimeWindow | None = None
    adapters: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=40)]],
        Field(max_length=10, description="Candidate adapters, tried in this order"),
    ]

    @property
    def catch_all(self) -> bool:
        """Matches every payment of its method."""
        return (
            self.card_bins is None
            and self.card_type is None
            and self.amount_min is None
            and self.amount_max is None
            and self.merchant_categories is None
            and self.time_window is None
        )

    def label(self, index: int) -> str:
        return f"rules[{index}]" + (f" ({self.name})" if self.name else "")


class BreakerPolicy(_Strict):
    failure_threshold: Annotated[int, Field(ge=1, le=1000, description="Consecutive technical failures")] = 5
    cooldown_seconds: Annotated[float, Field(ge=1, le=3600, description="Open this long, then half-open")] = (
        30.0
    )


class RuleSet(_Strict):
    rules: Annotated[list[Rule], Field(max_length=200)]
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        names = [r.name for r in self.rules if r.name]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return self


@dataclass(frozen=True)
class Reason:
    """One thing wrong with a rule set."""

    code: str  # unknown_adapter | adapter_not_configured | method_unsupported | funding_unreachable |
    #            no_adapter | non_face_required | condition_invalid
    message: str
    rule: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class AdapterInfo:
    methods: frozenset[str]
    funding: frozenset[str]
    configured: bool


@dataclass(frozen=True)
class SchoolFacts:
    """What validation needs to know about the school."""

    adapters: dict[str, AdapterInfo]  # every registered adapter
    co_branded_bins: Sequence[str] = ()
    funding_in_use: frozenset[str] = frozenset({"ecard_account"})

    @property
    def face_on(self) -> bool:
        return any("face" in a.methods and a.configured for a in self.adapters.values())


@dataclass(frozen=True)
class PaymentFacts:
    method: str
    amount: int
    merchant_category: str
    local_time: datetime
    card_bin: str | None = None  # the leading digits of the card (never stored)
    card_type: str | None = None  # campus | co_branded
    funding: str | None = None  # the payer's funding source kind


@dataclass
class Match:
    index: int | None
    rule: Rule | None
    explanations: list[dict[str, Any]] = field(default_factory=list)


def funding_kind_for_card(card_no_or_bin: str, co_branded_bins: Sequence[str]) -> str:
    return "bank_agreement" if any(card_no_or_bin.startswith(b) for b in co_branded_bins) else "ecard_account"


def rule_mismatch(rule: Rule, p: PaymentFacts) -> str | None:
    """Why ``rule`` does not take payment ``p`` (None: it does)."""
    if rule.method != p.method:
        return f"method is {p.method}, rule is for {rule.method}"
    if rule.card_bins is not None:
        if p.card_bin is None or not any(p.card_bin.startswith(b) for b in rule.card_bins):
            return "card BIN not in card_bins"
    if rule.card_type is not None and rule.card_type != p.card_type:
        return f"card type is {p.card_type}, rule wants {rule.card_type}"
    if rule.amount_min is not None and p.amount < rule.amount_min:
        return f"amount {p.amount} below amount_min {rule.amount_min}"
    if rule.amount_max is not None and p.amount > rule.amount_max:
        return f"amount {p.amount} above amount_max {rule.amount_max}"
    if rule.merchant_categories is not None and p.merchant_category not in rule.merchant_categories:
        return f"merchant category {p.merchant_category!r} not in {rule.merchant_categories}"
    if rule.time_window is not None and not rule.time_window.contains(p.local_time):
        return f"store-local time {p.local_time:%a %H:%M} outside the time window"
    return None


def first_match(rules: Sequence[Rule], p: PaymentFacts) -> Match:
    """The first rule that takes ``p``, with why every earlier rule did not."""
    match = Match(None, None)
    for i, rule in enumerate(rules):
        why = rule_mismatch(rule, p)
        match.explanations.append({"rule": i, "name": rule.name, "matched": why is None, "reason": why})
        if why is None:
            match.index, match.rule = i, rule
            return match
    return match


def _kinds_matched(rule: Rule, facts: SchoolFacts) -> set[str]:
    """The funding kinds of the cards a card rule can take."""
    if rule.card_type == "co_branded":
        return {"bank_agreement"}
    if rule.card_type == "campus":
        return {"ecard_account"}
    if rule.card_bins is not None:
        return {funding_kind_for_card(b, facts.co_branded_bins) for b in rule.card_bins}
    return set(facts.funding_in_use)


def _adapter_problems(rule: Rule, i: int, facts: SchoolFacts) -> tuple[list[Reason], list[str]]:
    reasons: list[Reason] = []
    usable: list[str] = []
    label = rule.label(i)
    for name in rule.adapters:
        info = facts.adapters.get(name)
        if info is None:
            reasons.append(Reason("unknown_adapter", f"{label}: no adapter named {name!r}", i))
        elif rule.method not in info.methods:
            reasons.append(
                Reason("method_unsupported", f"{label}: {name} does not take {rule.method} payments", i)
            )
        elif not info.configured:
            reasons.append(
                Reason("adapter_not_configured", f"{label}: {name} is not configured at this school", i)
            )
        else:
            usable.append(name)
    if len(set(rule.adapters)) != len(rule.adapters):
        reasons.append(Reason("condition_invalid", f"{label}: an adapter is listed twice", i))
    return reasons, usable


def validate_rules(ruleset: RuleSet, facts: SchoolFacts) -> list[Reason]:
    """Every reason this rule set must not be stored; empty means it is valid.

    Beyond unknown and unusable adapters: every rule must leave at least one usable adapter for
    the payments it takes (an empty card rule while face is on is COMPLIANCE rule 5,
    ``non_face_required``), and card rules must reach the funding sources of the cards they take.
    """
    reasons: list[Reason] = []
    face_on = facts.face_on
    for i, rule in enumerate(ruleset.rules):
        label = rule.label(i)
        if rule.method == "face" and (rule.card_bins is not None or rule.card_type is not None):
            reasons.append(
                Reason("condition_invalid", f"{label}: card_bins/card_type apply to card rules only", i)
            )
        if rule.amount_min is not None and rule.amount_max is not None and rule.amount_min > rule.amount_max:
            reasons.append(Reason("condition_invalid", f"{label}: amount_min is above amount_max", i))
        problems, usable = _adapter_problems(rule, i, facts)
        reasons.extend(problems)
        if not usable:
            if rule.method == "card" and face_on:
                scope = "every card payment" if rule.catch_all else "the card payments it matches"
                reasons.append(
                    Reason(
                        "non_face_required",
                        f"{label} switches card payment off for {scope} while face payment is on "
                        "(card must always remain available)",
                        i,
                    )
                )
            elif rule.method == "face" and not face_on:
                pass  # face is off anyway; the adapter reasons above say why the rule is useless
            else:
                reasons.append(
                    Reason("no_adapter", f"{label} leaves {rule.method} payments without any adapter", i)
                )
            continue
        if rule.method == "card":
            for kind in sorted(_kinds_matched(rule, facts)):
                if not any(kind in facts.adapters[name].funding for name in usable):
                    reasons.append(
                        Reason(
                            "funding_unreachable",
                            f"{label}: none of {usable} reaches {kind} funding sources, "
                            "so those cards would have no adapter",
                            i,
                        )
                    )
    return reasons


def strictest_code(reasons: Sequence[Reason]) -> str:
    """The problem code a rejected rule set is answered with."""
    return "non_face_required" if any(r.code == "non_face_required" for r in reasons) else "routing_invalid"
