"""Yearly plans: paid once a year, credits granted month by month, exactly once per team and month.

The first half buys Pro yearly in test mode (the same webhook code as Stripe's deliveries) and walks the
paid year with ``flask credits grant-due --now``; the second drives the scheduler over a leap year's month
ends and after downtime; the last part switches monthly ↔ yearly and cancels.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from starter import catalog, credits, scheduler, yearly
from starter.billing import testmode
from starter.extensions import db
from starter.models import CreditBlock, PaidYear, StripeEvent, Team
from starter.periods import add_months
from tests import billing_fixtures
from tests.billing_fixtures import plan_credits, start_checkout
from tests.conftest import AuthActions

PRO = catalog.PLANS["pro"]
owner, team = billing_fixtures.owner, billing_fixtures.team


def buy_yearly(auth: AuthActions, code: str = "pro") -> None:
    response = auth.post(
        "/billing/checkout",
        {"kind": "plan", "code": code, "interval": "year", "attempt": "yearly1"},
        token_from="/billing?interval=year",
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    checkout = response.headers["Location"]
    page = auth.client.get(checkout).get_data(as_text=True)
    plan = catalog.PLANS[code]
    assert f"Pay ${plan.yearly_price_cents / 100:,.2f} (test)" in page and "granted month by month" in page
    paid = auth.post(checkout, {"action": "pay"}, token_from=checkout)
    assert paid.status_code == 303


def plan_blocks(team_id: int) -> list[CreditBlock]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(CreditBlock)
            .where(CreditBlock.team_id == team_id, CreditBlock.source == "plan", CreditBlock.reference.is_not(None))
            .order_by(CreditBlock.period_start)
        )
    )


def the_year(team_id: int) -> PaidYear:
    db.session.expire_all()
    return db.session.scalar(select(PaidYear).where(PaidYear.team_id == team_id))


def grant_due(runner, now: datetime) -> str:
    db.session.commit()  # end this session's read transaction: SQLite has one writer at a time
    result = runner.invoke(args=["credits", "grant-due", "--now", now.isoformat()])
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------------------- test mode, end to end


def test_pro_yearly_bought_in_test_mode_grants_one_month_then_one_a_month(auth, team, runner) -> None:
    page = auth.client.get("/billing?interval=year").get_data(as_text=True)
    assert "$490.00" in page and "/ year" in page  # the yearly price: two months free

    buy_yearly(auth)

    invoice = db.session.scalar(select(StripeEvent).where(StripeEvent.type == "invoice.paid")).payload["data"]
    assert invoice["object"]["amount_paid"] == PRO.yearly_price_cents
    assert invoice["object"]["billing_reason"] == "subscription_create"
    year = the_year(team.id)
    assert (year.plan_code, year.months_granted) == ("pro", 1)
    assert year.ends_at == add_months(year.starts_at, 12)
    [first] = plan_blocks(team.id)
    assert first.amount == PRO.monthly_credits and first.expires_at == add_months(year.starts_at, 1)
    assert plan_credits(team.id) == PRO.monthly_credits  # one month, not twelve
    assert "Paid yearly" in auth.client.get("/dashboard").get_data(as_text=True)

    for month in range(1, 12):
        moment = add_months(year.starts_at, month) + timedelta(hours=1)
        output = grant_due(runner, moment)
        assert "1 yearly plan month(s) started" in output, (month, output)
        assert "yearly plan month" not in grant_due(runner, moment)  # a second run grants nothing
        db.session.expire_all()
        assert credits.balance(team.id, now=moment).plan == PRO.monthly_credits, month

    blocks = plan_blocks(team.id)
    assert [b.period_start for b in blocks] == [add_months(year.starts_at, m) for m in range(12)]
    assert all(b.expires_at == add_months(year.starts_at, m + 1) for m, b in enumerate(blocks))
    assert {b.reference for b in blocks} == {year.stripe_invoice_id}
    after_the_year = add_months(year.starts_at, 12) + timedelta(days=2)
    assert "yearly plan month" not in grant_due(runner, after_the_year)  # the renewal invoice starts the next
    assert len(plan_blocks(team.id)) == 12 and the_year(team.id).next_grant_at is None
    assert credits.verify() == []


# ------------------------------------------------------------------------------- the scheduler's drip


def yearly_team(make_user, email: str, start: datetime) -> tuple[Team, PaidYear]:
    """A team paying Pro yearly since ``start`` (as invoice.paid leaves it), no month granted yet."""
    team = db.session.get(Team, make_user(email).current_team_id)
    team.plan_code, team.stripe_subscription_id, team.subscription_status = "pro", f"sub_{team.id}", "active"
    team.stripe_customer_id = f"cus_{team.id}"
    end = add_months(start, 12)
    team.current_period_start, team.current_period_end = start, end
    year = yearly.record_year(
        team, invoice_id=f"in_{team.id}", subscription_id=team.stripe_subscription_id, plan=PRO, start=start, end=end
    )
    db.session.commit()
    return team, year


def test_twelve_months_over_a_leap_february_clamp_to_month_ends(app, make_user) -> None:
    start = datetime(2028, 1, 31, 9, tzinfo=UTC)  # 2028 is a leap year
    team, _ = yearly_team(make_user, "leap@example.com", start)

    for month in range(12):
        moment = add_months(start, month) + timedelta(minutes=5)
        assert scheduler.run_due_work(app, moment).yearly_months == 1, month
        assert scheduler.run_due_work(app, moment).yearly_months == 0, month  # once per month

    starts = [block.period_start for block in plan_blocks(team.id)]
    days = [(s.month, s.day) for s in starts]
    month_ends = [(1, 31), (2, 29), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31), (8, 31), (9, 30), (10, 31)]
    assert days == [*month_ends, (11, 30), (12, 31)]
    ends = [block.expires_at for block in plan_blocks(team.id)]
    assert ends[0] == datetime(2028, 2, 29, 9, tzinfo=UTC) and ends[-1] == datetime(2029, 1, 31, 9, tzinfo=UTC)
    assert all(later == earlier for earlier, later in zip(ends, starts[1:], strict=False))
    # Each month's credits expire at the month's end: only the current month is ever spendable.
    assert credits.balance(team.id, now=ends[-1] + timedelta(minutes=1)).plan == 0
    assert the_year(team.id).months_granted == 12
    assert credits.verify() == []


def test_after_downtime_only_the_current_month_is_granted(app, make_user) -> None:
    start = datetime(2027, 3, 15, tzinfo=UTC)
    team, _ = yearly_team(make_user, "down@example.com", start)
    assert scheduler.run_due_work(app, start + timedelta(hours=1)).yearly_months == 1

    # Down from mid-March until three days into the fifth month: months two to four are not stacked.
    back = add_months(start, 4) + timedelta(days=3)
    summary = scheduler.run_due_work(app, back)

    assert summary.yearly_months == 1
    blocks = plan_blocks(team.id)
    assert [b.period_start for b in blocks] == [start, add_months(start, 4)]
    assert blocks[0].expired_at is not None  # March's leftover expired
    assert credits.balance(team.id, now=back).plan == PRO.monthly_credits
    assert the_year(team.id).next_grant_at == add_months(start, 5)
    assert credits.verify() == []


def test_a_changed_subscription_stops_the_drip(app, make_user) -> None:
    start = datetime(2027, 5, 1, tzinfo=UTC)
    team, _ = yearly_team(make_user, "moved@example.com", start)
    scheduler.run_due_work(app, start + timedelta(hours=1))
    team = db.session.get(Team, team.id)
    team.stripe_subscription_id = "sub_another"  # the team is on another subscription now
    db.session.commit()

    assert scheduler.run_due_work(app, add_months(start, 1) + timedelta(hours=1)).yearly_months == 0
    assert the_year(team.id).stopped_reason == "the subscription changed"
    assert len(plan_blocks(team.id)) == 1


def test_the_drip_waits_for_a_row_another_transaction_holds(app, make_user) -> None:
    """``grant_due_months`` re-checks the year on the locked row: a month granted meanwhile is not granted again."""
    start = datetime(2027, 6, 1, tzinfo=UTC)
    team, year = yearly_team(make_user, "twice@example.com", start)
    moment = start + timedelta(hours=1)
    ids = yearly.due_year_ids(moment)
    assert ids == [year.id]
    assert yearly.grant_due_months(ids, moment).grants == 1
    db.session.commit()
    assert yearly.grant_due_months(ids, moment).grants == 0  # stale list, nothing due on the locked row
    db.session.commit()
    assert len(plan_blocks(team.id)) == 1


# ------------------------------------------------------------------------------- switching and cancelling


def portal(auth: AuthActions, action: str, **fields: str):
    return auth.post("/billing/test-portal", {"action": action, **fields}, token_from="/billing/test-portal")


def test_monthly_to_yearly_takes_effect_now_and_yearly_to_monthly_at_the_years_end(auth, team) -> None:
    assert start_checkout(auth, "plan", "pro").status_code == 303  # monthly first
    checkout = start_checkout(auth, "plan", "pro").headers["Location"]
    auth.post(checkout, {"action": "pay"}, token_from=checkout)
    assert plan_credits(team.id) == PRO.monthly_credits and the_year(team.id) is None
    time.sleep(1.1)  # periods start on whole seconds: the year must not start in the month's first second

    assert portal(auth, "switch_interval").status_code == 303

    year = the_year(team.id)
    assert year is not None and year.stopped_at is None
    monthly = [b for b in plan_blocks(team.id) if b.reference != year.stripe_invoice_id]
    assert all(b.expired_at is not None for b in monthly)  # the monthly period's leftover ended
    assert plan_credits(team.id) == PRO.monthly_credits  # and the year's first month began
    sub = testmode.load(db.session.get(Team, team.id).stripe_subscription_id)
    assert [item["price"]["id"] for item in sub["items"]["data"]] == ["price_local_pro_yearly"]

    # Back to monthly: nothing changes until the paid year ends, then the renewal is monthly.
    assert portal(auth, "switch_interval").status_code == 303
    assert the_year(team.id).stopped_at is None
    assert portal(auth, "renew").status_code == 303
    year = the_year(team.id)
    assert year.stopped_at is not None and year.stopped_reason == "replaced by a monthly period"
    assert credits.verify() == []


def test_cancelling_a_yearly_plan_now_ends_its_months(auth, team, runner) -> None:
    buy_yearly(auth)
    year = the_year(team.id)

    assert portal(auth, "cancel_now").status_code == 303

    year = the_year(team.id)
    assert year.stopped_reason == "the subscription ended"
    assert db.session.get(Team, team.id).plan_code == "free"
    assert "yearly plan month" not in grant_due(runner, add_months(year.starts_at, 1) + timedelta(hours=1))
    assert credits.verify() == []
