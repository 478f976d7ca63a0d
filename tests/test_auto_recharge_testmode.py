"""Auto-recharge in test mode (no Stripe account): Stripe's test cards on the test checkout, through the
same webhook code, for saving a card, a recharge that succeeds, one that is declined and one that
needs 3-D Secure; the receipts of every kind; the success page as a receipt."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from starter import catalog, credits
from starter.billing import recharge_job
from starter.extensions import db
from starter.models import AutoRecharge, AutoRechargeSettings, StripeEvent, Team
from tests import billing_fixtures
from tests.billing_fixtures import start_checkout
from tests.conftest import AuthActions

SMALL, MEDIUM, PRO = catalog.PACKS["small"], catalog.PACKS["medium"], catalog.PLANS["pro"]
owner, team = billing_fixtures.owner, billing_fixtures.team


def pay(auth: AuthActions, path: str, card: str = "4242424242424242") -> Any:
    return auth.post(path, {"action": "pay", "card": card}, token_from=path)


def buy(auth: AuthActions, code: str = "medium", card: str = "4242424242424242", attempt: str = "a1") -> Any:
    response = start_checkout(auth, "pack", code, attempt)
    assert response.status_code == 303
    return pay(auth, response.headers["Location"], card)


def save_card(auth: AuthActions, card: str) -> Any:
    response = auth.post("/billing/auto-recharge/card", {"attempt": "setup1"}, token_from="/billing/auto-recharge")
    assert response.status_code == 303 and response.headers["Location"].startswith("/billing/test-checkout/")
    return pay(auth, response.headers["Location"], card)


def turn_on(auth: AuthActions, threshold: int = 2_000) -> Any:
    data = {"enabled": "y", "threshold": str(threshold), "pack_code": "small", "monthly_cap_dollars": "50"}
    return auth.post("/billing/auto-recharge", data, token_from="/billing/auto-recharge")


def settings(team: Team) -> AutoRechargeSettings:
    db.session.expire_all()
    return db.session.get(AutoRechargeSettings, team.id)


def only_recharge(team: Team) -> AutoRecharge:
    db.session.expire_all()
    (found,) = db.session.scalars(select(AutoRecharge).where(AutoRecharge.team_id == team.id))
    return found


def available(team: Team) -> int:
    db.session.expire_all()
    return credits.balance(team.id).available


def test_a_declining_test_card_at_checkout_grants_and_saves_nothing(auth, team) -> None:
    response = buy(auth, card="4000000000009995")
    assert response.status_code == 200
    assert "insufficient funds" in response.get_data(as_text=True)
    assert available(team) == catalog.FREE_PLAN.monthly_credits
    assert settings(team) is None
    assert db.session.scalars(select(StripeEvent)).all() == []


def test_the_success_page_is_a_receipt_and_the_card_is_saved(auth, team, outbox) -> None:
    response = buy(auth)
    page = auth.client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your receipt" in page
    assert f"{MEDIUM.price_cents / 100:,.2f}" in page and f"{MEDIUM.total_credits:,}" in page
    assert re.search(r'data-testid="new-balance">2,300 credits', page)
    assert re.search(r"<code>cs_local_\w+</code>", page)
    assert (settings(team).card_brand, settings(team).card_last4) == ("visa", "4242")
    assert [m["Subject"] for m in outbox] == ["Receipt: Medium pack credit pack"]


def test_a_successful_recharge_in_test_mode_lands_once_with_its_receipt(auth, team, outbox) -> None:
    buy(auth)
    assert turn_on(auth).status_code == 303
    credits.spend(team.id, 400, key="cross")
    db.session.commit()

    assert recharge_job.pay_due().charged == 1
    recharge_job.pay_due()  # nothing more to do
    assert only_recharge(team).status == "succeeded"
    assert available(team) == 1_900 + SMALL.total_credits
    types = set(db.session.scalars(select(StripeEvent.type)))
    assert "payment_intent.succeeded" in types
    page = auth.client.get("/billing/receipts").get_data(as_text=True)
    assert 'data-kind="recharge" data-status="paid"' in page and 'data-kind="pack"' in page
    receipt = re.search(r'href="(/billing/receipts/recharge/\d+)"', page).group(1)
    printable = auth.client.get(receipt).get_data(as_text=True)
    assert "Auto-recharge: Small pack" in printable and "pi_local_" in printable
    assert "Receipt: Auto-recharge: Small pack" in [m["Subject"] for m in outbox]
    dashboard = auth.client.get("/dashboard").get_data(as_text=True)
    assert "$5.00 of $50.00 cap" in dashboard


def test_a_card_saved_in_setup_mode_that_declines_later(auth, team) -> None:
    buy(auth)
    response = save_card(auth, "4000000000000341")
    assert response.status_code == 303 and "/billing/auto-recharge?saved=" in response.headers["Location"]
    assert settings(team).card_last4 == "0341"
    assert turn_on(auth).status_code == 303
    credits.spend(team.id, 400, key="cross")
    db.session.commit()

    assert recharge_job.pay_due().declined == 1
    recharge = only_recharge(team)
    assert (recharge.status, recharge.failure_code) == ("retrying", "card_declined")
    assert settings(team).consecutive_failures == 1  # the job's answer and the webhook counted once
    assert available(team) == 1_900


def test_authentication_in_test_mode_finishes_through_the_test_bank_page(auth, team, outbox) -> None:
    buy(auth, card="4000002760003184")
    assert turn_on(auth).status_code == 303
    credits.spend(team.id, 400, key="cross")
    db.session.commit()

    assert recharge_job.pay_due().needs_action == 1
    recharge = only_recharge(team)
    assert recharge.status == "requires_action"
    body = next(m for m in outbox if m["Subject"] == "Confirm your auto-recharge payment").get_body(("plain",))
    link = re.search(r"http://\S+(/billing/auto-recharge/confirm/\d+)", body.get_content()).group(1)

    response = auth.post(link, {}, token_from=link)
    assert response.status_code == 303 and response.headers["Location"].startswith("/billing/test-authenticate/")
    bank = response.headers["Location"]
    done = auth.post(bank, {"action": "complete"}, token_from=bank)
    assert done.status_code == 303
    page = auth.client.get(done.headers["Location"].removeprefix("http://localhost")).get_data(as_text=True)
    assert "Payment confirmed" in page
    assert only_recharge(team).status == "succeeded"
    assert available(team) == 1_900 + SMALL.total_credits


def test_receipts_list_a_subscription_invoice_too(auth, team, outbox) -> None:
    buy(auth)
    response = start_checkout(auth, "plan", "pro")
    pay(auth, response.headers["Location"])
    page = auth.client.get("/billing/receipts").get_data(as_text=True)
    assert 'data-kind="invoice" data-status="paid"' in page
    assert f"{PRO.name} plan invoice" in page
    rows = re.findall(r'data-kind="(\w+)"', page)
    assert rows == ["invoice", "pack"], "newest first"
    # The invoice's receipt and its email give the credits it granted (the plan's month), not 0.
    assert f"{PRO.monthly_credits:,}" in page.split('data-kind="invoice"')[1].split("</tr>")[0]
    [mail_] = [m for m in outbox if m["Subject"] == "Receipt: Subscription invoice"]
    assert f"{PRO.monthly_credits:,}" in mail_.get_body(preferencelist=("plain",)).get_content()
