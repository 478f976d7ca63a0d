"""Subscriptions: the team's plan and status come from Stripe's current objects; paid invoices start periods.

The rules (docs/billing.md):

- **Plan from the price paid.** A price stands for the catalog plan whose configured price id it is,
  or whose lookup key (``plan_<code>``) or product metadata (``plan_code``) it carries. The portal
  changes prices and never metadata, so metadata is only a fallback, and a disagreement is recorded.
- **Order-independence by fetching.** Events are snapshots and arrive in any order, so every
  subscription or invoice event makes us list the customer's subscriptions from Stripe and apply
  what is true *now* (``sync_customer``). The same state comes out whatever the order.
- **The team's subscription** is the newest live one (active, trialing, past due, unpaid, paused),
  else an incomplete one, else none: then the team is on the free plan. Deleting any other
  subscription changes nothing.
- **Periods from invoices.** ``invoice.paid`` grants the plan of its non-proration subscription
  line for that line's period, once, if the period is current, no later period was granted, and the
  invoice's subscription is the team's. A yearly line records the paid year and grants its current
  month; the scheduler grants the others (``starter.yearly``). A metered (overage) line is usage,
  never a plan.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from .. import catalog, credits, plans, yearly
from ..extensions import db
from ..models import CreditBlock, Team, utcnow
from . import gateway, overage, receipts
from .customers import team_for
from .errors import BillingError, Ignored

log = logging.getLogger(__name__)
Json = dict[str, Any]
LIVE = ("active", "trialing", "past_due", "unpaid", "paused")


def _timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def plan_for_price(price: Json | str | None) -> catalog.Plan | None:
    """The catalog plan a Stripe price stands for: configured id, lookup key, then product metadata."""
    if isinstance(price, str):
        price = gateway.retrieve_price(price) or {"id": price}
    if not price:
        return None
    for plan in catalog.PLANS.values():
        if price.get("id") and price["id"] in (gateway.plan_price_id(plan, i) for i in catalog.INTERVALS):
            return plan
    lookup_key = (price.get("lookup_key") or "").removesuffix("_yearly")
    if lookup_key.startswith("plan_") and catalog.plan(lookup_key.removeprefix("plan_")):
        return catalog.plan(lookup_key.removeprefix("plan_"))
    product = price.get("product")
    if isinstance(product, str) and not price.get("metadata"):
        # Stripe expands at most four levels, so a subscription's item price names its product by id.
        product = (gateway.retrieve_price(price["id"]) or {}).get("product") if price.get("id") else None
    for metadata in (product.get("metadata") if isinstance(product, dict) else None, price.get("metadata")):
        metadata = metadata or {}
        code = metadata.get("plan_code") or (metadata.get("code") if metadata.get("kind") == "plan" else None)
        if code and catalog.plan(str(code)):
            return catalog.plan(str(code))
    return None


class Notes:
    """Disagreements found while applying an event: recorded on the stored event, shown to admins."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        log.warning("Stripe: %s", line)
        self.lines.append(line)

    def text(self) -> str | None:
        return "; ".join(self.lines) or None


def is_metered(price: Json | str | None) -> bool:
    """A usage price (the overage meter's), which bills usage and never stands for a plan."""
    return isinstance(price, dict) and ((price.get("recurring") or {}).get("usage_type") == "metered")


def interval_of(price: Json | str | None) -> str:
    """How often a plan price bills: ``month`` or ``year`` (its ``recurring.interval``)."""
    if isinstance(price, str):
        price = gateway.retrieve_price(price)
    recurring = (price or {}).get("recurring") or {}
    return "year" if recurring.get("interval") == "year" and int(recurring.get("interval_count") or 1) == 1 else "month"


def _items(subscription: Json) -> list[Json]:
    return list(((subscription.get("items") or {}).get("data")) or [])


def plan_item(subscription: Json) -> Json:
    """The subscription's plan item: the first that is not metered (Checkout adds the overage price after it)."""
    items = _items(subscription)
    return next((item for item in items if not is_metered(item.get("price"))), items[0] if items else {})


def metered_item(subscription: Json | None) -> Json | None:
    """The subscription's metered overage item, if Checkout (or the portal) added one."""
    return next((item for item in _items(subscription or {}) if is_metered(item.get("price"))), None)


