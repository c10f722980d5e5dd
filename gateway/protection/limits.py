"""Guardians' spending limits (COMPLIANCE rules 6 and 15).

A student's guardians set limits per payment, per meal period, per day and per week; the
school sets defaults (for students whose guardians set none) and ceilings (no guardian limit may
exceed one, and each caps every student). They are hard caps over every method together: a
payment that would go over one fails ``limit_exceeded`` before any provider is asked, and no PIN
overrides it (the e-card's own PIN threshold, ``pin_required``, is a card rule and stays apart).

What counts is the student's money on the move: every payment that is ``processing`` (reserved
while its outcome is unknown) or ``succeeded``, less what was refunded of it. A failed payment
counts nothing, a canceled one gives all back, a refund gives back its amount once it
succeeded. Windows are the store's local meal period, day and ISO week around the sale time
(``occurred_at``: offline records count when they were sold).

Exact under concurrency: the windowed check runs inside the payment's own first write
transaction, after taking the student's row lock on PostgreSQL (SQLite's writers are serial
already, decision 0020), so of two tills spending one remaining budget at once one wins.
With no limits set anywhere nothing is read or locked beyond the limits themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.errors import NotFound, Unprocessable
from gateway.protection import audit
from gateway.protection.crypto import Keyring
from gateway.store.cache import SettingsCache
from gateway.store.db import Database
from gateway.store.models import Payment, SchoolLimitPolicy, Store, Student, StudentControls, utcnow

__all__ = [
    "KINDS",
    "LimitService",
    "Limits",
    "Spent",
    "Windows",
    "check_meal_periods",
    "effective",
    "exceeded",
    "windows",
]

KINDS = ("per_payment", "per_meal_period", "per_day", "per_week")
WINDOWED = ("per_meal_period", "per_day", "per_week")
COUNTED = ("processing", "succeeded")  # money reserved or moved; failed and canceled give back


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one student, in fen (None: no such limit)."""

    per_payment: int | None = None
    per_meal_period: int | None = None
    per_day: int | None = None
    per_week: int | None = None

    @property
    def applies(self) -> bool:
        return any(getattr(self, k) is not None for k in KINDS)

    @property
    def windowed(self) -> bool:
        return any(getattr(self, k) is not None for k in WINDOWED)

    def as_dict(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in KINDS}


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Policy:
    defaults: Limits
    ceilings: Limits


NO_POLICY = Policy(NO_LIMITS, NO_LIMITS)


def _limits(values: dict[str, Any] | None) -> Limits:
    values = values or {}
    return Limits(**{k: values.get(k) for k in KINDS})


def effective(controls: StudentControls | None, policy: Policy) -> Limits:
    """Per kind: the guardian's value, else the school's default; never above the ceiling."""
    out: dict[str, int | None] = {}
    for kind in KINDS:
        own = getattr(controls, kind) if controls is not None else None
        chosen = own if own is not None else getattr(policy.defaults, kind)
        ceiling = getattr(policy.ceilings, kind)
        if ceiling is not None:
            chosen = ceiling if chosen is None else min(chosen, ceiling)
        out[kind] = chosen
    return Limits(**out)


@dataclass(frozen=True)
class Windows:
    """The UTC bounds [start, end) of the windows around one sale."""

    meal: tuple[datetime, datetime] | None  # None: the sale is outside every meal period
    day: tuple[datetime, datetime]
    week: tuple[datetime, datetime]


def _clock(value: str) -> time | None:
    """ "HH:MM" as a time; "24:00" (the end of the day) as None."""
    if value == "24:00":
        return None
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def windows(at: datetime, store: Store) -> Windows:
    tz = ZoneInfo(store.timezone)
    local = at.astimezone(tz)
    midnight = datetime.combine(local.date(), time(), tzinfo=tz)
    day = (midnight, datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=tz))
    monday = local.date() - timedelta(days=local.weekday())
    week = (
        datetime.combine(monday, time(), tzinfo=tz),
        datetime.combine(monday + timedelta(days=7), time(), tzinfo=tz),
    )
    meal = None
    for period in store.meal_periods or ():
        start = datetime.combine(local.date(), _clock(period["start"]) or time(), tzinfo=tz)
        end_clock = _clock(period["end"])
        end = datetime.combine(local.date(), end_clock, tzinfo=tz) if end_clock else day[1]
        if start <= local < end:
            meal = (start, end)
            break
    return Windows(meal=meal, day=day, week=week)


