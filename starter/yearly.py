"""Yearly plans: paid once a year, their credits granted one month at a time.

A yearly subscription's ``invoice.paid`` records the paid year (``PaidYear``, one per invoice)
and grants the month containing now; the scheduler grants each later month when it begins
(``grant_due_months``), each month's credits expiring at that month's end. Months run from the
year's start day, clamped to short months (31 Jan → 28/29 Feb → 31 Mar), like every period here.

Exactly once per team and month: the month's grant carries the plan-grant key of its start and the
(team, source, period start) constraint backs it, whoever grants it (webhook or scheduler, two
schedulers at once). After downtime only the month containing now is granted: missed months are
not stacked, and the old month's credits expire at their time as always.

A refund of the year's invoice claws back what is left of its months' credits and stops the drip
(``refund_year``); a new period (a switch or an upgrade) or the end of the subscription stops it too
(docs/billing.md, "Yearly plans"). Every function flushes; the caller commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from . import catalog, credits, plans
from .extensions import db
from .models import CreditBlock, PaidYear, Team, utcnow
from .periods import period_containing

log = logging.getLogger(__name__)


def month_of(year: PaidYear, now: datetime) -> tuple[datetime, datetime] | None:
    """The credit month of ``year`` containing ``now`` ([start, end)), or None outside the year."""
    if now < year.starts_at or now >= year.ends_at:
        return None
    start, end = period_containing(year.starts_at, now)
    return start, min(end, year.ends_at)


def record_year(
    team: Team, *, invoice_id: str, subscription_id: str, plan: catalog.Plan, start: datetime, end: datetime
) -> PaidYear:
    """The paid year of ``invoice_id`` (created on its first ``invoice.paid``, found on a replay).

    Any other running year of the team stops: a new paid period replaces it (an upgrade, a switch).
    """
    year = db.session.scalar(select(PaidYear).where(PaidYear.stripe_invoice_id == invoice_id))
    if year is None:
        year = PaidYear(
            team_id=team.id,
            stripe_subscription_id=subscription_id,
            stripe_invoice_id=invoice_id,
            plan_code=plan.code,
            starts_at=start,
            ends_at=end,
            next_grant_at=start,
            months_granted=0,
        )
        db.session.add(year)
        db.session.flush()
    stop_years(team.id, "replaced by a new paid period", except_id=year.id)
    return year


def grant_month(team: Team, year: PaidYear, now: datetime) -> credits.Receipt | None:
    """Grant the credits of ``year``'s month containing ``now``, once; moves the year's next grant on."""
    month = month_of(year, now)
    if month is None:
        year.next_grant_at = None  # the year is over: its renewal invoice starts the next one
        return None
    start, end = month
    plan = catalog.plan(year.plan_code) or catalog.FREE_PLAN
    # The months before end at their own time; ending them here too keeps one month live after a switch.
    with credits.one_change(team.id):  # last month's credits end as this month's arrive: no "ran out" between
        for block_id in db.session.scalars(
            select(CreditBlock.id).where(
                CreditBlock.team_id == team.id,
                CreditBlock.source == "plan",
                CreditBlock.expired_at.is_(None),
                CreditBlock.period_start != start,
                CreditBlock.expires_at <= start,
            )
        ).all():
            credits.expire_block(team.id, block_id, now=now)
        receipt = plans.grant_plan_credits(team.id, start, end, plan, reference=year.stripe_invoice_id, now=now)
    if receipt is not None and not receipt.replayed:
        year.months_granted += 1
    year.next_grant_at = end if end < year.ends_at else None
    return receipt


def stop_years(team_id: int, reason: str, *, except_id: int | None = None, now: datetime | None = None) -> int:
    """Stop the team's running paid years (no more monthly grants); returns how many."""
    query = select(PaidYear).where(PaidYear.team_id == team_id, PaidYear.stopped_at.is_(None))
    if except_id is not None:
        query = query.where(PaidYear.id != except_id)
    stopped = 0
    for year in db.session.scalars(query):
        year.stopped_at, year.stopped_reason, year.next_grant_at = now or utcnow(), reason[:64], None
        stopped += 1
    db.session.flush()
    return stopped


def current_year(team_id: int) -> PaidYear | None:
    """The team's running paid year, if it is on a yearly plan."""
    return db.session.scalar(
        select(PaidYear)
        .where(PaidYear.team_id == team_id, PaidYear.stopped_at.is_(None))
        .order_by(PaidYear.starts_at.desc(), PaidYear.id.desc())
        .limit(1)
    )


def due_year_ids(now: datetime, *, after: int = 0, limit: int = 500) -> list[int]:
    """Ids (> ``after``, ascending, at most ``limit``) of running paid years whose next month has begun."""
    return list(
        db.session.scalars(
            select(PaidYear.id)
            .where(PaidYear.stopped_at.is_(None), PaidYear.next_grant_at <= now, PaidYear.id > after)
            .order_by(PaidYear.id)
            .limit(limit)
        )
    )


def grant_due_months(year_ids: Sequence[int], now: datetime) -> credits.RolloverResult:
    """Grant the current month of each still-due year of ``year_ids``; one team at a time, in id order.

    Locks the team row, then the year (the order ``invoice.paid`` takes them: team, then ledger), and
    checks again that the year is due: a year another run or a webhook just moved on is left alone.
    """
    result = credits.RolloverResult()
    rows = db.session.execute(
        select(PaidYear.id, PaidYear.team_id).where(PaidYear.id.in_(list(year_ids))).order_by(PaidYear.id)
    ).all()
    for year_id, team_id in rows:
        team = db.session.get(Team, team_id, with_for_update=True, populate_existing=True)
        year = db.session.get(PaidYear, year_id, with_for_update=True, populate_existing=True)
        if team is None or year is None or year.stopped_at is not None:
            continue
        if year.next_grant_at is None or year.next_grant_at > now:
            continue
        if team.stripe_subscription_id != year.stripe_subscription_id:
            stop_years(team.id, "the subscription changed", now=now)
            continue
        receipt = grant_month(team, year, now)
        result.teams += 1
        if receipt is not None and not receipt.replayed:
            result.grants += 1
            result.credits_granted += receipt.amount
    return result


def refund_year(team: Team, invoice_id: str, *, key: str, now: datetime | None = None) -> int | None:
    """A refund of a yearly invoice: stop its drip and claw back what is left of its months' credits.

    Returns the credits taken back, or None when ``invoice_id`` is not a paid year's invoice.
    Idempotent on ``key`` (the refund's charge): a repeat takes nothing more.
    """
    year = db.session.scalar(
        select(PaidYear).where(PaidYear.stripe_invoice_id == invoice_id, PaidYear.team_id == team.id)
    )
    if year is None:
        return None
    now = now or utcnow()
    if year.stopped_at is None or year.stopped_reason != "refunded":
        year.stopped_at, year.stopped_reason, year.next_grant_at = now, "refunded", None
    left = db.session.scalar(
        select(db.func.coalesce(db.func.sum(CreditBlock.remaining), 0)).where(
            CreditBlock.team_id == team.id, CreditBlock.reference == invoice_id, CreditBlock.expired_at.is_(None)
        )
    )
    if not left:
        return 0
    receipt = credits.clawback(
        team.id,
        invoice_id,
        int(left),
        key=f"{key}:{left}",
        actor=credits.Actor("stripe"),
        description="Yearly plan refunded: its credits taken back",
        meta={"paid_year": year.id},
        now=now,
    )
    log.info("Team %s: yearly invoice %s refunded; %s credits taken back", team.id, invoice_id, -receipt.amount)
    return -receipt.amount
