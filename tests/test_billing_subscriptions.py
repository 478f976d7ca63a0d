"""Subscriptions, refunds and disputes through signed webhook events in today's shapes.

A subscription's period lives on ``items.data[0]``; an invoice names its subscription under
``parent.subscription_details`` and its service period on ``lines.data[0].period``. The app reads
the subscription's current state from Stripe on every event, so each test keeps the stand-in's
objects current (``standin.put``) as Stripe would; tests/test_billing_lifecycles.py plays whole
lifecycles in every order.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from starter import catalog, credits
from starter.extensions import db
from starter.models import CreditBlock, Purchase, Team
from tests import billing_fixtures
from tests.billing_fixtures import (
    deliver,
    entries,
    plan_credits,
    purchased,
    real_stripe_config,
    stored_event,
)
from tests.stripe_events import make_event
from tests.stripe_standin import (
    StripeStandIn,
    make_charge,
    make_checkout_session,
    make_dispute,
    make_invoice,
    make_price,
    make_subscription,
    new_id,
)

DAY = 86400
PRO, STARTER, MEDIUM = catalog.PLANS["pro"], catalog.PLANS["starter"], catalog.PACKS["medium"]

# Fixtures of tests/billing_fixtures.py used here (pytest finds them by their function names).
standin = billing_fixtures.standin


@pytest.fixture
def app_config(standin: StripeStandIn) -> dict[str, object]:
    return real_stripe_config(standin)


STANDIN: list[StripeStandIn] = []


@pytest.fixture
def team(make_user: Any, standin: StripeStandIn) -> Team:
    """A team that has been a Stripe customer since it signed up, on the free plan."""
    team = db.session.get(Team, make_user("owner@example.com").current_team_id)
    team.stripe_customer_id = "cus_teamcustomer1"
    db.session.commit()
    STANDIN[:] = [standin]
    return team


def stripe_has(obj: dict[str, Any]) -> dict[str, Any]:
    """Make ``obj`` Stripe's current state (what a retrieve or list answers), as the change Stripe made."""
    STANDIN[0].put(obj)
    return obj


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def subscription(team: Team, plan: catalog.Plan = PRO, start: int | None = None, **overrides: Any) -> dict[str, Any]:
    start = int(time.time()) if start is None else start
    price = make_price(plan.monthly_price_cents, id=f"price_{plan.code}", lookup_key=f"plan_{plan.code}")
    metadata = {"team_id": str(team.id), "plan_code": plan.code}
    return stripe_has(make_subscription(
        team.stripe_customer_id, price=price, period_start=start, period_end=start + 30 * DAY, metadata=metadata,
        **overrides,
    ))  # fmt: skip


def invoice(sub: dict[str, Any], reason: str = "subscription_create", start: int | None = None, **overrides: Any):
    """The invoice of ``sub``'s current period (or of the period starting at ``start``)."""
    item = sub["items"]["data"][0]
    begin = item["current_period_start"] if start is None else start
    end = item["current_period_end"] if start is None else start + 30 * DAY
    amount = item["price"]["unit_amount"]
    return make_invoice(
        sub["customer"], sub["id"], amount, begin, end, reason, price_id=item["price"]["id"],
        subscription_item=item["id"], subscription_metadata=sub["metadata"], **overrides,
    )  # fmt: skip


def subscribe(client: Any, team: Team, plan: catalog.Plan = PRO, start: int | None = None) -> dict[str, Any]:
    """What Stripe sends when a checkout starts a subscription: created, then the first invoice paid."""
    sub = subscription(team, plan, start)
    assert deliver(client, make_event("customer.subscription.created", sub)).status_code == 200
    assert deliver(client, make_event("invoice.paid", invoice(sub))).status_code == 200
    return sub


def refresh(team: Team) -> Team:
    db.session.expire_all()
    return db.session.get(Team, team.id)


# ---------------------------------------------------------------------------------- subscriptions


