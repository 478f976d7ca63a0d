"""Billing lifecycles in any delivery order: signed events in, the database state out (black-box).

Each lifecycle (tests/stripe_lifecycles.py) plays a purchase or a subscription at the Stripe stand-in the way
Stripe plays it, then its events are POSTed to /webhooks/stripe as sent, reversed, shuffled and duplicated. The
app fetches Stripe's current state from the stand-in through the real SDK. Every delivery must answer 200 and
every ordering must end in the lifecycle's expected state, which is written out from the domain rules.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from starter import catalog, credits
from starter.extensions import db
from starter.models import LedgerEntry, StripeEvent, Team
from tests import billing_fixtures
from tests.billing_fixtures import deliver, real_stripe_config
from tests.stripe_lifecycles import FREE, LIFECYCLES, MEDIUM, ORDERINGS, PRO, STARTER, Lifecycle, State, World, arrange
from tests.stripe_standin import StripeApiError, StripeStandIn, new_id
from tests.stripe_standin_billing import MONTH, StripeBilling
from tests.stripe_wire import Json

standin = billing_fixtures.standin  # the fixture
CONFIGURED = {"starter": "price_configured_starter", "pro": "price_configured_pro"}


@pytest.fixture
def catalog_style() -> str:
    """How the plan prices say which plan they are: ``both`` (lookup key and product metadata, like
    ``flask billing sync``), ``lookup_key``, ``product_metadata`` or ``configured`` (STRIPE_PRICE_PLAN_*)."""
    return "both"


@pytest.fixture
def app_config(standin: StripeStandIn, catalog_style: str, request: pytest.FixtureRequest) -> dict[str, object]:
    config = real_stripe_config(standin)
    if catalog_style == "configured":
        config.update({f"STRIPE_PRICE_PLAN_{code.upper()}": price for code, price in CONFIGURED.items()})
    if request.node.get_closest_marker("postgres"):
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 20, "max_overflow": 10, "pool_timeout": 60}
    return config


@pytest.fixture
def world(app: Flask, fast_user: Any, standin: StripeStandIn, catalog_style: str) -> World:
    """A user's personal team on the free plan, already a Stripe customer; the catalog's prices at Stripe."""
    user = fast_user("owner@example.com")
    team = db.session.get(Team, user.current_team_id)
    customer = new_id("cus_", 14)
    team.stripe_customer_id = customer
    db.session.commit()
    billing = StripeBilling(standin)
    billing.customer(customer, email=user.email, team_id=team.id)
    prices = {
        plan.code: billing.plan_price(
            plan.code,
            plan.monthly_price_cents,
            name=plan.product_name,
            lookup_key=catalog_style in ("both", "lookup_key"),
            product_metadata=catalog_style in ("both", "product_metadata"),
            price_id=CONFIGURED[plan.code] if catalog_style == "configured" else None,
        )
        for plan in catalog.PLANS.values()
        if not plan.is_free
    }
    prices |= {p.code: billing.pack_price(p.code, p.price_cents, name=p.product_name) for p in catalog.PACKS.values()}
    assert credits.balance(team.id).plan == FREE
    return World(billing, team.id, user.id, customer, team.subscription_status, prices)


# ----------------------------------------------------------------------------------------- helpers


def deliver_all(client: FlaskClient, events: list[Json]) -> None:
    for event in events:
        response = deliver(client, event)
        assert response.status_code == 200, (
            f"{event['type']} {event['id']}: {response.status_code} {response.get_data(as_text=True)}"
        )


def _epoch(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


def state_of(team_id: int, expected: State) -> State:
    db.session.expire_all()
    team = db.session.get(Team, team_id)
    balance = credits.balance(team_id)
    return State(
        plan_code=team.plan_code,
        subscription_status=team.subscription_status,
        subscription_id=team.stripe_subscription_id,
        cancel_at_period_end=bool(team.cancel_at_period_end),
        plan=balance.plan,
        purchased=balance.purchased,
        other=balance.other,
        held=balance.held,
        plan_expires_at=None if expected.plan_expires_at is None else _epoch(balance.next_expiry_at),
    )


def story(team_id: int) -> str:
    """The ledger and the stored events, for a failure message."""
    db.session.expire_all()
    ledger = db.session.scalars(select(LedgerEntry).where(LedgerEntry.team_id == team_id).order_by(LedgerEntry.id))
    lines = [f"  {e.kind:9} {e.amount:>7} {e.description or ''} {e.meta or ''}" for e in ledger]
    stored = db.session.scalars(select(StripeEvent).order_by(StripeEvent.received_at, StripeEvent.id))
    lines += [f"  {s.type:40} {s.error or ''}" for s in stored if s.error]
    return "\n".join(lines)


def assert_state(team_id: int, expected: State, when: str) -> None:
    actual = state_of(team_id, expected)
    assert actual == expected, f"{when}\n{story(team_id)}"
    assert credits.verify() == [], when


def play(client: FlaskClient, world: World, lifecycle: Lifecycle, ordering: str) -> None:
    """Run the lifecycle at the stand-in and deliver its events in `ordering`; check the end state."""
    deliver_all(client, [event for step in lifecycle.setup for event in step.run()])
    if lifecycle.after_setup:
        lifecycle.after_setup()
    if ordering == "as_sent":
        for step in lifecycle.steps:
            deliver_all(client, step.run())
            if step.check is not None:
                assert_state(world.team_id, step.check, f"{lifecycle.name}: after {step.name!r}")
    else:
        events = [event for step in lifecycle.steps for event in step.run()]
        deliver_all(client, arrange(events, ordering))
    assert_state(world.team_id, lifecycle.expected, f"{lifecycle.name} delivered {ordering}")
    if lifecycle.final_check:
        lifecycle.final_check()


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("name", list(LIFECYCLES))
def test_a_lifecycle_ends_in_its_state_in_any_delivery_order(client, world, name, ordering) -> None:
    play(client, world, LIFECYCLES[name](world), ordering)


@pytest.mark.parametrize("catalog_style", ["lookup_key", "product_metadata", "configured"])
@pytest.mark.parametrize("ordering", ["as_sent", "reversed"])
@pytest.mark.parametrize("name", ["subscription_checkout", "upgrade", "downgrade_at_period_end"])
def test_the_plan_comes_from_the_price_whatever_names_it(client, world, name, ordering, catalog_style) -> None:
    play(client, world, LIFECYCLES[name](world), ordering)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "name", ["upgrade", "two_subscriptions", "failed_payment_then_retry", "refund_then_won_dispute"]
)
def test_concurrent_duplicated_deliveries_end_in_the_same_state(app, world, name) -> None:
    lifecycle = LIFECYCLES[name](world)
    events = [event for step in lifecycle.steps for event in step.run()]
    deliveries = events * 3
    random.Random(7).shuffle(deliveries)
    barrier = threading.Barrier(8)

    def post(event: Json) -> tuple[str, int, str]:
        try:
            barrier.wait(timeout=0.5)
        except threading.BrokenBarrierError:
            pass  # later deliveries start as soon as a worker is free
        with app.app_context():
            try:
                response = deliver(app.test_client(), event)
                return event["type"], response.status_code, response.get_data(as_text=True)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, deliveries))

    assert [a for a in answers if a[1] != 200] == []
    assert_state(world.team_id, lifecycle.expected, f"{name} delivered concurrently")


# ------------------------------------------------- the stand-in plays Stripe's rules (no app involved)


@pytest.fixture
def sdk(standin: StripeStandIn) -> stripe.StripeClient:
    return stripe.StripeClient(api_key="sk_test_x", base_addresses={"api": standin.url})


@pytest.fixture
def bare(standin: StripeStandIn) -> tuple[StripeBilling, dict[str, Json]]:
    billing = StripeBilling(standin)
    billing.customer("cus_standin1", email="a@example.com", team_id=1)
    prices = {code: billing.plan_price(code, plan.monthly_price_cents) for code, plan in catalog.PLANS.items()}
    prices["medium"] = billing.pack_price("medium", MEDIUM.price_cents)
    return billing, prices


def _subscribe(billing: StripeBilling, price: Json, start: int, sub_id: str | None = None) -> list[Json]:
    meta = {"team_id": "1", "plan_code": "starter"}
    session = billing.open_checkout("cus_standin1", "subscription", price, metadata={}, subscription_metadata=meta)
    return billing.complete_subscription_checkout(session["id"], start=start, subscription_id=sub_id)


def test_standin_lists_a_customers_subscriptions_newest_first_and_refuses_a_five_level_expansion(sdk, bare) -> None:
    billing, prices = bare
    now = billing.clock()
    _subscribe(billing, prices["starter"], now - 3600, "sub_old")
    _subscribe(billing, prices["pro"], now, "sub_new")
    billing.cancel_now("sub_old")

    listed = sdk.v1.subscriptions.list(params={"customer": "cus_standin1", "status": "all", "limit": 100})
    default = sdk.v1.subscriptions.list(params={"customer": "cus_standin1"})
    other = sdk.v1.subscriptions.list(params={"customer": "cus_nobody", "status": "all"})
    one = sdk.v1.subscriptions.retrieve("sub_new", params={"expand": ["items.data.price.product"]})
    price = sdk.v1.prices.retrieve(prices["pro"]["id"], params={"expand": ["product"]})

    assert [s.id for s in listed.data] == ["sub_new", "sub_old"] and listed.data[1].status == "canceled"
    assert [s.id for s in default.data] == ["sub_new"] and other.data == []
    assert one["items"].data[0].price.product.metadata["plan_code"] == "pro"
    assert price.product.metadata["plan_code"] == "pro" and price.lookup_key == "plan_pro"
    with pytest.raises(stripe.InvalidRequestError, match="more than 4 levels"):
        sdk.v1.subscriptions.list(params={"customer": "cus_standin1", "expand": ["data.items.data.price.product"]})
    four = sdk.v1.subscriptions.list(params={"customer": "cus_standin1", "expand": ["data.items.data.price"]})
    assert four.data[0]["items"].data[0].price.id == prices["pro"]["id"]


def test_standin_subscription_checkout_events_share_a_second_and_snapshot_each_moment(bare) -> None:
    billing, prices = bare
    events = _subscribe(billing, prices["pro"], billing.clock(), "sub_a")

    types = [e["type"] for e in events]
    assert types[0] == "customer.subscription.created" and types[-1] == "checkout.session.completed"
    assert {"invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"} <= set(types)
    created, updated = events[0], events[types.index("customer.subscription.updated")]
    assert created["data"]["object"]["status"] == "incomplete" and updated["data"]["object"]["status"] == "active"
    assert max(e["created"] for e in events) - min(e["created"] for e in events) <= 1
    assert billing.obj("sub_a")["status"] == "active"


def test_standin_upgrade_credits_unused_time_first_and_bills_the_new_period(bare) -> None:
    billing, prices = bare
    now = billing.clock()
    start = now - 10 * 86_400
    _subscribe(billing, prices["starter"], start, "sub_a")

    events = billing.change_price("sub_a", prices["pro"]["id"], at=now)

    sub = billing.obj("sub_a")
    item = sub["items"]["data"][0]
    assert item["price"]["id"] == prices["pro"]["id"] and sub["metadata"]["plan_code"] == "starter"
    assert (item["current_period_start"], item["current_period_end"]) == (now, now + MONTH)
    invoice = next(e for e in events if e["type"] == "invoice.paid")["data"]["object"]
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["parent"]["subscription_details"]["metadata"]["plan_code"] == "starter"  # a stale snapshot
    credit, charge = invoice["lines"]["data"]
    assert credit["parent"]["subscription_item_details"]["proration"] is True and credit["amount"] < 0
    assert credit["pricing"]["price_details"]["price"] == prices["starter"]["id"]
    assert credit["period"] == {"start": now, "end": start + MONTH}
    assert charge["parent"]["subscription_item_details"]["proration"] is False
    assert (charge["amount"], charge["period"]) == (PRO.monthly_price_cents, {"start": now, "end": now + MONTH})
    assert invoice["amount_paid"] == PRO.monthly_price_cents + credit["amount"] == 4_900 - 1_267


def test_standin_changes_nothing_at_period_end_requests_until_the_period_ends(bare) -> None:
    billing, prices = bare
    start = billing.clock() - MONTH + 300
    _subscribe(billing, prices["pro"], start, "sub_a")

    billing.schedule_price_change("sub_a", prices["starter"]["id"])
    assert billing.obj("sub_a")["items"]["data"][0]["price"]["id"] == prices["pro"]["id"]
    renewal = billing.end_period("sub_a")

    item = billing.obj("sub_a")["items"]["data"][0]
    assert item["price"]["id"] == prices["starter"]["id"] and item["current_period_start"] == start + MONTH
    paid = next(e for e in renewal if e["type"] == "invoice.paid")["data"]["object"]
    assert paid["billing_reason"] == "subscription_cycle" and paid["amount_paid"] == STARTER.monthly_price_cents
    assert paid["lines"]["data"][0]["period"] == {"start": start + MONTH, "end": start + 2 * MONTH}


def test_standin_disputes_move_money_only_with_balance_transactions_and_block_refunds(sdk, bare) -> None:
    billing, prices = bare
    session = billing.open_checkout("cus_standin1", "payment", prices["medium"], metadata={}, payment_metadata={})
    billing.complete_payment_checkout(session["id"])
    charge = billing.charge_of(session["id"])
    billing.refund(charge, 900)

    opened = billing.open_dispute(charge)
    billing.submit_evidence(billing.dispute_of(charge))
    closed = billing.close_dispute(billing.dispute_of(charge), "won")

    assert [e["type"] for e in opened] == ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
    assert [t["amount"] for t in opened[1]["data"]["object"]["balance_transactions"]] == [-MEDIUM.price_cents]
    assert [e["type"] for e in closed] == ["charge.dispute.closed", "charge.dispute.funds_reinstated"]
    assert [t["amount"] for t in closed[1]["data"]["object"]["balance_transactions"]] == [-1_800, 1_800]
    with pytest.raises(StripeApiError, match="charged back"):
        billing.refund(charge)
    fetched = sdk.v1.charges.retrieve(charge, params={"expand": ["refunds"]})
    assert (fetched.amount_refunded, fetched.customer, fetched.disputed) == (900, "cus_standin1", True)
    assert [r.amount for r in fetched.refunds.data] == [900]
    assert "refunds" not in sdk.v1.charges.retrieve(charge)  # not sent unless asked for


def test_orderings_are_permutations_with_the_promised_duplicates() -> None:
    events = [{"id": f"evt_{i}"} for i in range(6)]
    for ordering in ORDERINGS[1:-1]:
        assert sorted(e["id"] for e in arrange(events, ordering)) == [e["id"] for e in events]
    duplicated = [e["id"] for e in arrange(events, "duplicated")]
    assert sorted(duplicated) == sorted([e["id"] for e in events] * 2 + ["evt_0"]) and duplicated[-1] == "evt_0"
    assert arrange(events, "shuffled_1") != arrange(events, "shuffled_2")
