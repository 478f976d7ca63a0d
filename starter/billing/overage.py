"""Metered overage: the team's opt-in and cap, what it used, and reporting it to Stripe's Billing Meter.

The ledger side (an overage block granted on demand under the team's lock, and an ``overage_usage``
outbox row in the same transaction) is ``credits.overage``. Here:

- ``configure``: an owner or admin turns overage on or off and sets the monthly cap (credits).
- ``set_metered_item``: ``subscriptions.sync_customer`` records the subscription's metered item;
  without one nothing would bill the overage, so the ledger allows none (fail closed).
- ``report_due``: the scheduler sends each unreported usage row as one meter event, outside any
  spend transaction. The row's ``identifier`` is the event's identifier (Stripe counts an identifier
  once), so a retry after a timeout or a crash between the send and the commit never counts twice.
- ``summary``: used against the cap and the estimated amount on the next invoice (the dashboard).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from .. import catalog
from ..credits.core import lock
from ..extensions import db
from ..models import OverageSetting, OverageUsage, Team, utcnow
from . import gateway
from .errors import BillingError, MeterEventRefused

log = logging.getLogger(__name__)
MAX_CAP = 10_000_000  # credits a month; more is a typo, not a budget


class OverageError(BillingError):
    """A refused overage setting (the message says why)."""


def setting_of(team_id: int) -> OverageSetting | None:
    return db.session.get(OverageSetting, team_id)


def set_metered_item(team_id: int, item_id: str | None) -> None:
    """Record the subscription's metered overage item (None: the subscription has none)."""
    setting = setting_of(team_id)
    if setting is None:
        if item_id is None:
            return
        setting = OverageSetting(team_id=team_id, enabled=False, cap_credits=0, used_credits=0)
        db.session.add(setting)
    if setting.subscription_item_id != item_id:
        setting.subscription_item_id = item_id
        setting.updated_at = utcnow()


def available_for(team: Team) -> str | None:
    """Why the team cannot turn overage on now, or None when it can."""
    plan = catalog.plan(team.plan_code) or catalog.FREE_PLAN
    if not plan.has_overage:
        return f"The {plan.name} plan has no overage. Choose a paid plan that offers it."
    setting = setting_of(team.id)
    if setting is None or not setting.subscription_item_id:
        return (
            "This subscription has no metered overage price, so overage could not be billed. "
            "Overage comes with monthly plans bought through Checkout."
        )
    return None


def configure(team: Team, *, enabled: bool, cap: int, user_id: int | None) -> OverageSetting:
    """Turn overage on (with a monthly cap in credits) or off. The caller commits.

    Raises ``OverageError`` when the plan or the subscription cannot bill overage, or the cap is out of range.
    """
    if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= MAX_CAP:
        raise OverageError(f"The monthly cap is a whole number of credits from 0 to {MAX_CAP:,}.")
    if enabled and (reason := available_for(team)):
        raise OverageError(reason)
    # The spend path reads this row under the team's balance lock; take the same lock so a change
    # never lands between a spend's check and its write.
    lock(team.id)
    setting = db.session.get(OverageSetting, team.id, with_for_update=True, populate_existing=True)
    if setting is None:
        setting = OverageSetting(team_id=team.id, used_credits=0)
        db.session.add(setting)
    setting.enabled, setting.cap_credits = enabled, cap
    setting.updated_by_id, setting.updated_at = user_id, utcnow()
    db.session.flush()
    return setting


@dataclass(frozen=True)
class Summary:
    enabled: bool
    cap: int
    used: int
    estimated_cents: int
    cents_per_1000: int
    reason_unavailable: str | None

    @property
    def left(self) -> int:
        return max(self.cap - self.used, 0)

    @property
    def percent(self) -> int:
        return min(100, round(self.used * 100 / self.cap)) if self.cap else 0


def summary(team: Team) -> Summary | None:
    """Overage this period for the dashboard and /billing; None when the plan has no overage."""
    plan = catalog.plan(team.plan_code) or catalog.FREE_PLAN
    if not plan.has_overage:
        return None
    setting = setting_of(team.id)
    used = 0
    if setting is not None and setting.period_start is not None and setting.period_start == team.current_period_start:
        used = setting.used_credits
    return Summary(
        enabled=bool(setting and setting.enabled),
        cap=setting.cap_credits if setting else 0,
        used=used,
        estimated_cents=plan.overage_cents(used),
        cents_per_1000=plan.overage_cents_per_1000 or 0,
        reason_unavailable=available_for(team),
    )


def unreported_credits(team_id: int) -> int:
    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(OverageUsage.credits), 0)).where(
                OverageUsage.team_id == team_id, OverageUsage.reported_at.is_(None)
            )
        )
    )


def report_due(now: datetime | None = None, *, limit: int = 500) -> int:
    """Report up to ``limit`` unreported usage rows to the Billing Meter; returns how many were sent.

    Each row is locked (SKIP LOCKED: two schedulers never send the same row at once), sent, and
    marked reported. A failure is recorded on the row. Stripe unreachable or failing ends the batch
    (the next run retries with the same identifier); a refusal no retry can change (a row older than
    the meter accepts, a deleted customer) skips that row only, and rows tried least come first, so
    one bad row never holds back the usage of every other team. The caller commits.
    """
    now = now or utcnow()
    rows = db.session.scalars(
        select(OverageUsage)
        .where(OverageUsage.reported_at.is_(None))
        .order_by(OverageUsage.attempts, OverageUsage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    sent = 0
    for row in rows:
        try:
            gateway.report_meter_event(
                catalog.OVERAGE_METER_EVENT,
                row.stripe_customer_id,
                row.credits,
                row.identifier,
                int(row.occurred_at.timestamp()),
            )
        except BillingError as error:
            row.attempts += 1
            row.last_error = str(error)[:1000]
            log.warning("Overage usage %s not reported (attempt %s): %s", row.id, row.attempts, error)
            if isinstance(error, MeterEventRefused):
                continue
            break
        row.reported_at = now
        row.attempts += 1
        row.last_error = None
        sent += 1
    db.session.flush()
    return sent