def test_subscription_events_mirror_plan_status_and_period(client, team) -> None:
    sub = subscription(team)
    assert "current_period_end" not in sub  # today's shape: the period is on the item only
    period_end = sub["items"]["data"][0]["current_period_end"]

    assert deliver(client, make_event("customer.subscription.created", sub)).status_code == 200

    team = refresh(team)
    assert (team.plan_code, team.subscription_status, team.stripe_subscription_id) == ("pro", "active", sub["id"])
    assert team.cancel_at_period_end is False
    assert team.current_period_end == at(period_end)

    cancelling = stripe_has({**sub, "cancel_at_period_end": True})
    assert deliver(client, make_event("customer.subscription.updated", cancelling)).status_code == 200

    team = refresh(team)
    assert team.cancel_at_period_end is True and team.plan_code == "pro"


def test_invoice_paid_starts_the_period_once(client, team) -> None:
    free_block = db.session.scalar(select(CreditBlock).where(CreditBlock.team_id == team.id))
    sub = subscription(team, start=int(time.time()) - DAY)  # subscribed yesterday; the webhook is late
    paid = invoice(sub)
    end = sub["items"]["data"][0]["current_period_end"]

    deliver(client, make_event("customer.subscription.created", sub))
    first = deliver(client, make_event("invoice.paid", paid))
    second = deliver(client, make_event("invoice.paid", paid))  # a second event for the same invoice

    assert (first.status_code, second.status_code) == (200, 200)
    assert plan_credits(team.id) == PRO.monthly_credits
    [grant] = [entry for entry in entries(team.id, "grant") if entry.meta.get("plan") == "pro"]
    assert grant.amount == PRO.monthly_credits
    block = db.session.get(CreditBlock, grant.block_id)
    assert (block.expires_at, block.period_start, block.reference) == (at(end), at(end - 30 * DAY), paid["id"])
    [expiry] = entries(team.id, "expire")  # what was left of the free period's credits
    assert expiry.block_id == free_block.id and expiry.amount == -catalog.FREE_PLAN.monthly_credits
    team = refresh(team)
    assert (team.plan_code, team.current_period_end) == ("pro", at(end))
    assert credits.verify() == []


def test_a_subscription_started_the_second_the_team_signed_up_gets_its_credits(client, team) -> None:
    # Stripe's periods are whole seconds: this one starts before the free period's exact sign-up instant.
    start = int(team.current_period_start.timestamp())

    subscribe(client, team, PRO, start=start)

    assert plan_credits(team.id) == PRO.monthly_credits


def test_a_renewal_expires_the_old_period_and_grants_the_new_one(client, team) -> None:
    sub = subscribe(client, team, PRO, start=int(time.time()) - 29 * DAY)
    spend = credits.spend(team.id, 1_000, key="work")  # plan credits are used first
    db.session.commit()
    renewal_start = sub["items"]["data"][0]["current_period_end"]

    response = deliver(client, make_event("invoice.paid", invoice(sub, "subscription_cycle", start=renewal_start)))

    assert response.status_code == 200 and spend.amount == -1_000
    assert plan_credits(team.id) == PRO.monthly_credits
    expired = entries(team.id, "expire")
    assert expired[-1].amount == -(PRO.monthly_credits - 1_000)
    assert refresh(team).current_period_end == at(renewal_start + 30 * DAY)
    assert credits.verify() == []


def test_a_stale_subscription_event_applies_what_stripe_has_now(client, team) -> None:
    sub = subscription(team)
    # Bug 3: created (incomplete) delivered after updated (active) in the same second used to win.
    newer = make_event("customer.subscription.updated", stripe_has({**sub, "cancel_at_period_end": True}))
    older = make_event("customer.subscription.created", {**sub, "status": "incomplete"}, created=newer["created"])

    assert deliver(client, newer).status_code == 200
    assert deliver(client, older).status_code == 200

    team = refresh(team)
    assert (team.subscription_status, team.cancel_at_period_end, team.plan_code) == ("active", True, "pro")
    assert team.is_paying  # so choosing a plan opens the portal, not a second subscription Checkout


