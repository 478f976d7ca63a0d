"""Teams: create and switch, members and roles, email invitations, and the wall between tenants."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from starter import credits
from starter.extensions import db
from starter.models import Invitation, Membership, Team, User, utcnow
from tests.conftest import AuthActions, csrf_token, signed_in_client


def page(response) -> str:  # type: ignore[no-untyped-def]
    return html.unescape(response.get_data(as_text=True))


def count(model, **where: object) -> int:  # type: ignore[no-untyped-def]
    return db.session.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0


def fresh(obj):  # type: ignore[no-untyped-def]
    """Re-read ``obj`` from the database: a request may have changed it since."""
    db.session.expire_all()
    return db.session.get(type(obj), obj.id)


def membership(user: User, team: Team) -> Membership | None:
    db.session.expire_all()
    return db.session.scalar(select(Membership).filter_by(user_id=user.id, team_id=team.id))


def role_in(user: User, team: Team) -> str | None:
    found = membership(user, team)
    return found.role if found else None


def current_team_name(client: FlaskClient) -> str:
    response = client.get("/dashboard")
    assert response.status_code == 200
    return re.search(r"<h1>(.*?)</h1>", page(response)).group(1)


def member_row(members_page: str, email: str) -> str:
    for row in re.findall(r"<tr>.*?</tr>", members_page, flags=re.S):
        if email in row:
            return row
    raise AssertionError(f"{email} is not listed")


def invitation_path(message) -> str:  # type: ignore[no-untyped-def]
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"http://localhost(/team/invitations/[A-Za-z0-9_\-]+)", body)
    assert match, body
    return match.group(1)


@dataclass
class Browser:
    """One person's browser, logged in."""

    client: FlaskClient
    auth: AuthActions

    def post(self, path: str, data: dict | None = None):  # type: ignore[no-untyped-def]
        return self.auth.post(path, data, token_from="/dashboard")

    def members_page(self) -> str:
        """The members page, with any flashed messages on it."""
        return page(self.client.get("/team/members"))


@pytest.fixture
def browser(app):  # type: ignore[no-untyped-def]
    """A logged-in browser per person. The session is set as Flask-Login's ``login_user`` sets it:
    logging in through the form (and its password hash check) is the subject of test_auth.py."""

    def open_as(email: str) -> Browser:
        client = signed_in_client(app, email)
        return Browser(client, AuthActions(client))

    return open_as


@dataclass
class Acme:
    team: Team
    owner: User
    admin: User
    member: User


@pytest.fixture
def acme(fast_user, make_team) -> Acme:  # type: ignore[no-untyped-def]
    """Olivia owns Acme, Ada is its admin, Max a member; Acme is everyone's current team."""
    owner = fast_user("olivia@example.com", name="Olivia Owner")
    admin = fast_user("ada@example.com", name="Ada Admin")
    member = fast_user("max@example.com", name="Max Member")
    team = make_team(owner, "Acme", members=[(admin, "admin"), (member, "member")])
    admin.current_team_id = member.current_team_id = team.id
    db.session.commit()
    return Acme(team, owner, admin, member)


# --- Creating and switching teams ------------------------------------------------------------------------


def test_creating_a_team_makes_you_its_owner_and_switches_to_it(client, auth, fast_user):
    user = fast_user("alice@example.com", name="Alice")
    personal_team_id = user.current_team_id
    auth.login("alice@example.com")

    response = auth.post("/team/new", {"name": "  Rocket Lab "}, token_from="/team/new")

    assert response.status_code == 302
    assert response.headers["Location"] == "/team/members"
    team = db.session.scalar(select(Team).filter_by(name="Rocket Lab"))
    assert team is not None and not team.is_personal
    assert role_in(user, team) == "owner"
    assert fresh(user).current_team_id == team.id
    assert credits.balance(personal_team_id).plan == 100
    assert "You are its owner." in page(client.get("/team/members"))
    assert current_team_name(client) == "Rocket Lab"


