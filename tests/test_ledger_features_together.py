"""Overage, auto-recharge and low-balance alerts on one team: each sees the spend as the lock read it.

An overage spend is two writes under one lock: the overage grant tops the balance up by the shortfall,
then the spend draws it. Auto-recharge's crossing and the alerts must judge the spend against the
balance before the grant, or every overage spend would look like a fresh fall from above a threshold.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from starter import credits
from starter.billing import overage, recharge
from starter.extensions import db
from starter.models import AutoRecharge, OutboxMessage, Team, utcnow
from starter.periods import add_months
from tests import billing_fixtures
from tests.test_overage_testmode import subscribe_starter
from tests.test_yearly import buy_yearly, grant_due, the_year

owner, team = billing_fixtures.owner, billing_fixtures.team


def overage_ready(team: Team, *, purchased: int, cap: int = 1_000) -> None:
    """Make ``team`` a Starter subscriber with the metered item, opted in to overage up to ``cap``."""
    slug = team.slug
    team.plan_code, team.subscription_status = "starter", "active"
    team.stripe_customer_id, team.stripe_subscription_id = f"cus_{slug}", f"sub_{slug}"
    team.current_period_start = utcnow() - timedelta(days=3)
    team.current_period_end = team.current_period_start + timedelta(days=30)
    overage.set_metered_item(team.id, f"si_metered_{slug}")
    credits.grant(team.id, purchased, source="purchase", key="pack")
    overage.configure(team, enabled=True, cap=cap, user_id=None)
    db.session.commit()


def spend(team_id: int, amount: int, key: str) -> credits.Receipt:
    receipt = credits.spend(team_id, amount, key=key)
    db.session.commit()
    return receipt


def test_an_overage_spend_crossing_the_recharge_threshold_records_one_recharge(app, fast_user, make_team):
    person = fast_user("owner@example.com", name="Olive")
    acme = make_team(person, "Acme")
    overage_ready(acme, purchased=100)
    recharge.card_attached(
        {
            "id": "pm_card",
            "object": "payment_method",
            "type": "card",
            "customer": acme.stripe_customer_id,
            "created": 1_700_000_000,
            "card": {"brand": "visa", "last4": "4242"},
        }
    )
    recharge.configure(acme, enabled=True, threshold=50, pack_code="small", monthly_cap_cents=5_000)
    db.session.commit()

    receipt = spend(acme.id, 300, "past-the-credits")  # 100 purchased + 200 overage
    assert receipt.balance_after == 0
    spend(acme.id, 20, "more-overage")  # still at zero: no new crossing

    due = db.session.scalars(select(AutoRecharge).where(AutoRecharge.team_id == acme.id)).all()
    assert [(r.status, r.balance_at_crossing) for r in due] == [("due", 0)]
    assert credits.verify() == []


def test_overage_spends_alert_once_not_on_every_spend(app, fast_user, make_team, outbox):
    person = fast_user("owner@example.com", name="Olive")
    acme = make_team(person, "Acme")
    overage_ready(acme, purchased=100)  # the default threshold is 50

    spend(acme.id, 300, "first")  # 100 → 0 through overage: out of credits (it says more than "below 50")
    assert [m["Subject"] for m in outbox] == ["Acme is out of credits"]

    for number in range(3):  # each of these is overage from zero: nothing crosses again
        spend(acme.id, 10, f"again-{number}")
    assert len(outbox) == 1
    assert credits.verify() == []


# A new period ends the old plan credits and grants the new ones in one transaction: to the alerts that
# is one change, from the balance before to the balance after, never "out of credits" in between.


def queued_alerts() -> list[str]:
    """The balance alerts queued so far (receipts and the like are not this test's subject)."""
    db.session.expire_all()
    subjects = db.session.scalars(select(OutboxMessage.subject).order_by(OutboxMessage.id))
    return [s for s in subjects if "out of credits" in s or "credits below" in s]


def test_a_renewal_sends_no_low_balance_mail(auth, team) -> None:
    subscribe_starter(auth)
    before = queued_alerts()

    answer = auth.post("/billing/test-portal", {"action": "renew"}, token_from="/billing/test-portal")

    assert answer.status_code == 303
    assert queued_alerts() == before


def test_a_yearly_plans_next_month_sends_no_low_balance_mail(auth, team, runner) -> None:
    buy_yearly(auth)
    before = queued_alerts()
    year = the_year(team.id)

    grant_due(runner, add_months(year.starts_at, 1) + timedelta(hours=1))

    assert the_year(team.id).months_granted == 2
    assert queued_alerts() == before


def test_a_real_fall_inside_one_change_still_alerts_once(app, fast_user, make_team, outbox):
    person = fast_user("owner@example.com", name="Olive")
    acme = make_team(person, "Acme")
    credits.grant(acme.id, 120, source="purchase", key="pack")
    db.session.commit()

    with credits.one_change(acme.id):
        credits.spend(acme.id, 60, key="a")  # 60: above the default 50
        credits.spend(acme.id, 30, key="b")  # 30: below, judged when the change ends
    db.session.commit()

    assert [m["Subject"] for m in outbox] == ["Acme: credits below 50"]
