"""Billing with a real Stripe API (the local stand-in): Checkout, fulfilment, the success page, the portal, sync.

The app runs with a secret key and talks to the stand-in through the official SDK; webhooks arrive signed at
POST /webhooks/stripe. See tests/billing_fixtures.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from starter import catalog, credits
from starter.extensions import db
from starter.models import LedgerEntry, Membership, Purchase, StripeEvent, Team
from tests import billing_fixtures
from tests.billing_fixtures import (
    buy_pack,
    deliver,
    purchased,
    real_stripe_config,
    session_id_from,
    start_checkout,
)
from tests.conftest import AuthActions
from tests.stripe_events import make_event
from tests.stripe_standin import StripeStandIn, make_price

MEDIUM = catalog.PACKS["medium"]

# Fixtures of tests/billing_fixtures.py used here (pytest finds them by their function names).
extra_config, owner, standin, team = (
    billing_fixtures.extra_config,
    billing_fixtures.owner,
    billing_fixtures.standin,
    billing_fixtures.team,
)


@pytest.fixture
def app_config(standin: StripeStandIn, extra_config: dict[str, object]) -> dict[str, object]:
    return {**real_stripe_config(standin), **extra_config}


def login_member(app: Flask, make_user: Any, team: Team, role: str = "member") -> AuthActions:
    """A second browser, logged in as a member (by default a plain one) of ``team``."""
    member = make_user(f"{role}@example.com")
    db.session.add(Membership(team_id=team.id, user_id=member.id, role=role))
    member.current_team_id = team.id
    db.session.commit()
    actions = AuthActions(app.test_client())
    assert actions.login(f"{role}@example.com").status_code in (302, 303)
    return actions


# ------------------------------------------------------------------------------------------ checkout


def test_pack_checkout_sends_the_catalog_price_to_stripe(auth, standin, team, owner) -> None:
    response = start_checkout(auth, "pack", "medium", attempt="click1")

    assert response.status_code == 303
    sent = standin.last("POST", "/v1/checkout/sessions")
    assert response.headers["Location"] == sent.response["url"]
    params = sent.params
    assert params["mode"] == "payment"
    assert params["line_items"] == [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": str(MEDIUM.price_cents),
                "product_data": {"name": "Medium pack: 2,200 credits", "metadata": {"pack_code": "medium"}},
            },
            "quantity": "1",
        }
    ]
    assert params["metadata"] == {"team_id": str(team.id), "kind": "pack", "code": "medium", "user_id": str(owner.id)}
    assert params["payment_intent_data"]["metadata"]["team_id"] == str(team.id)
    assert "/billing/success?session_id={CHECKOUT_SESSION_ID}" in params["success_url"]
    assert params["cancel_url"].endswith("/billing/cancel")
    assert sent.header("Idempotency-Key")

    # The team's customer was created first, once, carrying the team id, and is the session's customer.
    [customer_request] = standin.find("POST", "/v1/customers")
    assert customer_request.params["metadata"] == {"team_id": str(team.id)}
    assert customer_request.params["email"] == owner.email
    assert customer_request.header("Idempotency-Key")
    db.session.refresh(team)
    assert team.stripe_customer_id == customer_request.response["id"]
    assert params["customer"] == team.stripe_customer_id


def test_a_retried_click_reuses_the_session_and_a_new_click_does_not(auth, standin, team) -> None:
    first = start_checkout(auth, "pack", "medium", attempt="click1")
    again = start_checkout(auth, "pack", "medium", attempt="click1")
    other = start_checkout(auth, "pack", "medium", attempt="click2")

    keys = [request.header("Idempotency-Key") for request in standin.find("POST", "/v1/checkout/sessions")]
    assert keys[0] == keys[1] != keys[2]
    assert first.headers["Location"] == again.headers["Location"] != other.headers["Location"]
    assert len(standin.find("POST", "/v1/customers")) == 1  # the customer is created lazily, once


def test_plan_checkout_is_a_subscription_with_a_recurring_price(auth, standin, team) -> None:
    response = start_checkout(auth, "plan", "pro")

    assert response.status_code == 303
    params = standin.last("POST", "/v1/checkout/sessions").params
    assert params["mode"] == "subscription"
    price_data = params["line_items"][0]["price_data"]
    assert price_data["unit_amount"] == str(catalog.PLANS["pro"].monthly_price_cents)
    assert price_data["recurring"] == {"interval": "month"}
    assert params["subscription_data"]["metadata"] == {"team_id": str(team.id), "plan_code": "pro"}
    assert params["metadata"]["kind"] == "plan"
    assert "payment_intent_data" not in params


@pytest.mark.parametrize("extra_config", [{"STRIPE_PRICE_PACK_MEDIUM": "price_123"}])
def test_a_configured_price_replaces_the_inline_price(auth, standin, team) -> None:
    standin.put(make_price(MEDIUM.price_cents, interval=None, id="price_123"))

    response = start_checkout(auth, "pack", "medium")

    assert response.status_code == 303
    assert standin.last("POST", "/v1/checkout/sessions").params["line_items"] == [
        {"price": "price_123", "quantity": "1"}
    ]


def test_an_unknown_pack_or_plan_is_refused_before_stripe(auth, standin, team) -> None:
    for kind, code in [("pack", "huge"), ("plan", "enterprise"), ("bundle", "medium"), ("pack", "")]:
        assert start_checkout(auth, kind, code).status_code == 400, (kind, code)
    for attempt in ("", "has space", "x" * 65):  # the attempt makes the idempotency key: it must be real
        assert start_checkout(auth, "pack", "small", attempt).status_code == 400, attempt
    # Posted without its attempt at all: refused, not given a key the server makes up.
    missing = auth.post("/billing/checkout", {"kind": "pack", "code": "small"}, token_from="/billing")
    assert missing.status_code == 400
    assert standin.requests == []


def test_a_member_cannot_buy_or_open_the_portal(app, make_user, standin, team) -> None:
    member = login_member(app, make_user, team)

    assert start_checkout(member).status_code == 403
    assert member.post("/billing/portal", token_from="/billing").status_code == 403
    assert standin.requests == []


def test_checkout_without_csrf_token_is_refused(client, standin, team) -> None:
    response = client.post("/billing/checkout", data={"kind": "pack", "code": "medium", "attempt": "x"})

    assert response.status_code == 400
    assert standin.requests == []


def test_a_paying_team_choosing_a_plan_goes_to_the_portal(auth, standin, team) -> None:
    team.stripe_subscription_id, team.subscription_status = "sub_existing", "active"
    db.session.commit()

    response = start_checkout(auth, "plan", "starter")

    assert response.status_code == 303
    portal = standin.last("POST", "/v1/billing_portal/sessions")
    assert response.headers["Location"] == portal.response["url"]
    assert portal.params["return_url"].endswith("/billing")
    assert standin.find("POST", "/v1/checkout/sessions") == []


def test_an_admin_can_buy_and_open_the_portal(app, make_user, standin, team) -> None:
    admin = login_member(app, make_user, team, role="admin")

    assert start_checkout(admin).status_code == 303
    subscribed(team)
    assert admin.post("/billing/portal", token_from="/billing").status_code == 303
    assert standin.last("POST", "/v1/checkout/sessions").params["metadata"]["team_id"] == str(team.id)


def subscribed(team: Team) -> Team:
    """The portal manages a subscription; these tests are about opening it, not about the subscription."""
    team.stripe_subscription_id, team.subscription_status = "sub_portal_test", "active"
    db.session.commit()
    return team


def test_portal_redirects_an_owner_to_stripe(auth, standin, team) -> None:
    subscribed(team)
    response = auth.post("/billing/portal", token_from="/billing")

    assert response.status_code == 303
    portal = standin.last("POST", "/v1/billing_portal/sessions")
    assert response.headers["Location"] == portal.response["url"]
    db.session.refresh(team)
    assert portal.params["customer"] == team.stripe_customer_id
    assert portal.header("Idempotency-Key").startswith(f"portal:{team.stripe_customer_id}:")


def test_stripe_failing_shows_an_error_and_a_retry_works(auth, standin, team) -> None:
    standin.fail_next("POST", "/v1/checkout/sessions", 500, should_retry=False)

    response = start_checkout(auth, "pack", "medium", attempt="click1")

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/billing")
    page = auth.client.get("/billing").get_data(as_text=True)
    assert "Payments are unavailable right now" in page
    # Bug 9: the customer id was committed before the Checkout call failed, so it survives.
    db.session.expire_all()
    assert db.session.get(Team, team.id).stripe_customer_id == standin.find("POST", "/v1/customers")[0].response["id"]
    retry = start_checkout(auth, "pack", "medium", attempt="click1")
    assert retry.status_code == 303 and retry.headers["Location"].startswith(standin.url)
    assert len(standin.find("POST", "/v1/customers")) == 1  # the retry did not ask for a customer again


def test_the_portal_failing_shows_an_error(auth, standin, team) -> None:
    subscribed(team)
    standin.fail_next("POST", "/v1/billing_portal/sessions", 400, message="No configuration")

    response = auth.post("/billing/portal", token_from="/billing", follow_redirects=True)

    assert response.status_code == 200
    assert "Payments are unavailable right now" in response.get_data(as_text=True)


# ------------------------------------------------------------------------------------ fulfilment


def test_a_pack_bought_end_to_end(auth, standin, team) -> None:
    before = credits.balance(team.id)

    session = buy_pack(auth, standin, "medium")

    assert purchased(team.id) == MEDIUM.total_credits == MEDIUM.credits + MEDIUM.bonus_credits
    assert credits.balance(team.id).plan == before.plan
    purchase = db.session.scalar(select(Purchase).where(Purchase.team_id == team.id))
    assert (purchase.pack_code, purchase.credits, purchase.amount_cents) == ("medium", MEDIUM.total_credits, 1800)
    assert purchase.stripe_checkout_session_id == session["id"]
    assert purchase.stripe_payment_intent_id == session["payment_intent"]
    assert credits.verify() == []

    page = auth.client.get(f"/billing/success?session_id={session['id']}")

    assert page.status_code == 200
    assert "2,200 credits added" in page.get_data(as_text=True)
    assert purchased(team.id) == MEDIUM.total_credits
    assert db.session.scalar(select(func.count()).select_from(Purchase)) == 1


def test_a_plan_bought_end_to_end(auth, standin, team) -> None:
    response = start_checkout(auth, "plan", "pro")
    session = standin.complete_checkout(session_id_from(response.headers["Location"]))
    subscription, invoice = standin.get(session["subscription"]), standin.get(session["invoice"])

    for event_type, obj in [
        ("customer.subscription.created", subscription),
        ("checkout.session.completed", session),
        ("invoice.paid", invoice),
    ]:
        assert deliver(auth.client, make_event(event_type, obj)).status_code == 200

    db.session.expire_all()
    assert (team.plan_code, team.subscription_status) == ("pro", "active")
    assert team.stripe_subscription_id == subscription["id"]
    assert credits.balance(team.id).plan == catalog.PLANS["pro"].monthly_credits
    assert all(event.error is None for event in db.session.scalars(select(StripeEvent)))
    page = auth.client.get(f"/billing/success?session_id={session['id']}").get_data(as_text=True)
    assert "Welcome to your new plan" in page
    assert credits.verify() == []


def test_the_same_event_twice_grants_once(auth, standin, team) -> None:
    response = start_checkout(auth)
    session = standin.complete_checkout(session_id_from(response.headers["Location"]))
    event = make_event("checkout.session.completed", session)

    first, second = deliver(auth.client, event), deliver(auth.client, event)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json()["duplicate"] is True
    assert purchased(team.id) == MEDIUM.total_credits
    assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 1


def test_completed_and_async_succeeded_for_one_session_grant_once(auth, standin, team) -> None:
    response = start_checkout(auth)
    session = standin.complete_checkout(session_id_from(response.headers["Location"]))

    assert deliver(auth.client, make_event("checkout.session.completed", session)).status_code == 200
    assert deliver(auth.client, make_event("checkout.session.async_payment_succeeded", session)).status_code == 200

    assert purchased(team.id) == MEDIUM.total_credits
    grants = db.session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.idempotency_key == f"checkout:{session['id']}")
    )
    assert grants == 1


def test_an_unpaid_completed_session_waits_for_async_success(auth, standin, team) -> None:
    response = start_checkout(auth)
    session_id = session_id_from(response.headers["Location"])
    session = standin.complete_checkout(session_id, payment_status="unpaid")

    assert deliver(auth.client, make_event("checkout.session.completed", session)).status_code == 200
    assert purchased(team.id) == 0
    assert "Payment processing" in auth.client.get(f"/billing/success?session_id={session_id}").get_data(as_text=True)

    paid = {**session, "payment_status": "paid", "payment_intent": "pi_delayed"}
    assert deliver(auth.client, make_event("checkout.session.async_payment_succeeded", paid)).status_code == 200
    assert purchased(team.id) == MEDIUM.total_credits


def test_the_success_page_before_the_webhook_grants_and_the_webhook_adds_nothing(auth, standin, team) -> None:
    response = start_checkout(auth)
    session = standin.complete_checkout(session_id_from(response.headers["Location"]))

    page = auth.client.get(f"/billing/success?session_id={session['id']}")

    assert "2,200 credits added" in page.get_data(as_text=True)
    assert purchased(team.id) == MEDIUM.total_credits
    webhook = deliver(auth.client, make_event("checkout.session.completed", session))
    assert webhook.status_code == 200
    assert purchased(team.id) == MEDIUM.total_credits
    assert db.session.scalar(select(func.count()).select_from(Purchase)) == 1
    assert credits.verify() == []


def test_the_success_page_of_an_open_session_grants_nothing(auth, standin, team) -> None:
    session_id = session_id_from(start_checkout(auth).headers["Location"])

    page = auth.client.get(f"/billing/success?session_id={session_id}")

    assert page.status_code == 200
    assert purchased(team.id) == 0


def test_the_success_page_of_another_teams_session_is_not_found(app, auth, standin, team, make_user) -> None:
    session = buy_pack(auth, standin)
    stranger = AuthActions(app.test_client())
    make_user("stranger@example.com")
    stranger.login("stranger@example.com")

    assert stranger.client.get(f"/billing/success?session_id={session['id']}").status_code == 404
    assert auth.client.get("/billing/success?session_id=cs_test_unknown").status_code == 404
    assert auth.client.get("/billing/success?session_id=nonsense").status_code == 404


# ------------------------------------------------------------------------------------- billing sync


def test_billing_sync_creates_prices_once(runner, standin) -> None:
    first = runner.invoke(args=["billing", "sync"])

    assert first.exit_code == 0, first.output
    prices = {p["lookup_key"]: p for p in standin.objects.values() if p.get("object") == "price"}
    paid = [p for p in catalog.PLANS.values() if not p.is_free]
    expected = (
        {f"pack_{code}" for code in catalog.PACKS}
        | {f"plan_{p.code}" for p in paid}
        | {f"plan_{p.code}_yearly" for p in paid if p.sold_yearly}
        | {f"overage_{p.code}" for p in paid if p.has_overage}
    )
    assert set(prices) == expected
    assert prices["pack_medium"]["unit_amount"] == MEDIUM.price_cents and prices["pack_medium"]["recurring"] is None
    assert prices["plan_pro"]["recurring"]["interval"] == "month"
    pro = catalog.PLANS["pro"]
    assert prices["plan_pro_yearly"]["recurring"]["interval"] == "year"
    assert prices["plan_pro_yearly"]["unit_amount"] == pro.yearly_price_cents
    # The overage price is metered, per credit, on the one Billing Meter the sync created.
    (meter,) = [o for o in standin.objects.values() if o.get("object") == "billing.meter"]
    assert meter["event_name"] == catalog.OVERAGE_METER_EVENT and meter["default_aggregation"]["formula"] == "sum"
    overage = prices["overage_pro"]
    assert overage["recurring"]["usage_type"] == "metered" and overage["recurring"]["meter"] == meter["id"]
    assert float(overage["unit_amount_decimal"]) * 1000 == pro.overage_cents_per_1000
    assert f"STRIPE_PRICE_PACK_MEDIUM={prices['pack_medium']['id']}" in first.output
    assert f"STRIPE_PRICE_PLAN_PRO={prices['plan_pro']['id']}" in first.output
    assert f"STRIPE_PRICE_PLAN_PRO_YEARLY={prices['plan_pro_yearly']['id']}" in first.output
    assert f"STRIPE_PRICE_OVERAGE_PRO={overage['id']}" in first.output
    assert first.output.count("# created") == len(expected)
    created = len(standin.requests)

    second = runner.invoke(args=["billing", "sync"])

    assert second.exit_code == 0, second.output
    assert second.output.count("# unchanged") == len(expected)
    later = standin.requests[created:]
    assert [r.path for r in later if r.method == "POST" and r.path in ("/v1/products", "/v1/prices")] == []
    assert [r for r in later if r.method == "POST" and r.path == "/v1/billing/meters"] == []  # found by name


def test_billing_sync_replaces_a_price_whose_amount_changed(runner, standin) -> None:
    assert runner.invoke(args=["billing", "sync"]).exit_code == 0
    synced = next(p for p in standin.objects.values() if p.get("lookup_key") == "pack_small")
    # Someone moves the lookup key to a 9.99 price in the dashboard; the next sync puts the catalog's back.
    standin.objects[synced["id"]]["lookup_key"] = None
    edited = standin.put(make_price(999, interval=None, lookup_key="pack_small", product=synced["product"]))

    result = runner.invoke(args=["billing", "sync"])

    assert result.exit_code == 0, result.output
    assert result.output.count("# updated") == 1
    current = next(p for p in standin.objects.values() if p.get("lookup_key") == "pack_small")
    assert current["id"] not in (synced["id"], edited["id"])
    assert current["unit_amount"] == catalog.PACKS["small"].price_cents and current["active"] is True
    assert f"STRIPE_PRICE_PACK_SMALL={current['id']}  # updated" in result.output
    assert standin.get(edited["id"])["active"] is False


@pytest.mark.parametrize("app_config", [{}])
def test_billing_sync_in_test_mode_refuses(runner) -> None:
    result = runner.invoke(args=["billing", "sync"])

    assert result.exit_code != 0
    assert "STRIPE_SECRET_KEY" in result.output
