"""Metered overage in the ledger: credits granted on demand when a spend or hold does not fit.

A team that opted in (``OverageSetting.enabled``) on a plan with overage, whose subscription carries
the metered price, can go past its credits up to its monthly cap. The spend never makes the balance
negative: under the team's balance-row lock it first grants an **overage block** of exactly the
shortfall (entry kind ``overage``, block source ``overage``, never expiring), then draws as usual,
so ``verify`` sees an ordinary block and the balance stays exact. The same transaction writes an
``overage_usage`` row, the outbox the scheduler reports to Stripe's Billing Meter afterwards.

Only the refused path gets here: a spend that fits costs nothing extra. The settings row is read
after the balance lock, so concurrent spends of one team see each other's overage and the cap holds.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import insert, select, update

from .. import catalog
from ..extensions import db
from ..models import OverageSetting, OverageUsage, Team
from .core import Locked, blocks_t, fingerprint_of, write
from .rules import Actor, InsufficientCredits, OverageCapReached

settings_t = OverageSetting.__table__
usage_t = OverageUsage.__table__
teams_t = Team.__table__
BILLABLE_STATUSES = ("active", "trialing")  # past due: refused, fail closed


def overage_key(key: str) -> str:
    """The overage grant's idempotency key, derived from (and as unique per team as) the spend's."""
    return "overage:" + hashlib.sha256(key.encode()).hexdigest()


def cover_shortfall(
    team_id: int,
    before: Locked,
    *,
    required: int,
    available: int,
    key: str,
    actor: Actor,
    now: datetime,
) -> Locked:
    """Grant the ``required - available`` credits missing as overage, or raise ``InsufficientCredits``.

    Expects the team's balance row locked (``core.lock``); returns the lock's reading moved by the grant.
    Raises ``OverageCapReached`` when the team's cap for this period would be passed.
    """
    row = db.session.execute(
        select(
            settings_t.c.enabled,
            settings_t.c.cap_credits,
            settings_t.c.used_credits,
            settings_t.c.period_start,
            settings_t.c.subscription_item_id,
            teams_t.c.plan_code,
            teams_t.c.stripe_customer_id,
            teams_t.c.subscription_status,
            teams_t.c.current_period_start,
        )
        .join(teams_t, teams_t.c.id == settings_t.c.team_id)
        .where(settings_t.c.team_id == team_id)
    ).one_or_none()
    plan = catalog.plan(row.plan_code) if row is not None else None
    if (
        row is None
        or not row.enabled
        or plan is None
        or not plan.has_overage
        or not row.subscription_item_id
        or not row.stripe_customer_id
        or row.subscription_status not in BILLABLE_STATUSES
    ):
        raise InsufficientCredits(required, available)
    shortfall = required - available
    used = row.used_credits if row.period_start == row.current_period_start else 0
    if used + shortfall > row.cap_credits:
        raise OverageCapReached(required, available, cap=row.cap_credits, used=used)
    block_id = db.session.execute(
        insert(blocks_t)
        .values(
            team_id=team_id,
            source="overage",
            amount=shortfall,
            remaining=0,
            held=0,
            expires_at=None,
            reference=f"overage:{row.current_period_start.isoformat() if row.current_period_start else 'none'}",
            created_at=now,
        )
        .returning(blocks_t.c.id)
    ).scalar_one()
    receipt = write(
        team_id,
        "overage",
        before=before,
        changes=[(block_id, shortfall, 0)],
        key=overage_key(key),
        fingerprint=fingerprint_of("overage", amount=shortfall),
        now=now,
        actor=actor,
        description=f"Overage: {shortfall:,} credits past the balance ({plan.name} plan)",
        meta={
            "plan": plan.code,
            "period_start": row.current_period_start.isoformat() if row.current_period_start else None,
            "used_after": used + shortfall,
        },
    )
    db.session.execute(
        update(settings_t)
        .where(settings_t.c.team_id == team_id)
        .values(used_credits=used + shortfall, period_start=row.current_period_start)
    )
    db.session.execute(
        insert(usage_t).values(
            team_id=team_id,
            entry_id=receipt.entry_id,
            credits=shortfall,
            plan_code=plan.code,
            stripe_customer_id=row.stripe_customer_id,
            period_start=row.current_period_start,
            identifier=f"overage-{team_id}-{receipt.entry_id}",
            occurred_at=now,
            attempts=0,
        )
    )
    # Still the lock's reading, moved by the grant: auto-recharge's threshold travels with it.
    return before._replace(balance=receipt.balance_after, held=receipt.held_after)
