"""Overage in test mode, as a person does it: Starter monthly, overage on, spend past the credits, renew.

The simulated renewal invoice bills the metered item for what the meter summed over the period that ended,
the same events the scheduler reported from ``overage_usage``; the dashboard showed that amount beforehand.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from starter import catalog, credits
from starter.billing import overage, testmode
from starter.extensions import db
from starter.models import Membership, OverageSetting, OverageUsage, StripeEvent, Team
from tests import billing_fixtures
from tests.billing_fixtures import start_checkout
from tests.conftest import AuthActions

STARTER = catalog.PLANS["starter"]
owner, team = billing_fixtures.owner, billing_fixtures.team


def subscribe_starter(auth) -> None:
    checkout = start_checkout(auth, "plan", "starter").headers["Location"]
    assert auth.post(checkout, {"action": "pay"}, token_from=checkout).status_code == 303


def invoices() -> list[dict]:
    db.session.expire_all()
    rows = db.session.scalars(select(StripeEvent).where(StripeEvent.type == "invoice.paid"))
    return [row.payload["data"]["object"] for row in sorted(rows, key=lambda r: r.received_at)]


def test_a_starter_team_spends_past_its_credits_and_the_renewal_bills_the_overage(auth, team) -> None:
    subscribe_starter(auth)
    sub = testmode.load(db.session.get(Team, team.id).stripe_subscription_id)
    assert [item["price"]["id"] for item in sub["items"]["data"]] == [
        "price_local_starter",
        "price_local_overage_starter",
    ]
    assert "quantity" not in sub["items"]["data"][1]

    assert auth.post("/billing/overage", {"enabled": "y", "cap": "5000"}, token_from="/billing").status_code == 303
    available = credits.balance(team.id).available
    credits.spend(team.id, available + 2_500, key="big-job")
    db.session.commit()

    dashboard = auth.client.get("/dashboard").get_data(as_text=True)
    assert "2,500 of 5,000 credits" in dashboard and "$3.00" in dashboard  # 2,500 at $1.20 per 1,000
    assert credits.balance(team.id).available == 0

    renewed = auth.post("/billing/test-portal", {"action": "renew"}, token_from="/billing/test-portal")

    assert renewed.status_code == 303
    renewal = invoices()[-1]
    assert renewal["billing_reason"] == "subscription_cycle"
    plan_line, overage_line = renewal["lines"]["data"]
    assert plan_line["amount"] == STARTER.monthly_price_cents
    assert (overage_line["quantity"], overage_line["amount"]) == (2_500, STARTER.overage_cents(2_500)) == (2_500, 300)
    assert overage_line["period"]["end"] == plan_line["period"]["start"]  # billed in arrears for the month that ended
    assert renewal["amount_paid"] == STARTER.monthly_price_cents + 300
    db.session.expire_all()
    assert db.session.scalars(select(OverageUsage)).one().reported_at is not None
    assert credits.balance(team.id).plan == STARTER.monthly_credits  # the new month's allowance
    assert "0 of 5,000 credits" in auth.client.get("/dashboard").get_data(as_text=True)  # a new period's cap
    assert credits.verify() == []


def test_an_upgrade_bills_the_overage_used_so_far_on_its_own_invoice(auth, team) -> None:
    subscribe_starter(auth)
    assert auth.post("/billing/overage", {"enabled": "y", "cap": "5000"}, token_from="/billing").status_code == 303
    credits.spend(team.id, credits.balance(team.id).available + 2_500, key="big-job")
    db.session.commit()
    overage.report_due()  # what the scheduler does: the meter now holds the 2,500
    db.session.commit()
    time.sleep(1.1)  # the change comes later than the usage (the meter counts in whole seconds)

    changed = auth.post(
        "/billing/test-portal", {"action": "change_plan", "plan_code": "pro"}, token_from="/billing/test-portal"
    )

    assert changed.status_code == 303
    upgrade = invoices()[-1]
    assert upgrade["billing_reason"] == "subscription_update"
    billed = [line for line in upgrade["lines"]["data"] if (line.get("description") or "").startswith("Overage")]
    assert [(line["quantity"], line["amount"]) for line in billed] == [(2_500, STARTER.overage_cents(2_500))]
    time.sleep(1.1)  # the next period starts in a later second, as it always does at Stripe
    auth.post("/billing/test-portal", {"action": "renew"}, token_from="/billing/test-portal")
    overage_lines = [
        line
        for invoice in invoices()
        for line in invoice["lines"]["data"]
        if (line.get("description") or "").startswith("Overage")
    ]
    assert len(overage_lines) == 1, "billed once: on the change, not again at the renewal"
    assert credits.balance(team.id).plan == catalog.PLANS["pro"].monthly_credits


def test_the_overage_form_refuses_bad_caps_and_a_plan_without_overage(auth, team) -> None:
    page = auth.client.get("/billing").get_data(as_text=True)
    assert 'id="overage-title"' not in page  # the free plan has no overage
    refused = auth.post("/billing/overage", {"enabled": "y", "cap": "100"}, token_from="/billing")
    assert refused.status_code == 303
    assert "has no overage" in auth.client.get("/billing").get_data(as_text=True)

    subscribe_starter(auth)
    for cap in ("-1", "abc", "99999999999", ""):
        response = auth.post("/billing/overage", {"enabled": "y", "cap": cap}, token_from="/billing")
        assert response.status_code == 303, cap
    db.session.expire_all()
    setting = db.session.get(OverageSetting, team.id)
    assert setting is not None and setting.enabled is False  # nothing bad was saved


def test_after_a_plan_change_the_old_plans_metered_price_bills_no_overage(auth, team) -> None:
    """The portal changes the plan's price, not the metered item: Starter's overage price cannot bill Pro's
    overage, so overage is off (fail closed) until the subscription carries Pro's metered price."""
    subscribe_starter(auth)
    assert auth.post("/billing/overage", {"enabled": "y", "cap": "100"}, token_from="/billing").status_code == 303
    time.sleep(1.1)  # periods start on whole seconds: the upgrade's period must not start in the first one

    auth.post("/billing/test-portal", {"action": "change_plan", "plan_code": "pro"}, token_from="/billing/test-portal")

    db.session.expire_all()
    assert db.session.get(Team, team.id).plan_code == "pro"
    assert db.session.get(OverageSetting, team.id).subscription_item_id is None
    with pytest.raises(credits.InsufficientCredits):
        credits.spend(team.id, credits.balance(team.id).available + 1, key="past")
    db.session.rollback()
    assert "no metered overage price" in auth.client.get("/billing").get_data(as_text=True)


def test_a_member_cannot_change_the_overage_settings(app, auth, team, make_user) -> None:
    subscribe_starter(auth)
    member = make_user("member@example.com")
    db.session.add(Membership(team_id=team.id, user_id=member.id, role="member"))
    member.current_team_id = team.id
    db.session.commit()
    browser = AuthActions(app.test_client())
    assert browser.login("member@example.com").status_code in (302, 303)

    page = browser.client.get("/billing").get_data(as_text=True)
    refused = browser.post("/billing/overage", {"enabled": "y", "cap": "100"}, token_from="/billing")

    assert "Save overage settings" not in page and 'id="overage-title"' in page  # seen, not changed
    assert refused.status_code == 403
    db.session.expire_all()
    setting = db.session.get(OverageSetting, team.id)
    assert setting is None or setting.enabled is False
