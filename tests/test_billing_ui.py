"""What a paying user sees: the credit meter, the plan cards, the pricing page, resuming a plan, the purchase dialog.

Server-rendered pages read as a browser gets them (tests/test_browser.py drives the same pages in Chromium).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from sqlalchemy import select

from starter import catalog, credits
from starter.blueprints.dashboard import charts
from starter.extensions import db
from starter.models import Membership, StripeEvent, Team
from tests import billing_fixtures
from tests.billing_fixtures import deliver, real_stripe_config, start_checkout
from tests.conftest import PASSWORD, AuthActions
from tests.stripe_events import make_event
from tests.stripe_standin import StripeStandIn, make_invoice, make_price, make_subscription

PRO = catalog.PLANS["pro"]
DAY = 86400

owner, team, standin = billing_fixtures.owner, billing_fixtures.team, billing_fixtures.standin


def page_of(auth: AuthActions, path: str) -> str:
    response = auth.client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def rect(html: str, bucket: str) -> dict[str, float]:
    """The meter's rectangle for ``bucket`` (x and width in percent)."""
    match = re.search(rf'<rect class="{bucket}" data-bucket="{bucket}" x="([\d.]+)%" y="0" width="([\d.]+)%"', html)
    assert match, f"no {bucket} segment in the meter"
    return {"x": float(match.group(1)), "width": float(match.group(2))}


def refresh(team: Team) -> Team:
    db.session.expire_all()
    return db.session.get(Team, team.id)


# -- the meter ---------------------------------------------------------------------------------


def test_the_meter_is_as_wide_as_what_is_left_of_the_allowance(auth, team) -> None:
    credits.spend(team.id, 93, key="use-93")
    db.session.commit()

    html = page_of(auth, "/dashboard")

    # 7 credits left of 100 is 7% of the bar, not a full one (the bug: each bucket's share of the balance).
    assert rect(html, "meter-plan") == {"x": 0.0, "width": 7.0}
    assert 'data-filled="7.0"' in html
    assert "Used 93 of 100 · resets on" in html
    assert 'meter-purchased"' not in html.split('data-testid="meter"')[1].split("</svg>")[0]


def test_purchased_credits_sit_beside_the_allowance_and_held_credits_are_hatched_over_them(auth, team) -> None:
    credits.grant(team.id, 100, source="purchase", key="pack", description="Small pack")
    credits.spend(team.id, 60, key="use-60")
    credits.hold(team.id, 10, key="hold-10")
    db.session.commit()

    html = page_of(auth, "/dashboard")

    # The scale is the allowance (100) plus the purchased 100: plan 40 left fills 20%, purchased starts at 50%.
    assert rect(html, "meter-plan") == {"x": 0.0, "width": 20.0}
    assert rect(html, "meter-purchased") == {"x": 50.0, "width": 50.0}
    assert rect(html, "meter-held") == {"x": 0.0, "width": 5.0}  # holds draw plan credits first
    assert "Used 60 of 100" in html
    assert "10 held for work in progress" in html


def test_meter_geometry() -> None:
    assert charts.filled_width(charts.meter(7, 0, 0, 0, 100)) == 7.0
    assert charts.filled_width(charts.meter(0, 0, 0, 0, 100)) == 0.0
    assert charts.meter(0, 0, 0, 0, 0) == []
    # A team with no allowance: purchased and bonus fill the bar; held spills from one bucket into the next.
    segments = charts.meter(0, 30, 10, 35, 0)
    assert [(s.css, s.value, s.x, s.width) for s in segments] == [
        ("meter-purchased", 30, 0.0, 75.0),
        ("meter-other", 10, 75.0, 25.0),
        ("meter-held", 30, 0.0, 75.0),
        ("meter-held", 5, 75.0, 12.5),
    ]
    # More plan credits than the allowance (a rollover plan): the plan part grows, never past 100%.
    assert charts.filled_width(charts.meter(150, 0, 0, 0, 100)) == 100.0


def test_each_bucket_has_one_name_on_the_dashboard(auth, team) -> None:
    credits.grant(team.id, 20, source="promo", key="promo", description="Welcome")
    db.session.commit()

    html = page_of(auth, "/dashboard")

    assert "Bonus and promo <strong>20</strong>" in html
    assert "+ 20 bonus and promo" in html
    assert "Other" not in html.split('data-testid="meter"')[1].split("</ul>")[0]


def test_the_empty_usage_chart_is_one_sentence(auth, team) -> None:
    html = page_of(auth, "/dashboard")
    empty = html.split('data-testid="chart-empty">')[1].split("</div>")[0]
    # One <p>: in the centring grid, loose text runs and the link were each a cell, the final "." a stray dot.
    assert empty.startswith("<p>") and empty.endswith("</p>") and empty.count("<p>") == 1


