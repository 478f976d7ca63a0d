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
from starter.models import AutoRecharge, Team, utcnow


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
    owner = fast_user("owner@example.com", name="Olive")
    team = make_team(owner, "Acme")
    overage_ready(team, purchased=100)
    recharge.card_attached(
        {
            "id": "pm_card",
            "object": "payment_method",
            "type": "card",
            "customer": team.stripe_customer_id,
            "created": 1_700_000_000,
            "card": {"brand": "visa", "last4": "4242"},
        }
    )
    recharge.configure(team, enabled=True, threshold=50, pack_code="small", monthly_cap_cents=5_000)
    db.session.commit()

    receipt = spend(team.id, 300, "past-the-credits")  # 100 purchased + 200 overage
    assert receipt.balance_after == 0
    spend(team.id, 20, "more-overage")  # still at zero: no new crossing

    due = db.session.scalars(select(AutoRecharge).where(AutoRecharge.team_id == team.id)).all()
    assert [(r.status, r.balance_at_crossing) for r in due] == [("due", 0)]
    assert credits.verify() == []


def test_overage_spends_alert_once_not_on_every_spend(app, fast_user, make_team, outbox):
    owner = fast_user("owner@example.com", name="Olive")
    team = make_team(owner, "Acme")
    overage_ready(team, purchased=100)  # the default threshold is 50

    spend(team.id, 300, "first")  # 100 → 0 through overage: out of credits (it says more than "below 50")
    assert [m["Subject"] for m in outbox] == ["Acme is out of credits"]

    for number in range(3):  # each of these is overage from zero: nothing crosses again
        spend(team.id, 10, f"again-{number}")
    assert len(outbox) == 1
    assert credits.verify() == []