def check_meal_periods(periods: list[dict[str, str]]) -> None:
    """A store's meal periods: each starts before it ends, none overlaps another, names unique."""
    spans = []
    for p in periods:
        start, end = p["start"], p["end"]
        if start >= end:  # "HH:MM" strings order like times, and "24:00" sorts last
            raise Unprocessable("validation_error", f"meal period {p['name']!r} must start before it ends")
        spans.append((start, end, p["name"]))
    names = [name for _, _, name in spans]
    if len(set(names)) != len(names):
        raise Unprocessable("validation_error", "meal period names must be unique within a store")
    spans.sort()
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if start < end:
            raise Unprocessable("validation_error", f"meal periods {name!r} and {other!r} overlap")


@dataclass(frozen=True)
class Spent:
    """What the student has reserved or spent in each window, in fen."""

    meal: int
    day: int
    week: int

    def as_dict(self) -> dict[str, int]:
        return {"per_meal_period": self.meal, "per_day": self.day, "per_week": self.week}


def exceeded(limits: Limits, amount: int, spent: Spent | None) -> str | None:
    """The first limit ``amount`` would go over (per payment, meal period, day, week), or None.
    ``spent`` None: only the per-payment limit is looked at."""
    if limits.per_payment is not None and amount > limits.per_payment:
        return "per_payment"
    if spent is None:
        return None
    for kind, used in (("per_meal_period", spent.meal), ("per_day", spent.day), ("per_week", spent.week)):
        cap = getattr(limits, kind)
        if cap is not None and used + amount > cap:
            return kind
    return None


@dataclass(frozen=True)
class LimitCheck:
    limits: Limits
    spent: Spent | None
    exceeded: str | None  # the kind of limit that refuses, or None

    def record(self) -> dict[str, Any]:
        """How the dry run and the payment's routing record show it."""
        return {
            "applied": self.limits.as_dict(),
            "spent": self.spent.as_dict() if self.spent is not None else None,
            "exceeded": self.exceeded,
        }


