"""Plan periods: which plan a team is on and the plan credits each period grants.

``start_period`` is the one place a period's allowance is granted, used at sign-up, by the monthly
job and by Stripe's ``invoice.paid``. The caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from . import catalog, credits
from .credits import plan_grant_key
from .extensions import db
from .models import CreditBlock, Team, utcnow
from .periods import period_containing


def plan_of(team: Team) -> catalog.Plan:
    return catalog.plan(team.plan_code) or catalog.FREE_PLAN


def start_period(
    team: Team,
    start: datetime,
    end: datetime,
    plan: catalog.Plan,
    *,
    reference: str | None = None,
    now: datetime | None = None,
) -> credits.Receipt | None:
    """Make [start, end) the team's current period and grant ``plan``'s allowance, expiring at ``end``.

    Idempotent per team and period: the key and the (team, plan, period start) constraint both say so.
    """
    team.current_period_start, team.current_period_end = start, end
    return grant_plan_credits(team.id, start, end, plan, reference=reference, now=now)


def grant_plan_credits(
    team_id: int,
    start: datetime,
    end: datetime,
    plan: catalog.Plan,
    *,
    reference: str | None = None,
    now: datetime | None = None,
) -> credits.Receipt | None:
    """Grant ``plan``'s monthly allowance for [start, end), once per team and start (key and constraint).

    ``start_period`` calls it for a whole period; a yearly plan calls it once a month (``starter.yearly``).
    """
    if plan.monthly_credits <= 0:
        return None
    return credits.grant(
        team_id,
        plan.monthly_credits,
        source="plan",
        key=plan_grant_key(team_id, start),
        expires_at=None if plan.rollover else end,
        period_start=start,
        reference=reference,
        description=f"{plan.name} plan credits",
        meta={"plan": plan.code, "period_start": start.isoformat(), "period_end": end.isoformat()},
        now=now,
    )


def gets_free_allowance(team: Team) -> bool:
    """The free plan's monthly credits go to one team per person: the personal team made at sign-up.

    Further teams start with none until they buy a pack or subscribe; otherwise every new team was
    another free allowance (30 teams in half a second were 3,000 free credits). The monthly rollover
    (``credits.rollover``) applies the same rule.
    """
    return team.is_personal


def monthly_allowance(team: Team) -> int:
    """The plan credits each period brings this team."""
    plan = plan_of(team)
    return 0 if plan.is_free and not gets_free_allowance(team) else plan.monthly_credits


@dataclass(frozen=True)
class Outlook:
    """What the plan credits of the current period look like, and what the period's end brings."""

    allowance: int  # what each period grants (0: none, e.g. a further team on the free plan)
    left: int  # plan credits left now
    ends_at: datetime | None  # when the period (a paid year: the year) ends
    ending: bool  # the paid plan ends then (cancelled at the period end): no reset, the free plan follows
    next_allowance: int  # what the next period grants: the free allowance after an ending plan

    @property
    def used(self) -> int:
        return max(self.allowance - self.left, 0)


def outlook(team: Team, plan_left: int) -> Outlook:
    """``plan_left`` is the balance's plan credits (``credits.balance(team.id).plan``)."""
    allowance = monthly_allowance(team)
    ending = bool(team.cancel_at_period_end and team.is_paying)
    # An ending plan drops to the free plan, whose allowance goes to personal teams only.
    free_next = catalog.FREE_PLAN.monthly_credits if gets_free_allowance(team) else 0
    following = free_next if ending else allowance
    return Outlook(allowance, plan_left, team.current_period_end, ending, following)


def start_free_period(team: Team, now: datetime | None = None) -> credits.Receipt | None:
    """Start the monthly free period (anchored at ``team.period_anchor``) containing ``now``.

    Grants the free allowance for it if the team gets one (``gets_free_allowance``), else only moves
    the period on.
    """
    now = now or utcnow()
    start, end = period_containing(team.period_anchor, now)
    if not gets_free_allowance(team):
        team.current_period_start, team.current_period_end = start, end
        return None
    return start_period(team, start, end, catalog.FREE_PLAN, now=now)


def flag_lapsed_paid_periods(now: datetime, *, grace: timedelta, limit: int = 500) -> int:
    """Mark past-due up to ``limit`` active/trialing paid teams whose period ended over ``grace`` ago.

    Paid periods start only with Stripe's ``invoice.paid``; a team still in an ended period after the
    grace has not paid (or its webhook is lost). Returns how many were flagged; the caller commits
    and calls again while it returns ``limit``.
    """
    lapsed = (
        select(Team.id)
        .where(
            Team.plan_code != catalog.FREE_PLAN.code,
            Team.current_period_end <= now - grace,
            Team.subscription_status.in_(("active", "trialing")),
            Team.cancel_at_period_end.is_(False),  # ending, not unpaid: Stripe's deletion moves it to free
        )
        .order_by(Team.id)
        .limit(limit)
    )
    result = db.session.execute(
        update(Team)
        .where(Team.id.in_(lapsed))
        .values(subscription_status="past_due")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def roll_over_team(team_id: int, now: datetime) -> credits.RolloverResult:
    """The per-team reference of the monthly job: ``expire_block`` on each due block, then ``start_free_period``.

    ``credits.roll_over_free_teams`` writes the same rows in bulk; tests and the benchmark compare the two.
    """
    result = credits.RolloverResult()
    team = db.session.get(Team, team_id, with_for_update=True, populate_existing=True)
    if team is None or team.plan_code != catalog.FREE_PLAN.code:
        return result
    if team.current_period_end is None or team.current_period_end > now:
        return result
    due = db.session.scalars(
        select(CreditBlock.id)
        .where(CreditBlock.team_id == team_id, CreditBlock.expired_at.is_(None), CreditBlock.expires_at <= now)
        .order_by(CreditBlock.expires_at, CreditBlock.id)
    ).all()
    for block_id in due:
        receipt = credits.expire_block(team_id, block_id, now=now)
        result.blocks_expired += 1
        result.credits_expired -= receipt.amount if receipt else 0
    receipt = start_free_period(team, now)
    result.teams = 1
    if receipt is not None and not receipt.replayed:
        result.grants, result.credits_granted = 1, receipt.amount
    return result
