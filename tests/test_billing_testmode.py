"""Test mode (no STRIPE_SECRET_KEY, the default): the built-in checkout and portal, through the real webhook code.

Paying on /billing/test-checkout/<token> builds Stripe-shaped events, signs them with the webhook secret and
hands them to the same ``receive`` that Stripe's deliveries reach, so the stored events are the proof.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from starter import catalog, credits
from starter.billing import gateway, testmode
from starter.extensions import db
from starter.models import LedgerEntry, Membership, StripeEvent, Team, User
from tests import billing_fixtures
from tests.billing_fixtures import (
    entries,
    plan_credits,
    purchased,
    session_id_from,
    start_checkout,
)
from tests.conftest import AuthActions

TEST_MODE_BADGE = "Test mode — no card is charged"
MEDIUM, PRO, STARTER = catalog.PACKS["medium"], catalog.PLANS["pro"], catalog.PLANS["starter"]

# Fixtures of tests/billing_fixtures.py used here (pytest finds them by their function names).
owner, team = (
    billing_fixtures.owner,
    billing_fixtures.team,
)


def open_test_checkout(auth: AuthActions, kind: str = "pack", code: str = "medium") -> str:
    """Choose a pack or plan: the app sends the browser to its own test checkout page; returns that path."""
    response = start_checkout(auth, kind, code)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith("/billing/test-checkout/")
    return location


def press(auth: AuthActions, checkout_path: str, action: str) -> Any:
    return auth.post(checkout_path, {"action": action}, token_from=checkout_path)


def portal(auth: AuthActions, action: str, **fields: str) -> Any:
    return auth.post("/billing/test-portal", {"action": action, **fields}, token_from="/billing/test-portal")


def refresh(team: Team) -> Team:
    db.session.expire_all()
    return db.session.get(Team, team.id)


def events() -> list[StripeEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(StripeEvent).order_by(StripeEvent.received_at)))


# ---------------------------------------------------------------------------------------- packs


def test_a_pack_bought_in_test_mode(auth, team) -> None:
    checkout = open_test_checkout(auth)
    page = auth.client.get(checkout).get_data(as_text=True)
    assert TEST_MODE_BADGE in page and "2,200 credits" in page and "$18.00" in page

    paid = press(auth, checkout, "pay")

    assert paid.status_code == 303
    success = paid.headers["Location"]
    assert "/billing/success?session_id=cs_" in success
    assert purchased(team.id) == MEDIUM.total_credits
    session_id = session_id_from(success)
    stored = db.session.scalar(select(StripeEvent).where(StripeEvent.type == "checkout.session.completed"))
    assert stored.payload["data"]["object"]["id"] == session_id
    assert stored.type == "checkout.session.completed" and stored.processed_at is not None and stored.error is None
    assert stored.payload["data"]["object"]["amount_total"] == MEDIUM.price_cents

    shown = auth.client.get(success.removeprefix("http://localhost")).get_data(as_text=True)

    assert "2,200 credits added" in shown
    assert purchased(team.id) == MEDIUM.total_credits
    assert credits.verify() == []


def test_paying_twice_grants_once(auth, team) -> None:
    checkout = open_test_checkout(auth)

    first, second = press(auth, checkout, "pay"), press(auth, checkout, "pay")

    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert purchased(team.id) == MEDIUM.total_credits
    # One payment's events only: the card saved for auto-recharge, and the completed checkout.
    types = sorted(db.session.scalars(select(StripeEvent.type)))
    assert types == ["checkout.session.completed", "payment_method.attached"]


def test_cancelling_the_test_checkout_grants_nothing(auth, team) -> None:
    checkout = open_test_checkout(auth)

    response = press(auth, checkout, "cancel")

    assert response.status_code == 303 and response.headers["Location"].endswith("/billing/cancel")
    assert "No payment was made" in auth.client.get("/billing/cancel").get_data(as_text=True)
    assert purchased(team.id) == 0
    assert events() == []


def test_a_tampered_token_is_not_found(auth, team) -> None:
    checkout = open_test_checkout(auth)
    tampered = checkout[:-3] + ("AAA" if not checkout.endswith("AAA") else "BBB")

    assert auth.client.get(tampered).status_code == 404
    assert auth.client.post(tampered, data={"action": "pay"}).status_code in (400, 404)
    assert purchased(team.id) == 0


def test_another_teams_checkout_is_not_found(app, auth, make_user, team) -> None:
    checkout = open_test_checkout(auth)
    make_user("stranger@example.com")
    stranger = AuthActions(app.test_client())
    stranger.login("stranger@example.com")

    assert stranger.client.get(checkout).status_code == 404
    assert stranger.post(checkout, {"action": "pay"}, token_from="/billing").status_code == 404
    assert purchased(team.id) == 0 and events() == []


def test_a_member_cannot_pay_a_test_checkout(app, auth, make_user, team) -> None:
    checkout = open_test_checkout(auth)
    member = make_user("member@example.com")
    db.session.add(Membership(team_id=team.id, user_id=member.id, role="member"))
    member.current_team_id = team.id
    db.session.commit()
    browser = AuthActions(app.test_client())
    browser.login("member@example.com")

    assert browser.post(checkout, {"action": "pay"}, token_from="/billing").status_code == 403
    assert purchased(team.id) == 0


def test_the_test_mode_banner_is_shown(auth, team) -> None:
    assert "Test mode — payments use the built-in test checkout" in auth.client.get("/billing").get_data(as_text=True)


# ---------------------------------------------------------------------------------------- plans


def subscribe(auth: AuthActions, plan: str = "pro") -> Any:
    return press(auth, open_test_checkout(auth, "plan", plan), "pay")


def test_a_plan_through_test_mode(auth, team) -> None:
    response = subscribe(auth, "pro")

    assert response.status_code == 303
    page = auth.client.get(response.headers["Location"].removeprefix("http://localhost")).get_data(as_text=True)
    assert "Welcome to your new plan" in page
    team = refresh(team)
    assert (team.plan_code, team.subscription_status) == ("pro", "active")
    assert team.stripe_subscription_id.startswith("sub_") and team.stripe_customer_id == f"cus_local_{team.id}"
    assert plan_credits(team.id) == PRO.monthly_credits  # the free period's credits were replaced
    assert [entry.amount for entry in entries(team.id, "expire")] == [-catalog.FREE_PLAN.monthly_credits]
    stored = events()
    assert {event.type for event in stored} == {
        "payment_method.attached",  # a subscription keeps its card: auto-recharge may charge it too
        "customer.subscription.created",
        "customer.subscription.updated",
        "checkout.session.completed",
        "invoice.paid",
    }
    assert all(event.processed_at is not None and event.error is None for event in stored)
    assert credits.verify() == []


def test_a_paying_team_choosing_a_plan_goes_to_the_test_portal(auth, team) -> None:
    subscribe(auth, "pro")

    response = start_checkout(auth, "plan", "starter")

    assert response.status_code == 303 and response.headers["Location"].endswith("/billing/test-portal")
    assert "Billing portal" in auth.client.get("/billing/test-portal").get_data(as_text=True)


def test_the_test_portal_cancels_at_period_end_and_resumes(auth, team) -> None:
    subscribe(auth, "pro")

    assert portal(auth, "cancel_at_period_end").status_code == 303
    team = refresh(team)
    assert team.cancel_at_period_end is True and team.plan_code == "pro"
    assert "cancels at period end" in auth.client.get("/billing/test-portal").get_data(as_text=True)

    portal(auth, "resume")
    assert refresh(team).cancel_at_period_end is False


def test_the_test_portal_upgrades_at_once_with_prorations(auth, team) -> None:
    subscribe(auth, "starter")
    credits.spend(team.id, 500, key="work")
    db.session.commit()
    time.sleep(1.05)  # Stripe periods are whole seconds: the new period must start after the first one

    response = portal(auth, "change_plan", plan_code="pro")

    assert response.status_code == 303
    team = refresh(team)
    assert team.plan_code == "pro" and team.subscription_status == "active"
    assert plan_credits(team.id) == PRO.monthly_credits
    assert [entry.amount for entry in entries(team.id, "expire")][-1] == -(STARTER.monthly_credits - 500)
    paid = [event for event in events() if event.type == "invoice.paid"][-1].payload["data"]["object"]
    lines = paid["lines"]["data"]
    # Like Stripe: a proration line for the unused Starter time, then Pro's full period; metadata untouched.
    assert lines[0]["parent"]["subscription_item_details"]["proration"] is True and lines[0]["amount"] < 0
    assert lines[1]["parent"]["subscription_item_details"]["proration"] is False
    assert paid["parent"]["subscription_details"]["metadata"]["plan_code"] == "starter"
    assert team.current_period_end.timestamp() == lines[1]["period"]["end"]
    assert all(event.error is None for event in events())
    assert credits.verify() == []


def test_the_test_portal_downgrades_at_the_period_end(auth, team) -> None:
    subscribe(auth, "pro")

    portal(auth, "change_plan", plan_code="starter")

    team = refresh(team)
    assert team.plan_code == "pro" and plan_credits(team.id) == PRO.monthly_credits  # paid for until the end
    portal(auth, "renew")
    team = refresh(team)
    assert team.plan_code == "starter" and plan_credits(team.id) == STARTER.monthly_credits
    assert all(event.error is None for event in events())
    assert credits.verify() == []


def test_a_failed_renewal_then_a_retry_in_test_mode(auth, team) -> None:
    subscribe(auth, "pro")

    portal(auth, "renew_failed")
    assert refresh(team).subscription_status == "past_due"
    portal(auth, "retry_payment")

    team = refresh(team)
    assert team.subscription_status == "active" and team.plan_code == "pro"
    assert len(entries(team.id, "grant")) == 3  # the free allowance, the first period, the retried renewal
    assert credits.verify() == []


def test_the_test_portal_cancels_now(auth, team) -> None:
    subscribe(auth, "pro")

    portal(auth, "cancel_now")

    team = refresh(team)
    assert (team.plan_code, team.stripe_subscription_id, team.subscription_status) == ("free", None, "canceled")
    assert "This team has no subscription" in auth.client.get("/billing/test-portal").get_data(as_text=True)
    assert portal(auth, "cancel_now").status_code == 303  # nothing to cancel: a message, not an error
    assert credits.verify() == []


# --------------------------------------------------------------------------------- with a Stripe key


@pytest.mark.parametrize(
    "app_config", [{"STRIPE_SECRET_KEY": "sk_test_x", "BILLING_TEST_MODE": False, "STRIPE_WEBHOOK_SECRET": "whsec_x"}]
)
def test_the_test_mode_pages_do_not_exist_with_a_stripe_key(app: Flask, auth: AuthActions, owner: User) -> None:
    with app.test_request_context():
        team = db.session.get(Team, owner.current_team_id)
        params = gateway.checkout_params(team, "cus_local_1", "pack", "medium", owner.id)
        token_path = testmode.TestModeGateway().create_checkout(params, "key")

    assert auth.client.get(token_path).status_code == 404
    assert auth.post(token_path, {"action": "pay"}, token_from="/billing").status_code == 404
    assert auth.client.get("/billing/test-portal").status_code == 404
    assert auth.post("/billing/test-portal", {"action": "cancel_now"}, token_from="/billing").status_code == 404
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.team_id == team.id)) == 1


def test_paying_a_plan_twice_subscribes_once(auth, team) -> None:
    checkout = open_test_checkout(auth, "plan", "pro")

    first, second = press(auth, checkout, "pay"), press(auth, checkout, "pay")

    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    team = refresh(team)
    assert team.plan_code == "pro"
    assert plan_credits(team.id) == PRO.monthly_credits
    assert [event.type for event in events()].count("customer.subscription.created") == 1
    assert all(event.error is None for event in events())


@pytest.mark.parametrize("app_config", [{"STRIPE_PRICE_PACK_MEDIUM": "price_configured_medium"}])
def test_a_configured_pack_price_is_paid_at_its_catalog_amount_in_test_mode(auth, team) -> None:
    paid = press(auth, open_test_checkout(auth), "pay")

    assert paid.status_code == 303
    assert purchased(team.id) == MEDIUM.total_credits
    assert all(event.error is None for event in events())
