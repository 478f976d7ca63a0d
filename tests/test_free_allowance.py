"""The free plan's monthly credits go to one team per person, the personal team: new teams are no farm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from starter import catalog, credits, plans, scheduler, teams
from starter.extensions import db
from starter.models import CreditBlock, Team

FREE = catalog.FREE_PLAN.monthly_credits


def plan_blocks(team_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(CreditBlock).filter_by(team_id=team_id, source="plan"))


def test_sign_up_gives_the_personal_team_the_free_allowance(fast_user):
    user = fast_user("alice@example.com")

    assert credits.balance(user.current_team_id).plan == FREE


def test_thirty_new_teams_bring_no_free_credits(client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")

    for number in range(30):
        assert auth.post("/team/new", {"name": f"Farm {number}"}, token_from="/team/new").status_code == 302

    farmed = db.session.scalars(select(Team.id).where(Team.is_personal.is_(False))).all()
    assert len(farmed) == 30
    assert sum(credits.balance(team_id).available for team_id in farmed) == 0
    assert credits.verify() == []


def test_a_new_teams_dashboard_says_where_the_free_allowance_goes(client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")
    auth.post("/team/new", {"name": "Rocket Lab"}, token_from="/team/new")

    dashboard = client.get("/dashboard").get_data(as_text=True)

    assert 'data-testid="plan-credits">0<' in dashboard
    assert "the free allowance goes to each person's personal team" in dashboard


def test_the_new_team_page_states_the_policy(client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")

    page = client.get("/team/new").get_data(as_text=True)

    assert "the free plan's monthly allowance goes to one team per person, your personal team" in page


def test_the_monthly_rollover_grants_personal_teams_only(app, fast_user):
    owner = fast_user("alice@example.com")
    personal_id = owner.current_team_id
    other_id = teams.create_team(owner, "Rocket Lab").id
    db.session.commit()
    month_later = datetime.now(UTC) + timedelta(days=32)

    summary = scheduler.run_due_work(app, month_later)
    db.session.expire_all()

    assert summary.teams_rolled_over == 2 and summary.plan_grants == 1
    assert plan_blocks(personal_id) == 2 and plan_blocks(other_id) == 0
    assert db.session.get(Team, other_id).current_period_end > month_later  # its period still moves on
    assert credits.verify() == []


def test_the_per_team_rollover_agrees(app, fast_user):
    owner = fast_user("alice@example.com")
    other = teams.create_team(owner, "Rocket Lab")
    db.session.commit()
    month_later = datetime.now(UTC) + timedelta(days=32)

    result = plans.roll_over_team(other.id, month_later)

    assert (result.teams, result.grants) == (1, 0)
    assert plan_blocks(other.id) == 0


def test_a_subscription_ending_on_another_team_grants_no_free_allowance(app, fast_user):
    """The drop back to the free plan (billing's subscription deletion) uses the same rule."""
    owner = fast_user("alice@example.com")
    personal = db.session.get(Team, owner.current_team_id)
    other = teams.create_team(owner, "Rocket Lab")
    db.session.commit()

    assert plans.start_free_period(other) is None
    assert plans.start_free_period(personal).amount == FREE  # a replay of sign-up's grant
    assert plans.monthly_allowance(other) == 0
