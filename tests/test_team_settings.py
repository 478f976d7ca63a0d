"""Team settings: rename, leave, delete; the members page's own row; roles explained."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import func, select

from starter import api_keys, credits
from starter.extensions import db
from starter.models import ApiKey, Hold, Invitation, LedgerEntry, Membership, Team, User
from tests.conftest import AuthActions, signed_in_client


def page(response) -> str:  # type: ignore[no-untyped-def]
    return html.unescape(response.get_data(as_text=True))


def fresh_team(team_id: int) -> Team:
    db.session.expire_all()
    return db.session.get(Team, team_id)


def members_of(team_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(Membership).filter_by(team_id=team_id)) or 0


@pytest.fixture
def browser(app):  # type: ignore[no-untyped-def]
    """A signed-in browser per person (the log-in form is test_auth.py's subject)."""

    def open_as(email: str) -> AuthActions:
        return AuthActions(signed_in_client(app, email))

    return open_as


@pytest.fixture
def acme(fast_user, make_team):  # type: ignore[no-untyped-def]
    """Olivia owns Acme (not her personal team), Ada is its admin, Max a member; Acme is current for all."""
    owner = fast_user("olivia@example.com", name="Olivia Owner")
    admin = fast_user("ada@example.com", name="Ada Admin")
    member = fast_user("max@example.com", name="Max Member")
    team = make_team(owner, "Acme", members=[(admin, "admin"), (member, "member")])
    admin.current_team_id = member.current_team_id = team.id
    db.session.commit()
    return team


def post(who: AuthActions, path: str, data: dict | None = None):  # type: ignore[no-untyped-def]
    return who.post(path, data, token_from="/team/settings")


# --- the page ---------------------------------------------------------------------------------------


def test_every_member_sees_the_settings_page_with_the_roles_explained(acme, browser):
    body = page(browser("max@example.com").client.get("/team/settings"))

    assert 'data-testid="roles-explained"' in body
    assert "Owners and admins can rename it." in body
    assert 'action="/team/settings/name"' not in body
    assert 'action="/team/delete"' not in body, "only owners are offered deletion"
    assert 'action="/team/leave"' in body


def test_the_members_page_explains_roles_and_offers_the_sole_owner_nothing_on_their_own_row(acme, browser):
    olivia = browser("olivia@example.com")
    own = db.session.scalar(select(Membership).filter_by(team_id=acme.id, role="owner"))
    body = page(olivia.client.get("/team/members"))

    assert 'data-testid="roles-explained"' in body
    assert f"/team/members/{own.id}/role" not in body
    assert f"/team/members/{own.id}/remove" not in body
    assert 'data-testid="sole-owner-note"' in body
    max_membership = db.session.scalar(select(Membership).filter_by(team_id=acme.id, role="member"))
    assert f"/team/members/{max_membership.id}/remove" in body


def test_a_co_owner_can_change_their_own_role_but_is_sent_to_leave_rather_than_remove(acme, browser):
    ada_membership = db.session.scalar(select(Membership).filter_by(team_id=acme.id, role="admin"))
    ada_membership.role = "owner"
    db.session.commit()
    body = page(browser("ada@example.com").client.get("/team/members"))

    assert f"/team/members/{ada_membership.id}/role" in body
    assert f"/team/members/{ada_membership.id}/remove" not in body
    assert 'href="/team/settings#leave-heading"' in body


# --- rename -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["olivia@example.com", "ada@example.com"], ids=["owner", "admin"])
def test_owners_and_admins_rename_the_team(acme, browser, email):
    response = post(browser(email), "/team/settings/name", {"name": " Acme Labs "})

    assert response.status_code == 302
    team = fresh_team(acme.id)
    assert team.name == "Acme Labs" and team.slug == "acme", "the slug stays"


def test_a_member_cannot_rename_the_team(acme, browser):
    response = post(browser("max@example.com"), "/team/settings/name", {"name": "Hijacked"})

    assert response.status_code == 403
    assert fresh_team(acme.id).name == "Acme"


@pytest.mark.parametrize("name", ["", "x", "y" * 121, "a\nb"], ids=["empty", "short", "long", "newline"])
def test_a_bad_team_name_is_a_field_error(acme, browser, name):
    response = post(browser("olivia@example.com"), "/team/settings/name", {"name": name})

    assert response.status_code == 400
    assert 'id="name-error"' in page(response)
    assert fresh_team(acme.id).name == "Acme"


def test_renaming_acts_on_your_current_team_only(acme, browser, fast_user, make_team):
    """Tenant isolation: there is no team id to tamper with; the current team is checked on every request."""
    eve = fast_user("eve@example.com")
    other = make_team(eve, "Other")
    olivia = browser("olivia@example.com")
    # Olivia points her session's current team at a team she is not in: the app falls back to one of hers.
    db.session.get(User, acme.memberships[0].user_id).current_team_id = other.id
    db.session.commit()

    post(olivia, "/team/settings/name", {"name": "Renamed"})

    assert fresh_team(other.id).name == "Other"


def test_the_settings_forms_need_the_csrf_token(acme, browser):
    olivia = browser("olivia@example.com")
    for path, data in [("/team/settings/name", {"name": "X team"}), ("/team/leave", {}), ("/team/delete", {})]:
        assert olivia.client.post(path, data=data).status_code == 400, path
    assert fresh_team(acme.id).name == "Acme" and fresh_team(acme.id).deleted_at is None


# --- leave ------------------------------------------------------------------------------------------


def test_a_member_leaves_and_their_api_keys_go_with_them(acme, browser):
    ada = browser("ada@example.com")
    ada_id = db.session.scalar(select(User.id).filter_by(email="ada@example.com"))
    key, _raw = api_keys.create(acme.id, "Ada's key", created_by_id=ada_id)
    db.session.commit()

    response = post(ada, "/team/leave")

    assert response.status_code == 302
    assert db.session.scalar(select(Membership).filter_by(team_id=acme.id, user_id=ada_id)) is None
    assert db.session.get(ApiKey, key.id).revoked_at is not None
    assert ada.client.get("/team/members").status_code == 200
    assert "Acme" not in page(ada.client.get("/dashboard")).split("<main", 1)[1].split("</main>")[0]


def test_the_sole_owner_cannot_leave(acme, browser):
    olivia = browser("olivia@example.com")
    assert 'data-testid="leave-blocked"' in page(olivia.client.get("/team/settings"))

    post(olivia, "/team/leave")

    assert "only owner" in page(olivia.client.get("/team/settings"))
    assert members_of(acme.id) == 3


# --- delete -----------------------------------------------------------------------------------------


def test_the_owner_deletes_the_team_and_its_credits_are_written_off_in_the_ledger(acme, browser, fast_user):
    credits.grant(acme.id, 100, source="purchase", key="pack", reference="cs_acme")
    credits.spend(acme.id, 30, key="spent")
    hold = credits.hold(acme.id, 20, key="held")
    key, raw = api_keys.create(acme.id, "Backend")
    bystander = fast_user("new@example.com")
    olivia_user = db.session.scalar(select(User).filter_by(email="olivia@example.com"))
    from starter import teams

    teams.invite(acme, olivia_user, bystander.email, "member", 7, teams.InvitationLimits(50, 50))
    db.session.commit()
    olivia = browser("olivia@example.com")
    body = page(olivia.client.get("/team/settings"))
    assert "Its 70 remaining credits are written off" in body

    response = post(olivia, "/team/delete", {"confirm_name": "Acme"})

    assert response.status_code == 302
    team = fresh_team(acme.id)
    assert team.deleted_at is not None
    assert members_of(acme.id) == 0
    assert credits.balance(acme.id).total == 0
    assert db.session.get(Hold, hold.id).status == "expired"
    expired = db.session.scalars(select(LedgerEntry).filter_by(team_id=acme.id, kind="expire")).all()
    assert sum(entry.amount for entry in expired) == -70
    assert credits.verify() == [], "flask credits verify still adds up"
    assert api_keys.authenticate(raw) is None
    assert db.session.get(ApiKey, key.id).revoked_at is not None
    assert db.session.scalar(select(Invitation).filter_by(team_id=acme.id)).revoked_at is not None
    # Everyone lands on a team of their own; nobody can reach the deleted one.
    for email in ("olivia@example.com", "ada@example.com", "max@example.com"):
        assert "Acme" not in page(browser(email).client.get("/dashboard"))


@pytest.mark.parametrize("typed", ["", "acme", "Acme Inc", "Other"], ids=["empty", "case", "longer", "other"])
def test_deleting_needs_the_exact_name_typed(acme, browser, typed):
    response = post(browser("olivia@example.com"), "/team/delete", {"confirm_name": typed})

    assert response.status_code == 400
    assert 'id="confirm_name-error"' in page(response)
    assert fresh_team(acme.id).deleted_at is None and members_of(acme.id) == 3


@pytest.mark.parametrize("email", ["ada@example.com", "max@example.com"], ids=["admin", "member"])
def test_only_an_owner_can_delete_the_team(acme, browser, email):
    response = post(browser(email), "/team/delete", {"confirm_name": "Acme"})

    assert response.status_code == 403
    assert fresh_team(acme.id).deleted_at is None


def test_a_team_with_a_subscription_cannot_be_deleted(acme, browser):
    acme.stripe_subscription_id, acme.subscription_status, acme.plan_code = "sub_1", "active", "pro"
    db.session.commit()
    olivia = browser("olivia@example.com")
    assert 'data-testid="team-deletion-blocker"' in page(olivia.client.get("/team/settings"))

    response = post(olivia, "/team/delete", {"confirm_name": "Acme"})

    assert response.status_code == 409
    assert "cancel it in Billing" in page(response)
    assert fresh_team(acme.id).deleted_at is None and members_of(acme.id) == 3


def test_the_personal_team_is_not_deleted_on_its_own(fast_user, browser):
    user = fast_user("solo@example.com", name="Solo")
    team_id = user.current_team_id
    solo = browser("solo@example.com")
    assert "deleted with your account" in page(solo.client.get("/team/settings"))

    response = post(solo, "/team/delete", {"confirm_name": "Solo's team"})

    assert response.status_code == 409
    assert fresh_team(team_id).deleted_at is None


def test_deleting_acts_on_the_current_team_only_never_another_tenants(acme, browser, fast_user, make_team):
    eve = fast_user("eve@example.com")
    other = make_team(eve, "Other")
    olivia = browser("olivia@example.com")

    # The form names no team: typing another team's name only fails the confirmation.
    response = post(olivia, "/team/delete", {"confirm_name": "Other"})

    assert response.status_code == 400
    assert fresh_team(other.id).deleted_at is None and members_of(other.id) == 1
    assert fresh_team(acme.id).deleted_at is None