# -- billing page: plan cards, upgrade warning, the chosen plan ---------------------------------


def test_plan_cards_name_the_current_plan_and_warn_that_upgrading_expires_what_is_left(auth, team) -> None:
    credits.spend(team.id, 30, key="use-30")
    db.session.commit()

    html = page_of(auth, "/billing")

    free_card = html.split('data-plan="free"')[1].split("</article>")[0]
    assert "Current plan" in free_card and "current" in html.split('data-plan="free"')[0].rsplit("<article", 1)[1]
    assert 'aria-disabled="true">Current plan<' in free_card
    pro_card = html.split('data-plan="pro"')[1].split("</article>")[0]
    assert "Upgrade to Pro monthly" in pro_card
    note = re.search(r'data-testid="upgrade-note-pro">(.*?)</p>', pro_card, re.S).group(1)
    assert "<strong>70</strong> Free plan credits left expire" in note and "6,000 Pro credits arrive" in note


def test_a_paying_team_sees_downgrade_with_its_date(auth, team) -> None:
    team.plan_code, team.stripe_subscription_id, team.subscription_status = "pro", "sub_x", "active"
    db.session.commit()

    html = page_of(auth, "/billing")

    starter_card = html.split('data-plan="starter"')[1].split("</article>")[0]
    assert "Downgrade to Starter monthly" in starter_card
    assert "Takes effect when this period ends" in starter_card
    assert "Cancels Pro" in html.split('data-plan="free"')[1].split("</article>")[0]


def test_the_same_plan_billed_the_other_way_is_a_switch_not_the_current_plan(auth, team) -> None:
    team.plan_code, team.stripe_subscription_id, team.subscription_status = "pro", "sub_x", "active"
    db.session.commit()

    monthly = page_of(auth, "/billing").split('data-plan="pro"')[1].split("</article>")[0]
    assert 'aria-disabled="true">Current plan<' in monthly
    yearly = page_of(auth, "/billing?interval=year").split('data-plan="pro"')[1].split("</article>")[0]
    assert "Current plan" not in yearly and "Switch to yearly" in yearly
    assert "Paying yearly starts the year now" in yearly
    pricing = page_of(auth, "/?interval=year").split('aria-labelledby="plan-pro"')[1].split("</article>")[0]
    assert "Current plan" not in pricing and "Switch to yearly" in pricing


# -- Manage billing only where there is a subscription ----------------------------------------


def test_manage_billing_is_offered_only_with_a_subscription(auth, team) -> None:
    assert "Manage billing" not in page_of(auth, "/dashboard")
    assert "Manage billing" not in page_of(auth, "/billing")

    # Posted anyway (an old tab): back to the plans with a word, not the portal's dead end.
    response = auth.post("/billing/portal", token_from="/billing")
    assert response.status_code == 303 and response.headers["Location"].endswith("/billing")
    assert "There is no subscription to manage yet" in page_of(auth, "/billing")

    team.plan_code, team.stripe_subscription_id, team.subscription_status = "pro", "sub_x", "active"
    db.session.commit()
    assert "Manage billing" in page_of(auth, "/dashboard")
    assert "Manage billing" in page_of(auth, "/billing")


# -- the purchase dialog -----------------------------------------------------------------------


def test_the_purchase_dialog_shows_totals_the_balance_and_the_best_value(auth, team) -> None:
    html = page_of(auth, "/dashboard")
    dialog = html.split('id="buy-credits"')[1].split("</dialog>")[0]

    assert 'data-testid="dialog-balance"' in dialog and "<strong>100</strong> credits available now" in dialog
    for pack in catalog.PACKS.values():
        total = re.search(rf'data-testid="pack-total-{pack.code}"><strong>([\d,]+)</strong>', dialog).group(1)
        assert int(total.replace(",", "")) == pack.credits + pack.bonus_credits
    best = min(catalog.PACKS.values(), key=lambda p: p.price_cents / p.total_credits)
    assert dialog.count('data-testid="best-value"') == 1
    assert 'data-testid="best-value"' in dialog.split(f'data-pack="{best.code}"')[1].split("</li>")[0]


# -- the pricing page and a plan chosen before signing up --------------------------------------


def test_the_pricing_page_marks_the_current_plan_when_signed_in(auth, team) -> None:
    html = page_of(auth, "/")
    free = html.split('aria-labelledby="plan-free"')[1].split("</article>")[0]
    pro = html.split('aria-labelledby="plan-pro"')[1].split("</article>")[0]
    assert "Current plan" in free and "Choose" not in free
    assert "Upgrade to Pro" in pro and "/billing?plan=pro&amp;interval=month" in pro


