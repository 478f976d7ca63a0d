"""Invitations are mail sent through our server: a team and a user may send only so many a day."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from starter.extensions import db
from starter.models import Invitation, utcnow
from tests.conftest import AuthActions

LIMITS = pytest.mark.parametrize(
    "app_config", [{"INVITATIONS_PER_TEAM_PER_DAY": 3, "INVITATIONS_PER_USER_PER_DAY": 4}], ids=["team-3-user-4"]
)


def invitations() -> int:
    return db.session.scalar(select(func.count()).select_from(Invitation)) or 0


def invite(auth: AuthActions, email: str):  # type: ignore[no-untyped-def]
    response = auth.post("/team/invitations", {"email": email, "role": "member"}, token_from="/team/members")
    assert response.status_code == 302
    return auth.client.get("/team/members").get_data(as_text=True)


def logged_in(app, make_user, email: str) -> AuthActions:  # type: ignore[no-untyped-def]
    make_user(email, name=email.split("@")[0].title())
    actions = AuthActions(app.test_client())
    actions.login(email)
    return actions


@LIMITS
def test_a_team_sends_at_most_its_daily_invitations(app, make_user, outbox):
    olivia = logged_in(app, make_user, "olivia@example.com")
    for number in range(3):
        assert "Invitation sent" in invite(olivia, f"friend{number}@example.com")

    page = invite(olivia, "one-too-many@example.com")

    assert "the most allowed" in page
    assert invitations() == 3 and len(outbox) == 3


@LIMITS
def test_the_team_limit_counts_every_admin(app, make_user, make_team, outbox):
    owner, admin = make_user("olivia@example.com"), make_user("ada@example.com")
    team = make_team(owner, "Acme", members=[(admin, "admin")])
    admin.current_team_id = team.id
    db.session.commit()
    olivia, ada = AuthActions(app.test_client()), AuthActions(app.test_client())
    olivia.login("olivia@example.com")
    ada.login("ada@example.com")
    for number in range(2):
        invite(olivia, f"friend{number}@example.com")
    invite(ada, "friend2@example.com")

    assert "Acme has sent 3 invitations in the last 24 hours" in invite(ada, "friend3@example.com")
    assert invitations() == 3 and len(outbox) == 3


@LIMITS
def test_a_user_sends_at_most_their_daily_invitations_across_teams(app, make_user, outbox):
    olivia = logged_in(app, make_user, "olivia@example.com")
    for number in range(3):
        invite(olivia, f"friend{number}@example.com")
    olivia.post("/team/new", {"name": "Second team"}, token_from="/team/new")
    invite(olivia, "friend3@example.com")

    page = invite(olivia, "friend4@example.com")

    assert "You have sent 4 invitations in the last 24 hours" in page
    assert invitations() == 4 and len(outbox) == 4


@LIMITS
def test_the_limits_are_a_rolling_day(app, make_user, outbox):
    olivia = logged_in(app, make_user, "olivia@example.com")
    for number in range(3):
        invite(olivia, f"friend{number}@example.com")
    db.session.execute(update(Invitation).values(created_at=utcnow() - timedelta(hours=25)))
    db.session.commit()

    assert "Invitation sent" in invite(olivia, "next-day@example.com")
    assert len(outbox) == 4