@pytest.mark.parametrize(
    "name", ["", " ", "A", "  A  ", "x" * 121], ids=["empty", "blank", "one-letter", "padded-letter", "too-long"]
)
def test_a_team_needs_a_sensible_name(client, auth, fast_user, name):
    fast_user("alice@example.com")
    auth.login("alice@example.com")
    teams = count(Team)

    response = auth.post("/team/new", {"name": name}, token_from="/team/new")

    assert response.status_code == 200
    assert "field-error" in page(response)
    assert count(Team) == teams


def test_creating_a_team_without_the_csrf_token_is_refused(client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")

    response = client.post("/team/new", data={"name": "Rocket Lab"})

    assert response.status_code == 400
    assert count(Team, name="Rocket Lab") == 0


def test_switching_team_shows_the_other_team(client, auth, fast_user, make_team):
    user = fast_user("alice@example.com", name="Alice")
    personal = db.session.get(Team, user.current_team_id)
    make_team(user, "Rocket Lab")
    auth.login("alice@example.com")
    assert current_team_name(client) == "Rocket Lab"

    response = auth.post("/team/switch", {"team_id": str(personal.id)})

    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard"
    assert current_team_name(client) == "Alice's team"
    assert fresh(user).current_team_id == personal.id


def test_switching_to_a_team_you_are_not_in_is_a_404_and_changes_nothing(client, auth, fast_user, make_team):
    alice = fast_user("alice@example.com", name="Alice")
    bob = fast_user("bob@example.com", name="Bob")
    bobs_team = make_team(bob, "Bob Industries")
    auth.login("alice@example.com")
    before = alice.current_team_id

    for team_id in (bobs_team.id, 999_999):
        response = auth.post("/team/switch", {"team_id": str(team_id)})
        assert response.status_code == 404
        assert "Page not found" in page(response)

    assert fresh(alice).current_team_id == before
    assert current_team_name(client) == "Alice's team"


@pytest.mark.parametrize("team_id", ["", "abc", "1.5"], ids=["missing", "text", "decimal"])
def test_switching_with_a_malformed_team_id_is_a_400(client, auth, fast_user, team_id):
    alice = fast_user("alice@example.com")
    auth.login("alice@example.com")

    response = auth.post("/team/switch", {"team_id": team_id})

    assert response.status_code == 400
    assert fresh(alice).current_team_id is not None


def test_switching_without_the_csrf_token_is_refused(client, auth, fast_user, make_team):
    alice = fast_user("alice@example.com", name="Alice")
    personal_id = alice.current_team_id
    rocket = make_team(alice, "Rocket Lab")
    auth.login("alice@example.com")

    assert client.post("/team/switch", data={"team_id": str(personal_id)}).status_code == 400
    assert fresh(alice).current_team_id == rocket.id


def test_the_current_team_is_checked_on_every_request(acme, browser):
    max_ = browser("max@example.com")
    assert current_team_name(max_.client) == "Acme"

    db.session.delete(membership(acme.member, acme.team))  # removed behind the app's back
    db.session.commit()

    dashboard = page(max_.client.get("/dashboard"))
    assert re.search(r"<h1>(.*?)</h1>", dashboard).group(1) == "Max's team"
    assert "Acme" not in dashboard
    members_page = page(max_.client.get("/team/members"))
    assert "Acme" not in members_page
    assert "olivia@example.com" not in members_page


def test_a_user_without_any_team_is_asked_to_create_one(client, auth, fast_user):
    alice = fast_user("alice@example.com")
    auth.login("alice@example.com")
    db.session.execute(db.delete(Membership).filter_by(user_id=alice.id))
    db.session.commit()

    response = client.get("/dashboard")

    assert response.status_code == 302
    assert response.headers["Location"] == "/team/new"
    assert client.get("/team/new").status_code == 200


# --- Members page ----------------------------------------------------------------------------------------


def test_the_members_page_lists_everyone_with_their_role(acme, browser):
    members_page = page(browser("max@example.com").client.get("/team/members"))

    for name, email, role in [
        ("Olivia Owner", "olivia@example.com", "owner"),
        ("Ada Admin", "ada@example.com", "admin"),
        ("Max Member", "max@example.com", "member"),
    ]:
        row = member_row(members_page, email)
        assert name in row
        assert f'badge-{role}">{role}<' in row


@pytest.mark.parametrize("email", ["olivia@example.com", "ada@example.com"], ids=["owner", "admin"])
def test_owners_and_admins_see_the_invite_form_and_role_controls(acme, browser, email):
    members_page = page(browser(email).client.get("/team/members"))

    assert 'action="/team/invitations"' in members_page
    assert f'action="/team/members/{membership(acme.member, acme.team).id}/role"' in members_page
    assert f'action="/team/members/{membership(acme.member, acme.team).id}/remove"' in members_page


def test_a_member_sees_neither_the_invite_form_nor_role_controls(acme, browser):
    members_page = page(browser("max@example.com").client.get("/team/members"))

    assert 'action="/team/invitations"' not in members_page
    assert "/role" not in members_page
    assert "/remove" not in members_page
    assert "Send invitation" not in members_page


def test_an_admin_gets_no_controls_over_an_owner(acme, browser):
    members_page = page(browser("ada@example.com").client.get("/team/members"))

    owner_membership = membership(acme.owner, acme.team)
    assert f"/team/members/{owner_membership.id}/" not in members_page
    assert '<option value="owner"' not in members_page


# --- Invitations -----------------------------------------------------------------------------------------


def test_inviting_someone_mails_them_a_link(acme, browser, outbox):
    olivia = browser("olivia@example.com")

    response = olivia.post("/team/invitations", {"email": "  New.Person@Example.com ", "role": "admin"})

    assert response.status_code == 302
    assert "Invitation sent to new.person@example.com." in olivia.members_page()
    assert len(outbox) == 1
    assert outbox[0]["To"] == "new.person@example.com"
    assert outbox[0]["Subject"] == "Join Acme"
    path = invitation_path(outbox[0])
    invitation = db.session.scalar(select(Invitation))
    assert (invitation.team_id, invitation.email, invitation.role) == (acme.team.id, "new.person@example.com", "admin")
    assert invitation.invited_by_id == acme.owner.id
    token = path.rsplit("/", 1)[1]
    assert token not in invitation.token_hash  # stored only hashed
    assert invitation.expires_at > utcnow() + timedelta(days=6)
    members_page = olivia.members_page()
    assert "new.person@example.com" in members_page
    assert f"/team/invitations/{invitation.id}/revoke" in members_page


@pytest.mark.parametrize(
    ("email", "role"),
    [("not-an-email", "member"), ("", "member"), ("new@example.com", "owner"), ("new@example.com", "boss")],
    ids=["bad-email", "no-email", "as-owner", "unknown-role"],
)
def test_an_invitation_with_bad_input_is_refused_and_nothing_is_sent(acme, browser, outbox, email, role):
    olivia = browser("olivia@example.com")

    response = olivia.post("/team/invitations", {"email": email, "role": role})

    assert response.status_code == 302
    assert "Enter a valid email address and role." in olivia.members_page()
    assert count(Invitation) == 0
    assert outbox == []


def test_inviting_someone_already_in_the_team_is_refused(acme, browser, outbox):
    olivia = browser("olivia@example.com")

    olivia.post("/team/invitations", {"email": "MAX@example.com", "role": "member"})

    assert "max@example.com is already a member of Acme." in olivia.members_page()
    assert count(Invitation) == 0
    assert outbox == []


def test_a_member_cannot_invite(acme, browser, outbox):
    max_ = browser("max@example.com")

    response = max_.post("/team/invitations", {"email": "new@example.com", "role": "member"})

    assert response.status_code == 403
    assert "Not allowed" in page(response)
    assert count(Invitation) == 0
    assert outbox == []


def test_a_newcomer_signs_up_from_the_invitation_and_joins_with_the_invited_role(app, acme, browser, outbox):
    browser("olivia@example.com").post("/team/invitations", {"email": "newbie@example.com", "role": "admin"})
    path = invitation_path(outbox[0])
    token = path.rsplit("/", 1)[1]
    visitor = app.test_client()

    response = visitor.get(path)

    assert response.status_code == 302
    assert response.headers["Location"] == f"/auth/signup?invite={token}"
    signup_page = page(visitor.get(response.headers["Location"]))
    assert re.search(r'<input[^>]*name="email"[^>]*value="newbie@example.com"', signup_page)
    assert "You were invited to join <strong>Acme</strong>" in signup_page

    signed_up = AuthActions(visitor).signup("Newbie", "newbie@example.com", invite=token)

    assert signed_up.status_code == 302
    newbie = db.session.scalar(select(User).filter_by(email="newbie@example.com"))
    assert role_in(newbie, acme.team) == "admin"
    assert current_team_name(visitor) == "Acme"
    invitation = db.session.scalar(select(Invitation))
    assert invitation.accepted_at is not None and invitation.accepted_by_id == newbie.id
    assert visitor.get(path).status_code == 404


def test_signing_up_with_another_email_does_not_use_the_invitation(app, acme, browser, outbox):
    browser("olivia@example.com").post("/team/invitations", {"email": "newbie@example.com", "role": "admin"})
    token = invitation_path(outbox[0]).rsplit("/", 1)[1]
    visitor = app.test_client()

    AuthActions(visitor).signup("Sneaky", "sneaky@example.com", invite=token)

    sneaky = db.session.scalar(select(User).filter_by(email="sneaky@example.com"))
    assert sneaky is not None
    assert role_in(sneaky, acme.team) is None
    assert db.session.scalar(select(Invitation)).accepted_at is None


def test_an_existing_user_who_is_not_logged_in_is_sent_to_log_in_and_back(app, acme, browser, fast_user, outbox):
    bob = fast_user("bob@example.com", name="Bob")
    browser("olivia@example.com").post("/team/invitations", {"email": "bob@example.com", "role": "member"})
    path = invitation_path(outbox[0])
    client = app.test_client()

    response = client.get(path)

    assert response.status_code == 302
    assert response.headers["Location"] == f"/auth/login?next={path}"
    login_page = page(client.get(response.headers["Location"]))
    assert "Log in as bob@example.com to accept the invitation." in login_page
    next_field = re.search(r'<input[^>]*name="next"[^>]*value="([^"]*)"', login_page).group(1)
    logged_in = AuthActions(client).login("bob@example.com", next=next_field)
    assert logged_in.headers["Location"] == path
    assert role_in(bob, acme.team) is None  # following the link alone does not join

    accepted = AuthActions(client).post(path, token_from=path)

    assert accepted.status_code == 302
    assert accepted.headers["Location"] == "/dashboard"
    assert role_in(bob, acme.team) == "member"
    assert "You joined Acme." in page(client.get("/team/members"))
    assert current_team_name(client) == "Acme"


def test_the_invited_user_accepts_once_and_only_once(acme, browser, fast_user, outbox):
    bob_user = fast_user("bob@example.com", name="Bob")
    browser("olivia@example.com").post("/team/invitations", {"email": "bob@example.com", "role": "admin"})
    path = invitation_path(outbox[0])
    bob = browser("bob@example.com")

    invitation_page = bob.client.get(path)
    assert invitation_page.status_code == 200
    assert "Accept invitation" in page(invitation_page)
    assert "as admin" in page(invitation_page)
    assert bob.client.post(path).status_code == 400  # no CSRF token
    assert role_in(bob_user, acme.team) is None

    assert bob.auth.post(path, token_from=path).status_code == 302
    assert role_in(bob_user, acme.team) == "admin"

    assert bob.client.get(path).status_code == 404
    assert bob.auth.post(path, token_from="/dashboard").status_code == 404
    assert count(Membership, team_id=acme.team.id, user_id=bob_user.id) == 1


def test_an_invitation_cannot_be_accepted_by_another_account(acme, browser, fast_user, outbox):
    bob_user = fast_user("bob@example.com", name="Bob")
    eve_user = fast_user("eve@example.com", name="Eve")
    browser("olivia@example.com").post("/team/invitations", {"email": "bob@example.com", "role": "admin"})
    path = invitation_path(outbox[0])
    eve = browser("eve@example.com")
    memberships = count(Membership)

    viewed = eve.client.get(path)
    posted = eve.auth.post(path, token_from="/dashboard")

    for response in (viewed, posted):
        assert response.status_code == 403
        assert "This invitation was sent to a different email address" in page(response)
        assert "Accept invitation" not in page(response)
    assert count(Membership) == memberships
    assert role_in(eve_user, acme.team) is None
    assert db.session.scalar(select(Invitation)).accepted_at is None
    bob = browser("bob@example.com")
    assert bob.auth.post(path, token_from=path).status_code == 302
    assert role_in(bob_user, acme.team) == "admin"


@pytest.mark.parametrize("who", ["anonymous", "invitee"])
def test_an_expired_invitation_is_a_404(app, acme, browser, fast_user, outbox, who):
    bob_user = fast_user("bob@example.com")
    browser("olivia@example.com").post("/team/invitations", {"email": "bob@example.com", "role": "member"})
    path = invitation_path(outbox[0])
    invitation = db.session.scalar(select(Invitation))
    invitation.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    client = app.test_client() if who == "anonymous" else browser("bob@example.com").client

    response = client.get(path)

    assert response.status_code == 404
    assert "This invitation can't be used" in page(response)
    if who == "invitee":
        assert AuthActions(client).post(path, token_from="/dashboard").status_code == 404
    assert role_in(bob_user, acme.team) is None
    assert "bob@example.com" not in page(browser("olivia@example.com").client.get("/team/members"))


def test_a_revoked_invitation_is_a_404(app, acme, browser, fast_user, outbox):
    bob_user = fast_user("bob@example.com")
    ada = browser("ada@example.com")
    ada.post("/team/invitations", {"email": "bob@example.com", "role": "member"})
    path = invitation_path(outbox[0])
    invitation = db.session.scalar(select(Invitation))

    response = ada.post(f"/team/invitations/{invitation.id}/revoke")

    assert response.status_code == 302
    assert "Invitation revoked." in ada.members_page()
    assert fresh(invitation).revoked_at is not None
    assert f"/team/invitations/{invitation.id}/revoke" not in ada.members_page()
    assert app.test_client().get(path).status_code == 404
    bob = browser("bob@example.com")
    assert bob.client.get(path).status_code == 404
    assert bob.auth.post(path, token_from="/dashboard").status_code == 404
    assert role_in(bob_user, acme.team) is None


def test_an_unknown_invitation_token_is_a_404(app):
    assert app.test_client().get("/team/invitations/not-a-real-token").status_code == 404


def test_revoking_needs_an_admin_a_csrf_token_and_an_open_invitation(acme, browser, fast_user, outbox):
    fast_user("bob@example.com")
    olivia = browser("olivia@example.com")
    olivia.post("/team/invitations", {"email": "bob@example.com", "role": "member"})
    path = invitation_path(outbox[0])
    invitation = db.session.scalar(select(Invitation))

    assert browser("max@example.com").post(f"/team/invitations/{invitation.id}/revoke").status_code == 403
    assert olivia.client.post(f"/team/invitations/{invitation.id}/revoke").status_code == 400
    assert fresh(invitation).revoked_at is None

    browser("bob@example.com").auth.post(path, token_from=path)
    assert olivia.post(f"/team/invitations/{invitation.id}/revoke").status_code == 404  # already accepted
    assert fresh(invitation).revoked_at is None
    assert olivia.post("/team/invitations/999999/revoke").status_code == 404


@pytest.mark.parametrize("app_config", [{"INVITATION_RATE_LIMIT": "2 per hour"}], ids=["limit-2"])
def test_invitations_are_rate_limited_per_person_across_their_teams(acme, browser, outbox, make_team):
    olivia, ada = browser("olivia@example.com"), browser("ada@example.com")

    def invite(who: Browser, email: str) -> int:
        return who.post("/team/invitations", {"email": email, "role": "member"}).status_code

    assert [invite(olivia, f"new{number}@example.com") for number in range(3)] == [302, 302, 429]
    other = make_team(acme.owner, "Other")  # another team of hers is no way around it
    olivia.post("/team/switch", {"team_id": str(other.id)})
    assert fresh(acme.owner).current_team_id == other.id
    assert invite(olivia, "new3@example.com") == 429
    assert invite(ada, "new4@example.com") == 302  # her fellow admin has a budget of her own
    assert len(outbox) == 3
    assert count(Invitation) == 3


# --- Roles and removal -----------------------------------------------------------------------------------


def change_role(who: Browser, target: Membership | int, role: str):  # type: ignore[no-untyped-def]
    target_id = target if isinstance(target, int) else target.id
    return who.post(f"/team/members/{target_id}/role", {"role": role})


def remove(who: Browser, target: Membership | int):  # type: ignore[no-untyped-def]
    target_id = target if isinstance(target, int) else target.id
    return who.post(f"/team/members/{target_id}/remove")


@pytest.mark.parametrize("actor", ["olivia@example.com", "ada@example.com"], ids=["owner", "admin"])
def test_owners_and_admins_change_a_members_role(acme, browser, actor):
    who = browser(actor)

    response = change_role(who, membership(acme.member, acme.team), "admin")

    assert response.status_code == 302
    assert "Max Member is now admin." in who.members_page()
    assert role_in(acme.member, acme.team) == "admin"
    change_role(who, membership(acme.member, acme.team), "member")
    assert role_in(acme.member, acme.team) == "member"


@pytest.mark.parametrize("actor", ["olivia@example.com", "ada@example.com"], ids=["owner", "admin"])
def test_owners_and_admins_remove_a_member(acme, browser, actor):
    who = browser(actor)
    max_ = browser("max@example.com")

    response = remove(who, membership(acme.member, acme.team))

    assert response.status_code == 302
    assert "Max Member was removed from the team." in who.members_page()
    assert membership(acme.member, acme.team) is None
    assert current_team_name(max_.client) == "Max's team"
    assert "Acme" not in page(max_.client.get("/dashboard"))


def test_a_member_can_neither_change_roles_nor_remove_anyone(acme, browser):
    max_ = browser("max@example.com")
    before = {m.id: m.role for m in db.session.scalars(select(Membership).filter_by(team_id=acme.team.id))}

    for target in (acme.owner, acme.admin, acme.member):
        target_membership = membership(target, acme.team)
        for response in (change_role(max_, target_membership, "owner"), remove(max_, target_membership)):
            assert response.status_code == 403
            assert "You need to be a team admin to do that." in page(response)

    db.session.expire_all()
    after = {m.id: m.role for m in db.session.scalars(select(Membership).filter_by(team_id=acme.team.id))}
    assert after == before


def test_an_admin_cannot_demote_remove_or_create_an_owner(acme, browser):
    ada = browser("ada@example.com")
    owner_membership = membership(acme.owner, acme.team)

    change_role(ada, owner_membership, "member")
    assert "Only an owner can change another owner's role." in ada.members_page()
    remove(ada, owner_membership)
    assert "Only an owner can remove an owner." in ada.members_page()
    change_role(ada, membership(acme.member, acme.team), "owner")
    assert "Only an owner can make someone an owner." in ada.members_page()
    change_role(ada, membership(acme.admin, acme.team), "owner")
    assert "Only an owner can make someone an owner." in ada.members_page()

    assert role_in(acme.owner, acme.team) == "owner"
    assert role_in(acme.member, acme.team) == "member"
    assert role_in(acme.admin, acme.team) == "admin"


def test_the_last_owner_can_neither_step_down_nor_be_removed(acme, browser):
    olivia = browser("olivia@example.com")
    own = membership(acme.owner, acme.team)

    for role in ("admin", "member"):
        change_role(olivia, own, role)
        assert "A team needs at least one owner" in olivia.members_page()
        assert role_in(acme.owner, acme.team) == "owner"
    remove(olivia, own)
    assert "The last owner cannot be removed." in olivia.members_page()
    assert role_in(acme.owner, acme.team) == "owner"


def test_an_owner_promotes_someone_to_owner_and_then_steps_down(acme, browser):
    olivia = browser("olivia@example.com")

    change_role(olivia, membership(acme.admin, acme.team), "owner")
    assert role_in(acme.admin, acme.team) == "owner"
    change_role(olivia, membership(acme.owner, acme.team), "member")

    assert role_in(acme.owner, acme.team) == "member"
    assert role_in(acme.admin, acme.team) == "owner"
    assert 'action="/team/invitations"' not in olivia.members_page()  # now a plain member
    ada = browser("ada@example.com")
    remove(ada, membership(acme.owner, acme.team))
    assert membership(acme.owner, acme.team) is None


def test_an_owner_can_leave_once_another_owner_exists(acme, browser):
    olivia = browser("olivia@example.com")
    change_role(olivia, membership(acme.admin, acme.team), "owner")

    remove(olivia, membership(acme.owner, acme.team))

    assert membership(acme.owner, acme.team) is None
    assert current_team_name(olivia.client) == "Olivia's team"


@pytest.mark.parametrize("role", ["superuser", "", "OWNER"])
def test_an_unknown_role_is_a_400_and_changes_nothing(acme, browser, role):
    olivia = browser("olivia@example.com")

    response = change_role(olivia, membership(acme.member, acme.team), role)

    assert response.status_code == 400
    assert role_in(acme.member, acme.team) == "member"


def test_role_changes_and_removals_need_the_csrf_token(acme, browser):
    olivia = browser("olivia@example.com")
    target = membership(acme.member, acme.team)

    assert olivia.client.post(f"/team/members/{target.id}/role", data={"role": "admin"}).status_code == 400
    assert olivia.client.post(f"/team/members/{target.id}/remove").status_code == 400
    assert role_in(acme.member, acme.team) == "member"


def test_an_unknown_membership_is_a_404(acme, browser):
    olivia = browser("olivia@example.com")

    assert change_role(olivia, 999_999, "admin").status_code == 404
    assert remove(olivia, 999_999).status_code == 404


# --- Tenant isolation ------------------------------------------------------------------------------------


def snapshot(team: Team) -> tuple:
    db.session.expire_all()
    members = db.session.execute(
        select(Membership.id, Membership.user_id, Membership.role).filter_by(team_id=team.id).order_by(Membership.id)
    ).all()
    invitations = db.session.execute(
        select(Invitation.id, Invitation.accepted_at, Invitation.revoked_at).filter_by(team_id=team.id)
    ).all()
    users = db.session.execute(select(User.id, User.current_team_id).order_by(User.id)).all()
    return members, invitations, users, credits.balance(team.id)


@pytest.fixture
def two_teams(fast_user, make_team, browser, outbox):  # type: ignore[no-untyped-def]
    """Alice owns team A. Bob owns team B with Carol as a member and an open invitation for Dan."""
    alice = fast_user("alice@example.com", name="Alice")
    bob = fast_user("bob@example.com", name="Bob")
    carol = fast_user("carol@example.com", name="Carol")
    make_team(alice, "Team A")
    team_b = make_team(bob, "Team B", members=[(carol, "member")])
    browser("bob@example.com").post("/team/invitations", {"email": "dan@example.com", "role": "member"})
    invitation = db.session.scalar(select(Invitation).filter_by(team_id=team_b.id))
    return team_b, invitation


def attempts_on(team_b: Team, invitation: Invitation) -> list[tuple[str, dict]]:
    attempts: list[tuple[str, dict]] = []
    for target in db.session.scalars(select(Membership).filter_by(team_id=team_b.id)):
        for role in ("member", "admin", "owner"):
            attempts.append((f"/team/members/{target.id}/role", {"role": role}))
        attempts.append((f"/team/members/{target.id}/remove", {}))
    attempts.append((f"/team/invitations/{invitation.id}/revoke", {}))
    attempts.append(("/team/switch", {"team_id": str(team_b.id)}))
    return attempts


def test_an_owner_of_team_a_gets_404_for_everything_of_team_b(two_teams, browser):
    team_b, invitation = two_teams
    alice = browser("alice@example.com")
    assert current_team_name(alice.client) == "Team A"
    before = snapshot(team_b)

    for path, data in attempts_on(team_b, invitation):
        response = alice.post(path, data)
        assert response.status_code == 404, path
        assert "Page not found" in page(response)

    assert snapshot(team_b) == before
    assert current_team_name(alice.client) == "Team A"
    members_page = page(alice.client.get("/team/members"))
    assert "bob@example.com" not in members_page
    assert "carol@example.com" not in members_page
    assert "dan@example.com" not in members_page


def test_a_plain_member_of_team_b_gets_404_from_their_own_team_and_403_inside_b(two_teams, browser):
    team_b, invitation = two_teams
    carol_browser = browser("carol@example.com")
    assert current_team_name(carol_browser.client) == "Carol's team"  # where she is owner
    before = snapshot(team_b)
    attempts = [attempt for attempt in attempts_on(team_b, invitation) if attempt[0] != "/team/switch"]

    for path, data in attempts:
        assert carol_browser.post(path, data).status_code == 404, path
    assert carol_browser.post("/team/switch", {"team_id": str(team_b.id)}).status_code == 302
    assert current_team_name(carol_browser.client) == "Team B"
    for path, data in attempts:
        assert carol_browser.post(path, data).status_code == 403, path

    before_members, before_invitations, _users, before_balance = before
    after_members, after_invitations, _users, after_balance = snapshot(team_b)
    assert (after_members, after_invitations, after_balance) == (before_members, before_invitations, before_balance)


TEAM_ROUTES = [
    ("get", "/team/members"),
    ("get", "/team/new"),
    ("post", "/team/new"),
    ("post", "/team/switch"),
    ("post", "/team/invitations"),
    ("post", "/team/invitations/1/revoke"),
    ("post", "/team/members/1/role"),
    ("post", "/team/members/1/remove"),
    ("get", "/dashboard"),
]


@pytest.mark.parametrize(("method", "path"), TEAM_ROUTES)
def test_anonymous_visitors_are_sent_to_log_in(client, method, path):
    if method == "get":
        response = client.get(path)
    else:  # a valid CSRF token, so it is the log-in check that answers
        data = {"csrf_token": csrf_token(client), "role": "owner", "team_id": "1", "email": "x@example.com"}
        response = client.post(path, data=data)

    assert response.status_code == 302
    assert response.headers["Location"] == f"/auth/login?next={path.replace('/', '%2F')}"
    assert count(Invitation) == 0
