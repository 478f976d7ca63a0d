"""Subscriptions: Stripe's events keep the team's plan and status; paid invoices start periods.

Policy (docs/billing.md): ``invoice.paid`` for a subscription starts a period: what is left of the
old period's plan credits expires and the plan's allowance is granted, expiring at the period end.
An upgrade bills at once and restarts the period (so it grants the new allowance now); a downgrade
or a cancellation takes effect at the period end; deletion drops the team to the free plan.
Subscription events carry ``created``: an older one never overwrites a newer state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from .. import catalog, credits, plans
from ..extensions import db
from ..models import CreditBlock, Team, utcnow
from . import gateway
from .fulfilment import Ignored, team_for

log = logging.getLogger(__name__)
Json = dict[str, Any]
ENDED = {"canceled", "incomplete_expired"}


def _timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def plan_for(metadata: Json | None, price_id: str | None) -> catalog.Plan | None:
    """The catalog plan of a subscription: its metadata first, then a configured price id."""
    plan = catalog.plan(str((metadata or {}).get("plan_code", "")))
    if plan is None and price_id:
        for candidate in catalog.PLANS.values():
            if price_id == gateway.price_id("plan", candidate.code, candidate):
                return candidate
    return plan


def _is_newer(team: Team, created: int) -> bool:
    if team.subscription_event_at is not None and created < team.subscription_event_at:
        return False
    team.subscription_event_at = created
    return True


def sync(subscription: Json, created: int, *, deleted: bool = False) -> None:
    """Mirror a subscription's state onto its team, unless a newer event was applied already."""
    team = team_for(subscription.get("customer"), subscription.get("metadata"))
    if not _is_newer(team, created):
        raise Ignored(f"subscription event from {created} is older than the state applied")
    status = "canceled" if deleted else subscription.get("status")
    if status in ENDED:
        _drop_to_free(team)
        return
    item = ((subscription.get("items") or {}).get("data") or [{}])[0]
    plan = plan_for(subscription.get("metadata"), (item.get("price") or {}).get("id"))
    if plan is None:
        raise Ignored("the subscription's plan is not in the catalog")
    team.stripe_subscription_id = subscription["id"]
    team.subscription_status = status
    team.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    team.plan_code = plan.code
    if item.get("current_period_end"):
        team.current_period_end = _timestamp(item["current_period_end"])


def _drop_to_free(team: Team) -> None:
    """The subscription ended: the free plan from now; paid plan credits run until they expire."""
    team.stripe_subscription_id = None
    team.subscription_status = "canceled"
    team.cancel_at_period_end = False
    team.plan_code = catalog.FREE_PLAN.code
    plans.start_free_period(team, utcnow())


def _subscription_line(invoice: Json) -> Json | None:
    for line in (invoice.get("lines") or {}).get("data") or []:
        if (line.get("parent") or {}).get("type") == "subscription_item_details" and line.get("period"):
            return line
    return None


def invoice_paid(invoice: Json, created: int) -> None:
    """A paid subscription invoice starts the period of its subscription item: grant the allowance once."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if not details.get("subscription"):
        raise Ignored("not a subscription invoice")
    team = team_for(invoice.get("customer"), details.get("metadata"))
    line = _subscription_line(invoice)
    if line is None:
        raise Ignored("no subscription item line with a period")
    price_id = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    plan = plan_for(details.get("metadata"), price_id)
    if plan is None:
        raise Ignored("the invoice's plan is not in the catalog")
    start, end = _timestamp(line["period"]["start"]), _timestamp(line["period"]["end"])
    now = utcnow()
    # Only paid periods (their blocks name the invoice) can be newer: the free period's block starts at
    # the sign-up instant, which a subscription begun in that same second precedes (Stripe counts seconds).
    newer = db.session.scalar(
        select(CreditBlock.id).where(
            CreditBlock.team_id == team.id,
            CreditBlock.source == "plan",
            CreditBlock.period_start > start,
            CreditBlock.reference.is_not(None),
        )
    )
    if end <= now or newer is not None:
        raise Ignored(f"the period {start:%Y-%m-%d} to {end:%Y-%m-%d} is over or older than the current one")
    # The new period replaces the old one: its unused plan credits end now (spent ones stay spent).
    old_blocks = db.session.scalars(
        select(CreditBlock.id).where(
            CreditBlock.team_id == team.id,
            CreditBlock.source == "plan",
            CreditBlock.expired_at.is_(None),
            CreditBlock.period_start != start,
        )
    ).all()
    for block_id in old_blocks:
        credits.expire_block(team.id, block_id, now=now, early_reason="a new plan period started")
    plans.start_period(team, start, end, plan, reference=invoice["id"], now=now)
    team.plan_code = plan.code
    team.stripe_subscription_id = details["subscription"]
    if team.subscription_status in (None, "past_due", "incomplete", "canceled"):
        team.subscription_status = "active"
    log.info("Team %s: %s period %s to %s started by %s", team.id, plan.code, start, end, invoice["id"])


def invoice_payment_failed(invoice: Json, created: int) -> None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if not details.get("subscription"):
        raise Ignored("not a subscription invoice")
    team = team_for(invoice.get("customer"), details.get("metadata"))
    team.subscription_status = "past_due"