def test_the_portal_changing_the_price_changes_the_plan_whatever_the_metadata(client, team) -> None:
    # Bug 1: the portal changes the item's price and never the metadata, which still says "pro".
    sub = subscribe(client, team, PRO, start=int(time.time()) - 29 * DAY)
    item = sub["items"]["data"][0]
    starter_price = make_price(STARTER.monthly_price_cents, id="price_starter", lookup_key="plan_starter")
    renewal_start = item["current_period_end"]
    downgraded = stripe_has(
        {**sub, "items": {**sub["items"], "data": [{**item, "price": starter_price,
         "current_period_start": renewal_start, "current_period_end": renewal_start + 30 * DAY}]}}
    )  # fmt: skip

    deliver(client, make_event("customer.subscription.updated", downgraded))
    renewal = make_event("invoice.paid", invoice(downgraded, "subscription_cycle"))
    assert deliver(client, renewal).status_code == 200

    team = refresh(team)
    assert team.plan_code == "starter" and plan_credits(team.id) == STARTER.monthly_credits
    assert "metadata says 'pro' but the price paid is 'starter'" in stored_event(renewal["id"]).warning


def test_an_upgrade_invoice_takes_its_period_from_the_non_proration_line(client, team) -> None:
    # Bug 2: the proration line for unused time comes first and carries the old period.
    sub = subscribe(client, team, catalog.PLANS["starter"], start=int(time.time()) - 10 * DAY)
    old_end = sub["items"]["data"][0]["current_period_end"]
    start = int(time.time())
    item = {
        **sub["items"]["data"][0],
        "price": make_price(PRO.monthly_price_cents, id="price_pro", lookup_key="plan_pro"),
        "current_period_start": start,
        "current_period_end": start + 30 * DAY,
    }
    upgraded = stripe_has({**sub, "items": {**sub["items"], "data": [item]}})  # fmt: skip
    paid = invoice(upgraded, "subscription_update")
    full_line = paid["lines"]["data"][0]
    unused = {
        **full_line,
        "id": "il_unused",
        "amount": -1_267,
        "period": {"start": start, "end": old_end},
        "parent": {
            **full_line["parent"],
            "subscription_item_details": {**full_line["parent"]["subscription_item_details"], "proration": True},
        },
        "pricing": {**full_line["pricing"], "price_details": {"price": "price_starter", "product": "prod_s"}},
    }
    paid["lines"]["data"] = [unused, full_line]
    paid["amount_paid"] = PRO.monthly_price_cents - 1_267  # fmt: skip

    assert deliver(client, make_event("invoice.paid", paid)).status_code == 200

    team = refresh(team)
    assert team.plan_code == "pro" and plan_credits(team.id) == PRO.monthly_credits
    [block] = [b for b in db.session.scalars(select(CreditBlock).where(
        CreditBlock.team_id == team.id, CreditBlock.expired_at.is_(None), CreditBlock.source == "plan"))]  # fmt: skip
    assert block.expires_at == at(start + 30 * DAY) == team.current_period_end
    assert credits.verify() == []


def test_an_older_invoice_after_a_newer_period_grants_nothing(client, team) -> None:
    sub = subscription(team, start=int(time.time()) - 10 * DAY)
    deliver(client, make_event("customer.subscription.created", sub))
    upgrade = invoice(sub, "subscription_update", start=int(time.time()) - 60)
    assert deliver(client, make_event("invoice.paid", upgrade)).status_code == 200

    late = make_event("invoice.paid", invoice(sub))  # the first period's invoice, delivered last

    assert deliver(client, late).status_code == 200
    assert plan_credits(team.id) == PRO.monthly_credits
    assert "a later plan period was granted already" in stored_event(late["id"]).warning


def test_a_failed_invoice_payment_marks_the_team_past_due(client, team) -> None:
    sub = subscribe(client, team)
    renewal = invoice(sub, "subscription_cycle", start=sub["items"]["data"][0]["current_period_end"], status="open")
    stripe_has({**sub, "status": "past_due"})

    assert deliver(client, make_event("invoice.payment_failed", renewal)).status_code == 200

    team = refresh(team)
    assert team.subscription_status == "past_due" and team.plan_code == "pro"
    assert plan_credits(team.id) == PRO.monthly_credits


