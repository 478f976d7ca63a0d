"""Overage and yearly plans against Stripe: the real SDK talking to the local stand-in, events signed and delivered.

Checkout adds the metered price to a monthly plan; a subscription carrying it lets the team opt in; the
scheduler reports the overage to the Billing Meter outside the spend's transaction, and a retry after a
failure (or after a crash between the send and the commit) never counts twice. A yearly invoice's refund
takes back what is left of its months and stops the drip.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from starter import catalog, credits, scheduler
from starter.billing import overage
from starter.extensions import db
from starter.models import InvoiceRecord, LedgerEntry, OverageSetting, OverageUsage, PaidYear, Team
from starter.periods import add_months
from tests import billing_fixtures
from tests.billing_fixtures import deliver, entries, plan_credits, real_stripe_config
from tests.stripe_events import make_event
from tests.stripe_factories import make_charge, make_invoice, make_invoice_line, make_price, make_subscription
from tests.stripe_standin import StripeStandIn
from tests.stripe_standin_meters import make_invoice_payment, metered_total

DAY = 86400
STARTER, PRO = catalog.PLANS["starter"], catalog.PLANS["pro"]
standin, owner, team = billing_fixtures.standin, billing_fixtures.owner, billing_fixtures.team


@pytest.fixture
def app_config(standin: StripeStandIn) -> dict[str, object]:
    return real_stripe_config(standin)


def checkout(auth, code: str, interval: str) -> Any:
    return auth.post(
        "/billing/checkout",
        {"kind": "plan", "code": code, "interval": interval, "attempt": f"a-{code}-{interval}"},
        token_from="/billing",
    )


def metered_price(standin: StripeStandIn, plan: catalog.Plan) -> dict[str, Any]:
    price = make_price(
        None,
        id=f"price_overage_{plan.code}",
        lookup_key=f"overage_{plan.code}",
        unit_amount_decimal=str(plan.overage_cents_per_1000 / 1000),
        recurring={"usage_type": "metered", "meter": "mtr_overage"},
    )
    return standin.put(price)


def subscribe_with_overage(client, standin: StripeStandIn, team: Team) -> dict[str, Any]:
    """A monthly Starter subscription whose second item is the metered overage price, paid."""
    team.stripe_customer_id = "cus_overage1"
    db.session.commit()
    start = int(time.time()) - DAY
    plan_price = make_price(STARTER.monthly_price_cents, id="price_starter", lookup_key="plan_starter")
    sub = make_subscription(team.stripe_customer_id, price=plan_price, period_start=start, period_end=start + 30 * DAY)
    metered = {**sub["items"]["data"][0], "id": "si_metered1", "price": metered_price(standin, STARTER)}
    metered.pop("quantity", None)
    sub["items"]["data"].append(metered)
    sub["metadata"] = {"team_id": str(team.id), "plan_code": "starter"}
    standin.put(sub)
    paid = make_invoice(
        sub["customer"], sub["id"], STARTER.monthly_price_cents, start, start + 30 * DAY, "subscription_create",
        price_id="price_starter", subscription_item=sub["items"]["data"][0]["id"],
        subscription_metadata=sub["metadata"],
    )  # fmt: skip
    assert deliver(client, make_event("customer.subscription.created", sub)).status_code == 200
    assert deliver(client, make_event("invoice.paid", paid)).status_code == 200
    return sub


def due_work(app, now: datetime | None = None) -> scheduler.RunSummary:
    db.session.commit()  # end this session's transaction first: SQLite has one writer at a time
    return scheduler.run_due_work(app, now)


def opt_in(auth, cap: int) -> Any:
    return auth.post("/billing/overage", {"enabled": "y", "cap": str(cap)}, token_from="/billing")


# ------------------------------------------------------------------------------------------ checkout


def test_checkout_of_a_monthly_plan_adds_the_metered_price_without_quantity(auth, standin, team) -> None:
    metered = metered_price(standin, STARTER)

    assert checkout(auth, "starter", "month").status_code == 303

    params = standin.last("POST", "/v1/checkout/sessions").params
    plan_line, metered_line = params["line_items"]
    assert plan_line["price_data"]["recurring"]["interval"] == "month" and plan_line["quantity"] == "1"
    assert metered_line == {"price": metered["id"]}  # Stripe refuses a quantity on a metered price


def test_checkout_of_a_yearly_plan_bills_the_year_and_adds_no_metered_price(auth, standin, team) -> None:
    metered_price(standin, PRO)

    assert checkout(auth, "pro", "year").status_code == 303

    params = standin.last("POST", "/v1/checkout/sessions").params
    [line] = params["line_items"]  # every item of a subscription bills on one interval: no metered item
    price_data = line["price_data"]
    assert price_data["recurring"]["interval"] == "year" and price_data["unit_amount"] == str(PRO.yearly_price_cents)
    assert params["metadata"]["interval"] == "year"


def test_an_unknown_interval_is_refused_before_stripe(auth, standin, team) -> None:
    assert checkout(auth, "pro", "decade").status_code == 400
    assert standin.find("POST", "/v1/checkout") == []


# ------------------------------------------------------------------------------------- meter reporting


def overage_team(auth, client, standin, team, *, cap: int = 1_000) -> int:
    subscribe_with_overage(client, standin, team)
    assert opt_in(auth, cap).status_code == 303
    db.session.expire_all()
    setting = db.session.get(OverageSetting, team.id)
    assert (setting.enabled, setting.cap_credits, setting.subscription_item_id) == (True, cap, "si_metered1")
    balance = credits.balance(team.id).available
    credits.spend(team.id, balance + 300, key="past-the-credits")
    db.session.commit()
    return team.id


def test_the_scheduler_reports_overage_to_the_meter(app, auth, client, standin, team) -> None:
    overage_team(auth, client, standin, team)

    summary = due_work(app)

    assert summary.overage_reported == 1 and summary.failed_batches == 0
    [event] = standin.meter_events.values()
    assert event["event_name"] == catalog.OVERAGE_METER_EVENT
    assert event["payload"] == {"stripe_customer_id": "cus_overage1", "value": "300"}
    [row] = db.session.scalars(select(OverageUsage)).all()
    assert event["identifier"] == row.identifier and row.reported_at is not None
    assert due_work(app).overage_reported == 0  # nothing left to send
    page = auth.client.get("/dashboard").get_data(as_text=True)
    assert "300 of 1,000 credits" in page and "$0.36" in page  # 300 credits at $1.20 per 1,000


def test_a_failed_report_is_retried_and_counted_once(app, auth, client, standin, team) -> None:
    overage_team(auth, client, standin, team)
    standin.fail_next("POST", "/v1/billing/meter_events", 500, times=3)  # the SDK's two retries fail too

    first = due_work(app)

    assert first.overage_reported == 0 and standin.meter_events == {}
    db.session.expire_all()
    [row] = db.session.scalars(select(OverageUsage)).all()
    assert (row.attempts, row.reported_at) == (1, None) and row.last_error

    second = due_work(app)

    assert second.overage_reported == 1
    assert metered_total(standin, catalog.OVERAGE_METER_EVENT, "cus_overage1", 0, 2**31) == 300


def test_a_row_stripe_refuses_for_good_does_not_hold_back_the_others(app, auth, client, standin, team) -> None:
    overage_team(auth, client, standin, team)
    fresh = db.session.scalars(select(OverageUsage)).one()
    # Usage from before a long outage: older than the 35 days a meter accepts, and first in line.
    stale = OverageUsage(
        team_id=team.id,
        entry_id=db.session.scalar(select(LedgerEntry.id).where(LedgerEntry.kind == "grant").limit(1)),
        credits=5,
        plan_code="starter",
        stripe_customer_id="cus_overage1",
        identifier="overage-stale",
        occurred_at=datetime.now(UTC) - timedelta(days=40),
        attempts=0,
    )
    db.session.add(stale)
    db.session.flush()
    db.session.execute(OverageUsage.__table__.update().where(OverageUsage.id == fresh.id).values(id=stale.id + 1))
    db.session.commit()

    assert due_work(app).overage_reported == 1

    assert metered_total(standin, catalog.OVERAGE_METER_EVENT, "cus_overage1", 0, 2**31) == 300
    db.session.expire_all()
    refused = db.session.scalars(select(OverageUsage).where(OverageUsage.identifier == "overage-stale")).one()
    assert refused.reported_at is None and refused.attempts == 1 and "refused" in refused.last_error
    assert due_work(app).overage_reported == 0  # tried again, still refused, and still nothing else is blocked


def test_a_crash_after_stripe_counted_the_event_does_not_count_it_twice(app, auth, client, standin, team) -> None:
    overage_team(auth, client, standin, team)
    assert overage.report_due() == 1
    db.session.rollback()  # the process died before committing: the row still says unreported
    standin._idempotent.clear()  # a day later: the SDK's idempotency key has expired at Stripe

    assert due_work(app).overage_reported == 1  # Stripe refuses the identifier: delivered

    assert len(standin.meter_events) == 1
    assert metered_total(standin, catalog.OVERAGE_METER_EVENT, "cus_overage1", 0, 2**31) == 300
    duplicate = standin.last("POST", "/v1/billing/meter_events")
    assert duplicate.status == 400 and "already exists with identifier" in duplicate.response["error"]["message"]
    db.session.expire_all()
    assert db.session.scalars(select(OverageUsage)).one().reported_at is not None


def test_a_renewal_invoice_with_a_metered_line_grants_the_plan(app, auth, client, standin, team) -> None:
    sub = subscribe_with_overage(client, standin, team)
    item, metered = sub["items"]["data"]
    start = item["current_period_end"]
    renewal = make_invoice(
        sub["customer"], sub["id"], STARTER.monthly_price_cents + 36, start, start + 30 * DAY, "subscription_cycle",
        price_id="price_starter", subscription_item=item["id"], subscription_metadata=sub["metadata"],
    )  # fmt: skip
    usage = make_invoice_line(
        renewal["id"], metered["price"], 36, start - 30 * DAY, start,
        subscription=sub["id"], subscription_item=metered["id"], quantity=300,
    )  # fmt: skip
    renewal["lines"]["data"].insert(0, usage)  # the metered line first: it must not pass for the plan
    for each in sub["items"]["data"]:
        each.update(current_period_start=start, current_period_end=start + 30 * DAY)
    standin.put(sub)

    event = make_event("invoice.paid", renewal)
    assert deliver(client, event).status_code == 200

    db.session.expire_all()
    assert db.session.get(Team, team.id).current_period_start.timestamp() == start
    grants = [e for e in entries(team.id, "grant") if e.meta.get("plan") == "starter"]
    assert len(grants) == 2 and grants[-1].amount == STARTER.monthly_credits
    assert billing_fixtures.stored_event(event["id"]).error is None


# ------------------------------------------------------------------------------------------ yearly refund


def test_a_refunded_yearly_invoice_takes_back_its_credits_and_stops_the_drip(app, client, standin, team) -> None:
    team.stripe_customer_id = "cus_yearly1"
    db.session.commit()
    start = int(time.time()) - DAY
    end = int(add_months(datetime.fromtimestamp(start, UTC), 12).timestamp())
    price = make_price(PRO.yearly_price_cents, id="price_pro_yearly", lookup_key="plan_pro_yearly", interval="year")
    sub = standin.put(make_subscription(team.stripe_customer_id, price=price, period_start=start, period_end=end,
                                        metadata={"team_id": str(team.id), "plan_code": "pro"}))  # fmt: skip
    paid = make_invoice(
        sub["customer"], sub["id"], PRO.yearly_price_cents, start, end, "subscription_create",
        price_id=price["id"], subscription_item=sub["items"]["data"][0]["id"], subscription_metadata=sub["metadata"],
    )  # fmt: skip
    assert deliver(client, make_event("customer.subscription.created", sub)).status_code == 200
    assert deliver(client, make_event("invoice.paid", paid)).status_code == 200
    assert plan_credits(team.id) == PRO.monthly_credits
    credits.spend(team.id, 1_000, key="used-some")
    db.session.commit()

    standin.put(make_invoice_payment(paid["id"], "pi_yearly1", PRO.yearly_price_cents))
    charge = make_charge("pi_yearly1", PRO.yearly_price_cents, PRO.yearly_price_cents, customer="cus_yearly1")
    assert deliver(client, make_event("charge.refunded", charge)).status_code == 200

    [clawback] = entries(team.id, "clawback")
    assert clawback.amount == -(PRO.monthly_credits - 1_000) and clawback.meta["shortfall"] == 0
    assert plan_credits(team.id) == 0
    year = db.session.scalar(select(PaidYear).where(PaidYear.team_id == team.id))
    assert year.stopped_reason == "refunded" and year.next_grant_at is None
    next_month = add_months(year.starts_at, 1) + timedelta(hours=1)
    assert due_work(app, next_month).yearly_months == 0
    # The same refund delivered again (a new event for it) takes nothing more.
    assert deliver(client, make_event("charge.refunded", charge)).status_code == 200
    assert len(entries(team.id, "clawback")) == 1
    assert credits.verify() == []
    # Its receipt says so, and a late redelivery of the invoice.paid does not make it "paid" again.
    record = db.session.scalar(select(InvoiceRecord).where(InvoiceRecord.stripe_invoice_id == paid["id"]))
    assert record.status == "refunded"
    assert deliver(client, make_event("invoice.paid", paid)).status_code == 200
    db.session.expire_all()
    assert db.session.get(InvoiceRecord, record.id).status == "refunded"