class LimitService:
    def __init__(self, db: Database, keyring: Keyring, *, clock: Callable[[], datetime]) -> None:
        self.db, self.keyring, self.clock = db, keyring, clock
        self._policies: SettingsCache[str, Policy] = SettingsCache()

    # reading, on the payment path ----------------------------------------------------------

    async def policy(self, school_id: str, session: AsyncSession | None = None) -> Policy:
        """The school's defaults and ceilings, cached up to 5 s (a change made here drops it)."""
        fresh, policy = self._policies.fresh(school_id)
        if fresh and policy is not None:
            return policy
        if session is not None:
            row = await session.get(SchoolLimitPolicy, school_id)
        else:
            async with self.db.transaction(readonly=True) as own:
                row = await own.get(SchoolLimitPolicy, school_id)
        found = NO_POLICY if row is None else Policy(_limits(row.defaults), _limits(row.ceilings))
        return self._policies.put(school_id, found)

    async def for_student(self, session: AsyncSession, school_id: str, student_id: str) -> Limits:
        """The student's limits, read in the caller's transaction (the plan's read)."""
        controls = await session.get(StudentControls, student_id)
        if controls is not None and controls.school_id != school_id:
            controls = None
        return effective(controls, await self.policy(school_id, session))

    async def spent(self, session: AsyncSession, student_id: str, w: Windows) -> Spent:
        """One SELECT: the student's counted money in each window."""
        net = Payment.amount - Payment.refunded_amount

        def within(bounds: tuple[datetime, datetime] | None) -> Any:
            if bounds is None:
                return func.coalesce(func.sum(0), 0)
            return func.coalesce(
                func.sum(
                    case(
                        ((Payment.occurred_at >= bounds[0]) & (Payment.occurred_at < bounds[1]), net), else_=0
                    )
                ),
                0,
            )

        spans = [w.day, w.week] + ([w.meal] if w.meal else [])
        row = (
            await session.execute(
                select(within(w.meal), within(w.day), within(w.week)).where(
                    Payment.student_id == student_id,
                    Payment.status.in_(COUNTED),
                    Payment.occurred_at >= min(s[0] for s in spans),
                    Payment.occurred_at < max(s[1] for s in spans),
                )
            )
        ).one()
        return Spent(meal=int(row[0]), day=int(row[1]), week=int(row[2]))

    async def check(
        self,
        session: AsyncSession,
        *,
        student_id: str,
        amount: int,
        at: datetime,
        store: Store,
        limits: Limits,
        count: bool,
    ) -> LimitCheck | None:
        """None when no limit applies. ``count``: add up the windows (the per-payment limit
        alone needs no read)."""
        if not limits.applies:
            return None
        spent = None
        if count and limits.windowed and exceeded(limits, amount, None) is None:
            spent = await self.spent(session, student_id, windows(at, store))
        return LimitCheck(limits, spent, exceeded(limits, amount, spent))

    async def enforce(
        self,
        session: AsyncSession,
        *,
        school_id: str,
        student_id: str,
        amount: int,
        at: datetime,
        store: Store,
        limits: Limits | None,
    ) -> LimitCheck | None:
        """In the payment's first write transaction: lock the student (PostgreSQL), count, and
        say which limit refuses. ``limits`` None: not read yet (a face payment learns its
        student only from the provider), so read here."""
        if limits is None:
            limits = await self.for_student(session, school_id, student_id)
        if not limits.applies:
            return None
        if limits.windowed and exceeded(limits, amount, None) is None and not self.db.is_sqlite:
            # Serialises this student's payments until commit: the next one counts this one.
            # SQLite needs nothing: its write transactions are serial (decision 0020).
            await session.execute(select(Student.id).where(Student.id == student_id).with_for_update())
        return await self.check(
            session, student_id=student_id, amount=amount, at=at, store=store, limits=limits, count=True
        )

    # the admin side --------------------------------------------------------------------------

    async def get_policy(self, school_id: str) -> dict[str, Any]:
        async with self.db.transaction(readonly=True) as session:
            row = await session.get(SchoolLimitPolicy, school_id)
        policy = NO_POLICY if row is None else Policy(_limits(row.defaults), _limits(row.ceilings))
        return {"defaults": policy.defaults.as_dict(), "ceilings": policy.ceilings.as_dict()}

    async def put_policy(
        self, school_id: str, defaults: dict[str, int | None], ceilings: dict[str, int | None], actor: str
    ) -> dict[str, Any]:
        over = [k for k in KINDS if _over(defaults.get(k), ceilings.get(k))]
        if over:
            raise Unprocessable(
                "limit_above_ceiling",
                "a school default cannot be above the school's ceiling: " + ", ".join(over),
                limits=over,
            )
        async with self.db.transaction() as session:
            row = await session.get(SchoolLimitPolicy, school_id, with_for_update=True)
            if row is None:
                row = SchoolLimitPolicy(school_id=school_id, defaults=defaults, ceilings=ceilings)
                session.add(row)
            else:
                row.defaults, row.ceilings, row.updated_at = defaults, ceilings, utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="limits.policy_updated",
                object_type="school",
                object_id=school_id,
                data={"defaults": defaults, "ceilings": ceilings},
            )
        self._policies.drop(lambda key: key == school_id)
        return {"defaults": _limits(defaults).as_dict(), "ceilings": _limits(ceilings).as_dict()}

    async def _student(self, session: AsyncSession, school_id: str, student_id: str) -> Student:
        student = (
            await session.execute(
                select(Student).where(Student.id == student_id, Student.school_id == school_id)
            )
        ).scalar_one_or_none()
        if student is None:
            raise NotFound("no such student")
        return student

    async def get_limits(self, school_id: str, student_id: str) -> dict[str, Any]:
        async with self.db.transaction(readonly=True) as session:
            await self._student(session, school_id, student_id)
            controls = await session.get(StudentControls, student_id)
            policy = await self.policy(school_id, session)
        return self._view(controls, policy)

    async def put_limits(
        self,
        school_id: str,
        student_id: str,
        values: dict[str, int | None],
        *,
        actor: str,
        on_behalf_of: str,
    ) -> dict[str, Any]:
        async with self.db.transaction() as session:
            await self._student(session, school_id, student_id)
            row = await session.get(SchoolLimitPolicy, school_id)  # fresh: a ceiling is a hard bound
            ceilings = _limits(row.ceilings if row is not None else None)
            over = [k for k in KINDS if _over(values.get(k), getattr(ceilings, k))]
            if over:
                raise Unprocessable(
                    "limit_above_ceiling",
                    "above the school's ceiling: "
                    + ", ".join(f"{k} (ceiling {getattr(ceilings, k)} fen)" for k in over),
                    limits=over,
                )
            controls = await session.get(StudentControls, student_id, with_for_update=True)
            if controls is None:
                controls = StudentControls(student_id=student_id, school_id=school_id)
                session.add(controls)
            for kind in KINDS:
                setattr(controls, kind, values.get(kind))
            controls.updated_at = utcnow()
            await audit.append(
                session,
                self.keyring,
                chain=school_id,
                actor=actor,
                action="limits.updated",
                object_type="student",
                object_id=student_id,
                data={"on_behalf_of": on_behalf_of, "limits": {k: values.get(k) for k in KINDS}},
            )
            policy = Policy(_limits(row.defaults if row is not None else None), ceilings)
        return self._view(controls, policy)

    def _view(self, controls: StudentControls | None, policy: Policy) -> dict[str, Any]:
        own = {k: getattr(controls, k) if controls is not None else None for k in KINDS}
        return {
            **own,
            "effective": effective(controls, policy).as_dict(),
            "ceilings": policy.ceilings.as_dict(),
        }


def _over(value: int | None, ceiling: int | None) -> bool:
    return value is not None and ceiling is not None and value > ceiling