def _resolve_plan(price: Json | str | None, metadata: Json | None, notes: Notes, what: str) -> catalog.Plan | None:
    plan = plan_for_price(price)
    named = catalog.plan(str((metadata or {}).get("plan_code", "")))
    if plan is None and named is not None:
        notes.add(f"{what}: the price is not a catalog plan; used metadata plan_code {named.code!r}")
        return named
    if plan is not None and named is not None and named != plan:
        notes.add(f"{what}: metadata says {named.code!r} but the price paid is {plan.code!r}; used the price")
    return plan


def current_subscription(subscriptions: list[Json]) -> Json | None:
    """The subscription the team is on: the newest live one, else the newest incomplete one."""
    for statuses in (LIVE, ("incomplete",)):
        candidates = [s for s in subscriptions if s.get("status") in statuses]
        if candidates:
            return max(candidates, key=lambda s: (s.get("created") or 0, s["id"]))
    return None


def sync_customer(team: Team, notes: Notes) -> Json | None:
    """Apply the customer's subscriptions as Stripe has them now; returns the team's current one."""
    subscriptions = gateway.list_subscriptions(team.stripe_customer_id)
    subscription = current_subscription(subscriptions)
    if subscription is None:
        overage.set_metered_item(team.id, None)
        dropped = (
            team.stripe_subscription_id is None
            and team.plan_code == catalog.FREE_PLAN.code
            and team.subscription_status == "canceled"
        )
        # Only a subscription that was paid for ends as "canceled"; one never paid ends "incomplete_expired"
        # and must not touch credits (else abandoning a Checkout would refresh the free allowance).
        if any(s.get("status") == "canceled" for s in subscriptions) and not dropped:
            drop_to_free(team)
        elif subscriptions and team.stripe_subscription_id is not None and team.plan_code == catalog.FREE_PLAN.code:
            team.stripe_subscription_id, team.subscription_status = None, None
        return None
    item = plan_item(subscription)
    plan = _resolve_plan(item.get("price"), subscription.get("metadata"), notes, f"subscription {subscription['id']}")
    if plan is None:
        raise Ignored(f"subscription {subscription['id']}: its price is not a catalog plan")
    team.stripe_subscription_id = subscription["id"]
    team.subscription_status = subscription["status"]
    team.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    if subscription["status"] != "incomplete":  # not paid yet: the team keeps the plan it has
        team.plan_code = plan.code
    _record_metered_item(team, subscription, plan, notes)
    if item.get("current_period_end"):
        team.current_period_end = _timestamp(item["current_period_end"])
    return subscription


def resume(team: Team) -> None:
    """Undo a cancellation at the period end: the subscription renews again, as the portal's "renew" does.

    Stripe is asked to clear ``cancel_at_period_end`` and the team then takes what Stripe has now
    (``sync_customer``); the ``customer.subscription.updated`` webhook that follows applies the same
    state again. The caller commits.
    """
    if not (team.stripe_subscription_id and team.cancel_at_period_end and team.is_paying):
        raise BillingError("This plan is not set to end, so there is nothing to resume.")
    gateway.set_cancel_at_period_end(team.stripe_subscription_id, False)
    notes = Notes()
    sync_customer(team, notes)
    if team.cancel_at_period_end:
        raise BillingError("Stripe still has this plan ending at the period end. Try again in a minute.")


def overage_plan_of(price: Json) -> catalog.Plan | None:
    """The plan whose overage a metered price bills: configured id, lookup key ``overage_<code>``, product metadata."""
    for plan in catalog.PLANS.values():
        if plan.has_overage and price.get("id") == gateway.current_app_overage_price(plan):
            return plan
    lookup_key = price.get("lookup_key") or ""
    if lookup_key.startswith("overage_"):
        return catalog.plan(lookup_key.removeprefix("overage_"))
    product = price.get("product")
    code = (product.get("metadata") or {}).get("overage_plan_code") if isinstance(product, dict) else None
    return catalog.plan(str(code)) if code else None


def _record_metered_item(team: Team, subscription: Json, plan: catalog.Plan, notes: Notes) -> None:
    """The subscription's metered item, if it bills this plan's overage: otherwise overage stays off (fail closed)."""
    metered = metered_item(subscription) if subscription["status"] in LIVE else None
    if metered is not None and overage_plan_of(metered.get("price") or {}) != plan:
        notes.add(f"subscription {subscription['id']}: its metered price is not {plan.code}'s overage; overage is off")
        metered = None
    overage.set_metered_item(team.id, metered["id"] if metered else None)


