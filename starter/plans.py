"""Plan periods: which plan a team is on and the plan credits each period grants.

``start_period`` is the one place a period's allowance is granted, used at sign-up, by the monthly
job and by Stripe's ``invoice.paid``. The caller commits.
"""

from __future__ import annotations

from datetime import datetime

from . import catalog, credits
from .models import Team, utcnow
from .periods import period_containing


def plan_of(team: Team) -> catalog.Plan:
    return catalog.plan(team.plan_code) or catalog.FREE_PLAN


def plan_grant_key(team_id: int, period_start: datetime) -> str:
    return f"plan:{team_id}:{period_start.isoformat()}"


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
    if plan.monthly_credits <= 0:
        return None
    return credits.grant(
        team.id,
        plan.monthly_credits,
        source="plan",
        key=plan_grant_key(team.id, start),
        expires_at=None if plan.rollover else end,
        period_start=start,
        reference=reference,
        description=f"{plan.name} plan credits",
        meta={"plan": plan.code, "period_start": start.isoformat(), "period_end": end.isoformat()},
        now=now,
    )


def start_free_period(team: Team, now: datetime | None = None) -> credits.Receipt | None:
    """Grant the free allowance for the monthly period (anchored at ``team.period_anchor``) containing ``now``."""
    now = now or utcnow()
    start, end = period_containing(team.period_anchor, now)
    return start_period(team, start, end, catalog.FREE_PLAN, now=now)