def test_a_stale_payment_failure_after_the_retry_paid_leaves_the_team_active(client, team) -> None:
    # Bug 8: invoice.payment_failed delivered after the retry's invoice.paid.
    sub = subscribe(client, team)
    failed = make_event("invoice.payment_failed", invoice(sub, "subscription_cycle", status="open"))
    stripe_has({**sub, "status": "active"})  # the retry succeeded: Stripe says active now

    assert deliver(client, failed).status_code == 200
    assert refresh(team).subscription_status == "active"


def test_a_deleted_subscription_puts_the_team_back_on_free(client, team) -> None:
    sub = subscribe(client, team, PRO, start=int(time.time()) - 29 * DAY)
    ended = stripe_has({**sub, "status": "canceled"})

    assert deliver(client, make_event("customer.subscription.deleted", ended)).status_code == 200

    team = refresh(team)
    assert (team.plan_code, team.stripe_subscription_id, team.subscription_status) == ("free", None, "canceled")
    assert team.cancel_at_period_end is False
    free_grants = [entry for entry in entries(team.id, "grant") if entry.meta.get("plan") == "free"]
    assert len(free_grants) == 2  # the sign-up's, and the new free period's, which starts now
    free_block = db.session.get(CreditBlock, free_grants[-1].block_id)
    assert team.current_period_start == free_block.period_start <= datetime.now(UTC) < team.current_period_end
    # The paid plan's credits end with it (docs/billing.md): the same whether the deletion comes first or last.
    assert plan_credits(team.id) == catalog.FREE_PLAN.monthly_credits
    assert credits.verify() == []


def test_deleting_an_old_subscription_leaves_the_current_one(client, team) -> None:
    # Bug 4: two Checkouts in two tabs; the first subscription is deleted while the second is active.
    old = subscribe(client, team, PRO, start=int(time.time()) - 60)
    current = subscribe(client, team, PRO, start=int(time.time()))
    gone = stripe_has({**old, "status": "canceled"})

    assert deliver(client, make_event("customer.subscription.deleted", gone)).status_code == 200

    team = refresh(team)
    assert (team.plan_code, team.stripe_subscription_id, team.subscription_status) == ("pro", current["id"], "active")
    assert plan_credits(team.id) == PRO.monthly_credits


# -------------------------------------------------------------------------------- refunds, disputes


def buy(client: Any, team: Team, code: str = "medium") -> Purchase:
    """A pack paid through Checkout and fulfilled by the webhook; returns its Purchase."""
    pack = catalog.PACKS[code]
    session = make_checkout_session(
        mode="payment", status="complete", payment_status="paid", customer=team.stripe_customer_id,
        amount_total=pack.price_cents, currency="usd", payment_intent=new_id("pi_"),
        metadata={"team_id": str(team.id), "kind": "pack", "code": code, "user_id": "1"},
    )  # fmt: skip
    assert deliver(client, make_event("checkout.session.completed", session)).status_code == 200
    return db.session.scalar(select(Purchase).where(Purchase.stripe_checkout_session_id == session["id"]))


def charge(purchase: Purchase, amount_refunded: int = 0, charge_id: str = "ch_paid1") -> dict[str, Any]:
    team = db.session.get(Team, purchase.team_id)
    return stripe_has(make_charge(
        purchase.stripe_payment_intent_id, purchase.amount_cents, amount_refunded, id=charge_id,
        customer=team.stripe_customer_id,
    ))  # fmt: skip


def refunded(client: Any, purchase: Purchase, amount_refunded: int, charge_id: str = "ch_paid1") -> Any:
    return deliver(client, make_event("charge.refunded", charge(purchase, amount_refunded, charge_id)))