def drop_to_free(team: Team) -> None:
    """The paid subscription ended: the plan credits left end with it, a free month starts now.

    Every plan block ends, not just the paid ones, so the outcome is the same whether the deletion
    arrives before or after the invoices that preceded it. Only a subscription that was paid for
    gets here (``sync_customer``), so the fresh free month cannot be farmed by abandoned Checkouts.
    """
    now = utcnow()
    team.stripe_subscription_id = None
    team.subscription_status = "canceled"
    team.cancel_at_period_end = False
    team.plan_code = catalog.FREE_PLAN.code
    yearly.stop_years(team.id, "the subscription ended", now=now)
    for block_id in _unexpired_plan_blocks(team.id):
        credits.expire_block(team.id, block_id, now=now, early_reason="the subscription ended")
    team.period_anchor = now  # the free month counts from the day the paid plan ended
    plans.start_free_period(team, now)


def _unexpired_plan_blocks(team_id: int, *, other_than: datetime | None = None) -> list[int]:
    query = select(CreditBlock.id).where(
        CreditBlock.team_id == team_id, CreditBlock.source == "plan", CreditBlock.expired_at.is_(None)
    )
    if other_than is not None:
        query = query.where(CreditBlock.period_start != other_than)
    return list(db.session.scalars(query.order_by(CreditBlock.id)))


def sync(subscription: Json, notes: Notes) -> None:
    """``customer.subscription.*``: whatever the snapshot says, apply the customer's current state."""
    sync_customer(team_for(subscription.get("customer"), None), notes)


def _lines(invoice: Json) -> list[Json]:
    """The invoice's subscription lines; all pages of them (Stripe lists prorations first, so the
    non-proration line of a busy invoice may not be in the event's first page)."""
    listed = invoice.get("lines") or {}
    lines = gateway.list_invoice_lines(invoice["id"]) if listed.get("has_more") else listed.get("data") or []
    return [line for line in lines if (line.get("parent") or {}).get("type") == "subscription_item_details"]


def _is_proration(line: Json) -> bool:
    details = (line.get("parent") or {}).get("subscription_item_details") or {}
    return bool(details.get("proration") or line.get("proration"))


def _line_price(line: Json) -> str | None:
    return ((line.get("pricing") or {}).get("price_details") or {}).get("price")


def _price_of(price_id: str | None, subscription: Json | None) -> Json | str | None:
    """The line's price: the subscription's own item price when it is that one, else fetched by id."""
    for item in ((subscription or {}).get("items") or {}).get("data") or []:
        if price_id and (item.get("price") or {}).get("id") == price_id:
            return item["price"]
    return (gateway.retrieve_price(price_id) or price_id) if price_id else None


