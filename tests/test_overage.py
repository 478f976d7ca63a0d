"""Metered overage: spends past the credits up to the team's monthly cap, in the ledger like everything else.

The ledger never goes negative: an overage block of exactly the shortfall is granted under the balance lock,
then drawn. Past the cap a spend is refused (402) with the reason. The overage waits in ``overage_usage``
until the scheduler reports it to the Billing Meter (tests/test_overage_meter.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from starter import api_keys, catalog, credits
from starter.billing import overage
from starter.extensions import db
from starter.models import CreditBlock, LedgerEntry, OverageSetting, OverageUsage, Team, utcnow

from .factories import ledger_team
from .test_credits_concurrency import race

STARTER = catalog.PLANS["starter"]


@pytest.fixture
def app_config():
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 10, "pool_timeout": 60}}


def paying_team(slug: str, *, purchased: int = 100, cap: int = 500, enabled: bool = True) -> int:
    """A Starter team whose monthly subscription carries the metered overage item, opted in with ``cap``."""
    team = ledger_team(slug)
    team.plan_code, team.subscription_status = "starter", "active"
    team.stripe_customer_id, team.stripe_subscription_id = f"cus_{slug}", f"sub_{slug}"
    team.current_period_start = utcnow() - timedelta(days=3)
    team.current_period_end = team.current_period_start + timedelta(days=30)
    overage.set_metered_item(team.id, f"si_metered_{slug}")
    if purchased:
        credits.grant(team.id, purchased, source="purchase", key="pack")
    overage.configure(team, enabled=enabled, cap=cap, user_id=None)
    db.session.commit()
    return team.id


def usage(team_id: int) -> list[OverageUsage]:
    db.session.expire_all()
    return list(db.session.scalars(select(OverageUsage).where(OverageUsage.team_id == team_id)))


def test_a_spend_past_the_credits_draws_overage_and_never_goes_negative(app) -> None:
    team = paying_team("over")

    receipt = credits.spend(team, 300, key="big")
    db.session.commit()

    assert receipt.balance_after == 0 and receipt.amount == -300
    [block] = db.session.scalars(select(CreditBlock).where(CreditBlock.source == "overage")).all()
    assert (block.amount, block.remaining) == (200, 0)
    kinds = [e.kind for e in db.session.scalars(select(LedgerEntry).order_by(LedgerEntry.id))]
    assert kinds == ["grant", "overage", "spend"]  # granted on demand, then spent: balance 100 → 300 → 0
    [row] = usage(team)
    assert (row.credits, row.reported_at, row.stripe_customer_id) == (200, None, "cus_over")
    assert db.session.get(OverageSetting, team).used_credits == 200
    assert credits.verify() == []

    replay = credits.spend(team, 300, key="big")  # a repeat charges nothing and draws no more overage
    assert replay.replayed and len(usage(team)) == 1


def test_past_the_cap_the_spend_is_refused_with_the_reason(app) -> None:
    team = paying_team("capped", purchased=0, cap=500)
    credits.spend(team, 450, key="first")
    db.session.commit()

    with pytest.raises(credits.OverageCapReached) as refused:
        credits.spend(team, 60, key="second")
    db.session.rollback()

    error = refused.value
    assert error.status == 402 and error.code == "insufficient_credits"
    assert error.details() == {
        "required": 60,
        "available": 0,
        "reason": "overage_cap_reached",
        "overage_cap": 500,
        "overage_used": 450,
    }
    assert "allows 50 more" in str(error)
    assert credits.spend(team, 50, key="third").balance_after == 0  # exactly up to the cap
    db.session.commit()
    assert db.session.get(OverageSetting, team).used_credits == 500
    assert credits.verify() == []


def test_the_api_answers_402_past_the_cap(app, client) -> None:
    team = paying_team("api-capped", purchased=0, cap=10)
    _, raw = api_keys.create(team, "backend")
    db.session.commit()
    headers = {"Authorization": f"Bearer {raw}"}

    ok = client.post("/api/v1/spend", json={"amount": 10, "idempotency_key": "a"}, headers=headers)
    refused = client.post("/api/v1/spend", json={"amount": 1, "idempotency_key": "b"}, headers=headers)

    assert ok.status_code == 201, ok.get_json()
    assert refused.status_code == 402
    body = refused.get_json()["error"]
    assert body["code"] == "insufficient_credits" and body["reason"] == "overage_cap_reached"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda team, setting: setattr(setting, "enabled", False), id="not opted in"),
        pytest.param(lambda team, setting: setattr(team, "subscription_status", "past_due"), id="past due"),
        pytest.param(lambda team, setting: setattr(setting, "subscription_item_id", None), id="no metered item"),
        pytest.param(lambda team, setting: setattr(team, "plan_code", "free"), id="free plan"),
    ],
)
def test_without_billable_overage_a_spend_that_does_not_fit_is_refused_as_before(app, change) -> None:
    team_id = paying_team("closed", purchased=5)
    change(db.session.get(Team, team_id), db.session.get(OverageSetting, team_id))
    db.session.commit()

    with pytest.raises(credits.InsufficientCredits) as refused:
        credits.spend(team_id, 6, key="x")
    db.session.rollback()

    assert not isinstance(refused.value, credits.OverageCapReached)
    assert (refused.value.required, refused.value.available) == (6, 5)
    assert usage(team_id) == [] and credits.balance(team_id).available == 5


def test_a_hold_past_the_credits_reserves_overage_and_returns_what_it_did_not_use(app) -> None:
    team = paying_team("held", purchased=100)

    hold = credits.hold(team, 150, key="job:hold")
    credits.capture(team, hold.id, 120, key="job:capture")
    db.session.commit()

    # 50 overage was granted for the hold; 30 came back and stay spendable (they were bought).
    assert [row.credits for row in usage(team)] == [50]
    assert credits.balance(team).available == 30
    assert credits.verify() == []


def test_a_new_period_starts_the_cap_again(app) -> None:
    team_id = paying_team("renewed", purchased=0, cap=100)
    credits.spend(team_id, 100, key="march")
    db.session.commit()
    team = db.session.get(Team, team_id)
    team.current_period_start = team.current_period_end  # invoice.paid started the next period
    team.current_period_end = team.current_period_start + timedelta(days=30)
    db.session.commit()

    assert overage.summary(team).used == 0
    credits.spend(team_id, 100, key="april")
    db.session.commit()
    assert db.session.get(OverageSetting, team_id).used_credits == 100


def test_opting_in_needs_a_plan_with_overage_and_a_metered_subscription(app) -> None:
    team = db.session.get(Team, ledger_team("plain").id)
    with pytest.raises(overage.OverageError, match="has no overage"):
        overage.configure(team, enabled=True, cap=100, user_id=None)
    team.plan_code = "starter"
    with pytest.raises(overage.OverageError, match="no metered overage price"):
        overage.configure(team, enabled=True, cap=100, user_id=None)
    with pytest.raises(overage.OverageError, match="whole number"):
        overage.configure(team, enabled=False, cap=-1, user_id=None)
    db.session.rollback()


@pytest.mark.postgres
def test_16_concurrent_spends_never_pass_the_overage_cap(app) -> None:
    team = paying_team("race", purchased=250, cap=1_000)

    results = race(app, lambda key: credits.spend(team, 100, key=key), [(f"s{i}",) for i in range(16)], workers=16)

    succeeded = [r for r in results if isinstance(r, credits.Receipt)]
    refused = [r for r in results if isinstance(r, credits.OverageCapReached)]
    # 250 credits, then 1,000 of overage: 12 spends fit (1,200 ≤ 1,250), the 13th would pass the cap.
    assert (len(succeeded), len(refused)) == (12, 4), results
    db.session.expire_all()
    assert db.session.get(OverageSetting, team).used_credits == 950
    assert db.session.scalar(select(func.sum(OverageUsage.credits)).where(OverageUsage.team_id == team)) == 950
    assert all(r.balance_after >= 0 for r in succeeded)
    assert credits.balance(team).available == 0
    assert credits.verify() == []