def test_a_plan_picked_before_signing_up_is_one_click_from_checkout(client) -> None:
    auth = AuthActions(client)
    html = client.get("/?interval=year").get_data(as_text=True)
    pro = html.split('aria-labelledby="plan-pro"')[1].split("</article>")[0]
    assert "Choose Pro" in pro and "/auth/signup?plan=pro&amp;interval=year" in pro

    signup_page = client.get("/auth/signup?plan=pro&interval=year").get_data(as_text=True)
    assert 'data-testid="chosen-plan"' in signup_page and 'name="plan" type="hidden" value="pro"' in signup_page
    response = auth.post(
        "/auth/signup",
        {"name": "Pat", "email": "pat@example.com", "password": PASSWORD, "plan": "pro", "interval": "year"},
        token_from="/auth/signup?plan=pro&interval=year",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/billing?plan=pro&interval=year"

    billing = client.get(response.headers["Location"]).get_data(as_text=True)
    banner = billing.split('data-testid="chosen-plan"')[1].split("</div>")[0]
    assert "Pro</strong> plan, billed yearly" in banner and "Continue to Checkout" in banner
    assert 'name="code" value="pro"' in banner and 'name="interval" value="year"' in banner
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', banner).group(1)
    attempt = re.search(r'name="attempt" value="([^"]+)"', banner).group(1)
    checkout = client.post(
        "/billing/checkout",
        data={"csrf_token": token, "kind": "plan", "code": "pro", "interval": "year", "attempt": attempt},
    )
    assert checkout.status_code == 303 and checkout.headers["Location"].startswith("/billing/test-checkout/")


@pytest.mark.parametrize(
    ("plan", "interval"),
    [("free", "month"), ("nope", "month"), ("https://evil.example", "month"), ("//evil.example", "month"),
     ("pro", "decade"), ("x" * 500, "month")],
)  # fmt: skip
def test_a_tampered_plan_choice_is_no_choice_and_sends_nobody_elsewhere(client, plan, interval) -> None:
    auth = AuthActions(client)
    response = auth.post(
        "/auth/signup",
        {"name": "Pat", "email": "pat@example.com", "password": PASSWORD, "plan": plan, "interval": interval},
        token_from="/auth/signup",
    )
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    billing = client.get(f"/billing?plan={plan}&interval={interval}")
    assert billing.status_code == 200 and 'data-testid="chosen-plan"' not in billing.get_data(as_text=True)


def switch_to_a_plain_member(make_user, auth, team) -> None:  # type: ignore[no-untyped-def]
    """Log the browser out and back in as a new member (role "member") of ``team``."""
    member = make_user("member@example.com")
    db.session.add(Membership(team_id=team.id, user_id=member.id, role="member"))
    member.current_team_id = team.id
    db.session.commit()
    auth.logout()
    auth.login("member@example.com")


def test_a_member_sees_no_checkout_button_for_a_chosen_plan(app, make_user, auth, team) -> None:
    switch_to_a_plain_member(make_user, auth, team)
    assert 'data-testid="chosen-plan"' not in page_of(auth, "/billing?plan=pro")


# -- cancelled at the period end: the date, the dashboard agreeing, and resume (test mode) --------


def portal(auth: AuthActions, action: str) -> Any:
    return auth.post("/billing/test-portal", {"action": action}, token_from="/billing/test-portal")


def subscribe_in_test_mode(auth: AuthActions, code: str = "pro") -> None:
    location = start_checkout(auth, "plan", code).headers["Location"]
    auth.post(location, {"action": "pay"}, token_from=location)


def test_an_ending_plan_says_when_and_offers_resume_and_resume_works(auth, team) -> None:
    subscribe_in_test_mode(auth)
    portal(auth, "cancel_at_period_end")
    team = refresh(team)
    end = team.current_period_end
    # Dates are <time> elements in the viewer's zone (UTC here: the test client sends no zone).
    ends = f'<time datetime="{end:%Y-%m-%dT%H:%M:%S}Z" data-style="date" title="{end.day} {end:%b %Y, %H:%M} UTC">'
    ends += f"{end.day} {end:%b %Y}</time>"
    assert team.cancel_at_period_end

    dashboard = page_of(auth, "/dashboard")
    assert f"ends on {ends}" in dashboard
    assert "resets on" not in dashboard and "Reset to" not in dashboard  # not "resets to 6,000": it is ending
    ending = dashboard.split('data-testid="plan-ending"')[1].split("</div>")[0]
    assert f"The <strong>Pro</strong> plan ends on <strong>{ends}</strong>" in ending
    assert "6,000 plan credits left expire then" in ending and "Free plan follows" in ending
    assert "Keep Pro" in ending
    billing = page_of(auth, "/billing")
    assert f"ends on {ends}" in billing
    assert "Downgrade to Free" not in billing  # it is ending already: the way back is "Keep Pro"
    assert f"cancels at period end ({ends})" in page_of(auth, "/billing/test-portal")

    response = auth.post("/billing/resume", token_from="/dashboard")

    assert response.status_code == 303
    assert "The Pro plan will renew as usual." in page_of(auth, response.headers["Location"])
    team = refresh(team)
    assert team.cancel_at_period_end is False and team.plan_code == "pro"
    # Test mode sent Stripe's event through the webhook code, as Stripe would.
    updated = db.session.scalars(
        select(StripeEvent).where(StripeEvent.type == "customer.subscription.updated").order_by(StripeEvent.received_at)
    ).all()
    assert updated[-1].payload["data"]["object"]["cancel_at_period_end"] is False
    assert updated[-1].processed_at is not None and updated[-1].error is None
    dashboard = page_of(auth, "/dashboard")
    assert 'data-testid="plan-ending"' not in dashboard and f"resets on {ends}" in dashboard


def test_resume_with_nothing_to_resume_changes_nothing(auth, team) -> None:
    response = auth.post("/billing/resume", token_from="/billing", follow_redirects=True)
    assert response.status_code == 200
    assert "nothing to resume" in response.get_data(as_text=True)
    assert db.session.scalar(select(StripeEvent.id)) is None

    subscribe_in_test_mode(auth)
    before = db.session.query(StripeEvent).count()
    response = auth.post("/billing/resume", token_from="/billing", follow_redirects=True)
    assert "nothing to resume" in response.get_data(as_text=True)
    assert db.session.query(StripeEvent).count() == before


def test_resume_needs_csrf_and_an_admin(app, make_user, auth, team) -> None:
    subscribe_in_test_mode(auth)
    portal(auth, "cancel_at_period_end")
    assert auth.client.post("/billing/resume").status_code == 400  # no CSRF token
    switch_to_a_plain_member(make_user, auth, team)
    assert "Keep Pro" not in page_of(auth, "/dashboard")  # the notice, without the button
    assert auth.post("/billing/resume", token_from="/dashboard").status_code == 403
    assert refresh(team).cancel_at_period_end is True


# -- resume against Stripe itself, through the SDK --------------------------------------------


class TestResumeWithStripe:
    @pytest.fixture
    def app_config(self, standin: StripeStandIn) -> dict[str, object]:
        return real_stripe_config(standin)

    def test_resume_clears_cancel_at_period_end_at_stripe(self, auth, standin, team, client) -> None:
        team.stripe_customer_id = "cus_resume1"
        db.session.commit()
        start = int(time.time())
        price = make_price(PRO.monthly_price_cents, id="price_pro", lookup_key="plan_pro")
        sub = make_subscription(
            team.stripe_customer_id, price=price, period_start=start, period_end=start + 30 * DAY,
            metadata={"team_id": str(team.id), "plan_code": "pro"},
        )  # fmt: skip
        sub.update(cancel_at_period_end=True, cancel_at=start + 30 * DAY)
        standin.put(sub)
        item = sub["items"]["data"][0]
        paid = make_invoice(
            sub["customer"], sub["id"], price["unit_amount"], start, start + 30 * DAY, "subscription_create",
            price_id=price["id"], subscription_item=item["id"], subscription_metadata=sub["metadata"],
        )  # fmt: skip
        assert deliver(client, make_event("customer.subscription.updated", sub)).status_code == 200
        assert deliver(client, make_event("invoice.paid", paid)).status_code == 200
        assert refresh(team).cancel_at_period_end is True
        assert "Keep Pro" in page_of(auth, "/dashboard")

        response = auth.post("/billing/resume", token_from="/dashboard")

        assert response.status_code == 303
        update = standin.last("POST", f"/v1/subscriptions/{sub['id']}")
        assert update.params == {"cancel_at_period_end": "false"}
        assert update.header("Idempotency-Key")
        assert standin.get(sub["id"])["cancel_at_period_end"] is False
        team = refresh(team)
        assert team.cancel_at_period_end is False and team.plan_code == "pro"
        # The webhook that follows says the same, and changes nothing more.
        assert deliver(client, make_event("customer.subscription.updated", standin.get(sub["id"]))).status_code == 200
        assert refresh(team).cancel_at_period_end is False

    def test_stripe_refusing_the_resume_is_an_error_and_changes_nothing(self, auth, standin, team, client) -> None:
        team.stripe_customer_id = "cus_resume2"
        team.plan_code, team.stripe_subscription_id, team.subscription_status = "pro", "sub_gone", "active"
        team.cancel_at_period_end = True
        db.session.commit()

        response = auth.post("/billing/resume", token_from="/billing", follow_redirects=True)

        assert response.status_code == 200
        assert "Payments are unavailable right now" in response.get_data(as_text=True)
        assert refresh(team).cancel_at_period_end is True