def invoice_paid(invoice: Json, notes: Notes) -> None:
    """A paid subscription invoice: sync the team, then grant its period's allowance once."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if not details.get("subscription"):
        raise Ignored("not a subscription invoice")
    team = team_for(invoice.get("customer"), details.get("metadata"))
    record, first = receipts.record_invoice(team, invoice)  # paid is paid: a receipt even when nothing is granted
    _grant_for_invoice(team, invoice, details, record, notes)
    if first:
        receipts.email_invoice_receipt(team, record, invoice.get("hosted_invoice_url"))


def _grant_for_invoice(team: Team, invoice: Json, details: Json, record: Any, notes: Notes) -> None:
    current = sync_customer(team, notes)
    lines = _lines(invoice)
    # The plan line: not a proration, and not the metered overage line a renewal may carry.
    line, price = next(
        (
            (candidate, candidate_price)
            for candidate in lines
            if not _is_proration(candidate)
            and not is_metered(candidate_price := _price_of(_line_price(candidate), current))
        ),
        (None, None),
    )
    if line is None:
        # A change billed for the rest of the period (no billing_cycle_anchor=now): no new period
        # starts, so the new plan's credits come with the next renewal (docs/billing.md).
        notes.add(f"invoice {invoice['id']}: only proration lines, no new period; no credits granted")
        return
    plan = _resolve_plan(price, details.get("metadata"), notes, f"invoice {invoice['id']}")
    if plan is None:
        notes.add(f"invoice {invoice['id']}: its price is not a catalog plan; no credits granted")
        return
    record.plan_code = plan.code
    interval = interval_of(price)
    if interval == "year" and not plan.sold_yearly:
        notes.add(f"invoice {invoice['id']}: {plan.code} is not sold yearly; no credits granted")
        return
    _check_amounts(invoice, lines, line, plan, interval, notes)
    if current is None or current["id"] != details["subscription"]:
        notes.add(f"invoice {invoice['id']}: its subscription is not the team's current one; no credits granted")
        return
    _start_paid_period(team, invoice, line, plan, interval, notes)
    # What this invoice granted, as the ledger has it: nothing when a check above or in there said no
    # (a yearly invoice: its first month, the rest come month by month).
    db.session.flush()
    record.credits = db.session.scalar(
        select(func.coalesce(func.sum(CreditBlock.amount), 0)).where(
            CreditBlock.team_id == team.id, CreditBlock.source == "plan", CreditBlock.reference == invoice["id"]
        )
    )


def _check_amounts(
    invoice: Json, lines: list[Json], line: Json, plan: catalog.Plan, interval: str, notes: Notes
) -> None:
    cost = plan.price_for(interval)
    if line.get("amount") != cost:
        notes.add(f"invoice {invoice['id']}: {plan.code} ({interval}ly) costs {cost}, its line {line.get('amount')}")
    expected = sum(int(candidate.get("amount") or 0) for candidate in lines)
    if invoice.get("amount_paid") is not None and invoice["amount_paid"] != max(expected, 0):
        notes.add(f"invoice {invoice['id']}: paid {invoice['amount_paid']}, its plan and prorations come to {expected}")


def _start_paid_period(team: Team, invoice: Json, line: Json, plan: catalog.Plan, interval: str, notes: Notes) -> None:
    start, end = _timestamp(line["period"]["start"]), _timestamp(line["period"]["end"])
    now = utcnow()
    if end <= now:
        notes.add(f"invoice {invoice['id']}: the period {start:%Y-%m-%d} to {end:%Y-%m-%d} is over; nothing granted")
        return
    # Only paid periods (their blocks name the invoice) can be newer: a free period's block may start
    # later (a sign-up instant, a free month granted while the webhook was down) and is replaced.
    newest = db.session.scalar(
        select(func.max(CreditBlock.period_start)).where(
            CreditBlock.team_id == team.id, CreditBlock.source == "plan", CreditBlock.reference.is_not(None)
        )
    )
    if newest is not None and int(newest.timestamp()) > int(start.timestamp()):
        notes.add(f"invoice {invoice['id']}: a later plan period was granted already; nothing granted")
        return
    if interval == "year":
        _start_paid_year(team, invoice, plan, start, end, now)
        return
    yearly.stop_years(team.id, "replaced by a monthly period", now=now)
    with credits.one_change(team.id):  # the old plan credits end as the new ones arrive: no "ran out" between
        for block_id in _unexpired_plan_blocks(team.id, other_than=start):
            credits.expire_block(team.id, block_id, now=now, early_reason="a new plan period started")
        plans.start_period(team, start, end, plan, reference=invoice["id"], now=now)
    log.info("Team %s: %s period %s to %s started by %s", team.id, plan.code, start, end, invoice["id"])


def _start_paid_year(team: Team, invoice: Json, plan: catalog.Plan, start: datetime, end: datetime, now: datetime):
    """A paid year: record it, end the plan credits of what came before, grant the month containing now."""
    subscription_id = ((invoice.get("parent") or {}).get("subscription_details") or {})["subscription"]
    year = yearly.record_year(
        team, invoice_id=invoice["id"], subscription_id=subscription_id, plan=plan, start=start, end=end
    )
    month = yearly.month_of(year, now)
    with credits.one_change(team.id):  # the old plan credits end as the year's first month arrives
        for block_id in _unexpired_plan_blocks(team.id, other_than=month[0] if month else None):
            credits.expire_block(team.id, block_id, now=now, early_reason="a new plan period started")
        team.current_period_start, team.current_period_end = start, end
        yearly.grant_month(team, year, now)
    log.info("Team %s: %s yearly %s to %s paid by %s", team.id, plan.code, start, end, invoice["id"])


def invoice_changed(invoice: Json, notes: Notes) -> None:
    """``invoice.payment_failed`` and the like: the status that matters is the subscription's, fetched now."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if not details.get("subscription"):
        raise Ignored("not a subscription invoice")
    sync_customer(team_for(invoice.get("customer"), details.get("metadata")), notes)
