"""``flask seed``: a developer gets working demo log-ins, however many times they run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

import seed
from seed import seed_command
from starter import credits
from starter.extensions import db
from starter.models import CreditBlock, Invitation, LedgerEntry, Membership, Team, User
from tests.conftest import AuthActions

DEMO_EMAILS = ("owner@example.com", "member@example.com", "admin@example.com")


def counts() -> dict[str, int]:
    db.session.expire_all()
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model)) or 0
        for model in (User, Team, Membership, LedgerEntry, CreditBlock, Invitation)
    }


def user(email: str) -> User:
    return db.session.scalar(select(User).filter_by(email=email))


def demo_team() -> Team:
    return db.session.scalar(select(Team).filter_by(slug=seed.DEMO_TEAM_SLUG))


def role_in_demo_team(email: str) -> str | None:
    return db.session.scalar(select(Membership.role).filter_by(user_id=user(email).id, team_id=demo_team().id))


def test_seed_prints_the_demo_log_ins_and_a_second_run_creates_nothing(runner):
    first = runner.invoke(seed_command)
    after_first = counts()
    second = runner.invoke(seed_command)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    for output in (first.output, second.output):
        assert seed.DEMO_PASSWORD in output
        for email in DEMO_EMAILS:
            assert email in output
    assert after_first["users"] == 3
    assert after_first["memberships"] > 0 and after_first["ledger_entries"] > 0
    assert counts() == after_first


def test_flask_seed_is_a_command_of_the_app(project_root):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "seed", "--help"],
        cwd=project_root,
        env={**os.environ, "SECRET_KEY": "cli-test"},  # outside tests the app refuses to start without one
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Create demo users, a demo team and credits (idempotent)." in result.stdout


def test_seed_gives_each_demo_user_the_right_place(runner):
    runner.invoke(seed_command)

    assert user("admin@example.com").is_site_admin
    assert not user("owner@example.com").is_site_admin
    assert not user("member@example.com").is_site_admin
    assert role_in_demo_team("owner@example.com") == "owner"
    assert role_in_demo_team("member@example.com") == "member"
    assert role_in_demo_team("admin@example.com") is None
    assert user("owner@example.com").current_team_id == demo_team().id
    assert user("member@example.com").current_team_id == demo_team().id
    for email in DEMO_EMAILS:  # everyone also has a personal team they own
        personal = db.session.scalars(
            select(Team)
            .join(Membership)
            .where(Membership.user_id == user(email).id, Membership.role == "owner", Team.is_personal)
        ).all()
        assert len(personal) == 1


def test_the_demo_team_has_plan_and_welcome_credits_once(runner):
    runner.invoke(seed_command)
    runner.invoke(seed_command)

    balance = credits.balance(demo_team().id)
    assert balance.plan == 100
    assert balance.purchased + balance.other == 1_000
    assert credits.verify() == []


def test_you_can_log_in_as_the_demo_owner(app, runner, client):
    runner.invoke(seed_command)

    response = AuthActions(client).login("owner@example.com", seed.DEMO_PASSWORD)

    assert response.status_code == 302
    dashboard = client.get("/dashboard")
    assert dashboard.status_code == 200
    assert "Demo Team" in dashboard.get_data(as_text=True)


def test_seed_restores_only_what_is_missing(runner):
    runner.invoke(seed_command)
    member = user("member@example.com")
    db.session.execute(db.delete(Membership).filter_by(user_id=member.id, team_id=demo_team().id))
    db.session.commit()
    without_member = counts()

    result = runner.invoke(seed_command)

    assert result.exit_code == 0, result.output
    assert role_in_demo_team("member@example.com") == "member"
    assert counts() == {**without_member, "memberships": without_member["memberships"] + 1}


def test_seed_keeps_an_existing_accounts_password(runner, make_user):
    make_user("owner@example.com", name="Real Owner", password="my-own-password")

    result = runner.invoke(seed_command)

    assert result.exit_code == 0, result.output
    owner = user("owner@example.com")
    assert owner.name == "Real Owner"
    assert owner.check_password("my-own-password")
    assert role_in_demo_team("owner@example.com") == "owner"


LIVE = pytest.mark.parametrize(
    "app_config",
    [{"STRIPE_SECRET_KEY": "sk_live_not_a_real_key", "STRIPE_WEBHOOK_SECRET": "whsec_live_test"}],
    ids=["live"],
)


@LIVE
def test_seed_refuses_on_a_live_mode_instance_and_creates_nothing(runner):
    before = counts()

    result = runner.invoke(seed_command)

    assert result.exit_code != 0
    assert "Refusing to seed" in result.output and "--force" in result.output
    assert counts() == before
    assert user("admin@example.com") is None


@LIVE
def test_seed_force_seeds_a_live_mode_instance_anyway(runner):
    result = runner.invoke(seed_command, ["--force"])

    assert result.exit_code == 0, result.output
    assert user("admin@example.com").is_site_admin