def dispute(client: Any, purchase: Purchase, event_type: str, status: str) -> Any:
    """A chargeback: its funds are withdrawn when it opens (one balance transaction), reinstated when won."""
    charge(purchase)
    moved = [{"object": "balance_transaction", "amount": -purchase.amount_cents}]
    if status == "won":
        moved.append({"object": "balance_transaction", "amount": purchase.amount_cents})
    obj = make_dispute(
        "ch_paid1", purchase.stripe_payment_intent_id, purchase.amount_cents, status, id="dp_1",
        balance_transactions=moved,
    )  # fmt: skip
    return deliver(client, make_event(event_type, obj))


def test_a_full_refund_claws_back_the_pack(client, team) -> None:
    purchase = buy(client, team)
    assert purchased(team.id) == MEDIUM.total_credits

    assert refunded(client, purchase, MEDIUM.price_cents).status_code == 200

    assert purchased(team.id) == 0
    [clawback] = entries(team.id, "clawback")
    assert clawback.amount == -MEDIUM.total_credits and clawback.meta["shortfall"] == 0
    db.session.refresh(purchase)
    assert (purchase.status, purchase.refunded_cents) == ("refunded", MEDIUM.price_cents)
    assert credits.verify() == []


def test_a_partial_refund_claws_back_its_share(client, team) -> None:
    purchase = buy(client, team)

    refunded(client, purchase, MEDIUM.price_cents // 2)

    assert purchased(team.id) == MEDIUM.total_credits // 2
    db.session.refresh(purchase)
    assert purchase.status == "partially_refunded"

    refunded(client, purchase, MEDIUM.price_cents)  # the rest, later: cumulative amount_refunded

    assert purchased(team.id) == 0
    assert [entry.amount for entry in entries(team.id, "clawback")] == [-1_100, -1_100]


def test_a_refund_after_spending_takes_what_remains_and_records_the_shortfall(client, team) -> None:
    purchase = buy(client, team)
    free = catalog.FREE_PLAN.monthly_credits
    credits.spend(team.id, free + 2_000, key="big-job")  # the free credits first, then 2,000 purchased
    db.session.commit()

    refunded(client, purchase, MEDIUM.price_cents)

    assert purchased(team.id) == 0
    [clawback] = entries(team.id, "clawback")
    assert clawback.amount == -200
    assert (clawback.meta["requested"], clawback.meta["shortfall"]) == (MEDIUM.total_credits, 2_000)
    assert credits.verify() == []


def test_a_repeated_or_older_refund_event_takes_nothing_more(client, team) -> None:
    purchase = buy(client, team)
    refunded(client, purchase, MEDIUM.price_cents)

    assert refunded(client, purchase, MEDIUM.price_cents).status_code == 200  # another event, same refund
    assert refunded(client, purchase, MEDIUM.price_cents // 2).status_code == 200  # an older one, late

    assert len(entries(team.id, "clawback")) == 1
    assert credits.balance(team.id).total == catalog.FREE_PLAN.monthly_credits


def test_a_refund_for_an_unknown_payment_is_ignored(client, team) -> None:
    buy(client, team)
    event = make_event("charge.refunded", make_charge("pi_unknown", 1_800, 1_800))

    assert deliver(client, event).status_code == 200
    assert purchased(team.id) == MEDIUM.total_credits
    assert stored_event(event["id"]).error.startswith("ignored")


def test_a_lost_dispute_takes_the_credits_back_once(client, team) -> None:
    purchase = buy(client, team)

    assert dispute(client, purchase, "charge.dispute.created", "needs_response").status_code == 200
    assert purchased(team.id) == 0
    assert dispute(client, purchase, "charge.dispute.closed", "lost").status_code == 200

    assert purchased(team.id) == 0
    assert [entry.amount for entry in entries(team.id, "clawback")] == [-MEDIUM.total_credits]
    db.session.refresh(purchase)
    assert purchase.status == "dispute_lost"


def test_a_won_dispute_reinstates_exactly_what_was_taken(client, team) -> None:
    purchase = buy(client, team)
    credits.spend(team.id, catalog.FREE_PLAN.monthly_credits + 700, key="spent-some")
    db.session.commit()
    before = credits.balance(team.id).total

    dispute(client, purchase, "charge.dispute.created", "needs_response")
    assert credits.balance(team.id).total == before - 1_500
    dispute(client, purchase, "charge.dispute.closed", "won")
    dispute(client, purchase, "charge.dispute.closed", "won")  # a second delivery of the outcome

    db.session.expire_all()
    assert credits.balance(team.id).total == before
    [reinstated] = [entry for entry in entries(team.id, "grant") if entry.description.startswith("Dispute won")]
    assert reinstated.amount == 1_500
    db.session.refresh(purchase)
    assert purchase.status == "paid"
    assert credits.verify() == []


def test_an_invoice_whose_lines_do_not_fit_the_event_is_read_in_full(client, team) -> None:
    sub = subscribe(client, team, catalog.PLANS["starter"], start=int(time.time()) - 10 * DAY)
    renewal_start = int(time.time())
    item = {
        **sub["items"]["data"][0],
        "current_period_start": renewal_start,
        "current_period_end": renewal_start + 30 * DAY,
    }
    renewed = stripe_has({**sub, "items": {**sub["items"], "data": [item]}})  # fmt: skip
    paid = invoice(renewed, "subscription_cycle")
    full = paid["lines"]["data"][0]
    prorations = [
        {**full, "id": f"il_proration_{n}", "amount": 0,
         "parent": {**full["parent"], "subscription_item_details": {
             **full["parent"]["subscription_item_details"], "proration": True}}}
        for n in range(3)
    ]  # fmt: skip
    paid["lines"]["data"] = [*prorations, full]
    stripe_has(paid)  # Stripe keeps every line; the event below carries only the first page
    snapshot = {**paid, "lines": {**paid["lines"], "data": prorations[:2], "has_more": True}}

    assert deliver(client, make_event("invoice.paid", snapshot)).status_code == 200

    assert plan_credits(team.id) == catalog.PLANS["starter"].monthly_credits
    [block] = db.session.scalars(
        select(CreditBlock).where(
            CreditBlock.team_id == team.id, CreditBlock.source == "plan", CreditBlock.expired_at.is_(None)
        )
    ).all()
    assert (block.period_start, block.reference) == (at(renewal_start), paid["id"])  # the renewal's period


def test_an_abandoned_checkout_that_expires_does_not_refresh_the_free_allowance(client, team) -> None:
    credits.spend(team.id, 90, key="used-most")
    db.session.commit()
    sub = subscription(team, status="incomplete")
    deliver(client, make_event("customer.subscription.created", sub))
    expired = stripe_has({**sub, "status": "incomplete_expired"})

    assert deliver(client, make_event("customer.subscription.updated", expired)).status_code == 200

    team = refresh(team)
    assert (team.plan_code, team.stripe_subscription_id) == ("free", None)
    assert plan_credits(team.id) == catalog.FREE_PLAN.monthly_credits - 90
    assert len([e for e in entries(team.id, "grant") if e.meta.get("plan") == "free"]) == 1


def test_a_small_refund_ends_only_the_holds_it_needs(client, team) -> None:
    purchase = buy(client, team)
    credits.spend(team.id, catalog.FREE_PLAN.monthly_credits, key="free-used")
    first = credits.hold(team.id, 1_000, key="job-1")
    second = credits.hold(team.id, 1_200, key="job-2")  # the pack is now fully held
    db.session.commit()

    refunded(client, purchase, 18)  # owes back 22 credits: the oldest hold covers them

    db.session.expire_all()
    assert purchased(team.id) == MEDIUM.total_credits - 22  # 1,200 of them still held by the second job
    assert credits.capture(team.id, second.id, 1_200, key="c-second").status == "captured"
    with pytest.raises(credits.HoldNotActive, match="refund or dispute"):
        credits.capture(team.id, first.id, 0, key="c-first")
    db.session.commit()
    assert purchased(team.id) == MEDIUM.total_credits - 22 - 1_200
    assert credits.verify() == []
