"""The account page: name, email by confirmation link, password, sign out everywhere, delete the account."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from starter import accounts, credits
from starter.extensions import db
from starter.models import LedgerEntry, LoginSession, Membership, Team, User
from tests.conftest import PASSWORD, AuthActions

NEW_PASSWORD = "another-long-secret"


def page(response) -> str:  # type: ignore[no-untyped-def]
    return html.unescape(response.get_data(as_text=True))


def fresh_user(email: str) -> User | None:
    db.session.expire_all()
    return db.session.scalar(select(User).filter_by(email=email))


def sessions_of(user_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(LoginSession).filter_by(user_id=user_id)) or 0


def opens(client: FlaskClient, path: str = "/account") -> bool:
    response = client.get(path)
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    return False


@pytest.fixture
def alice(app, client, auth, fast_user) -> AuthActions:  # type: ignore[no-untyped-def]
    fast_user("alice@example.com", name="Alice Example")
    auth.login("alice@example.com")
    return auth


def post(who: AuthActions, path: str, data: dict | None = None):  # type: ignore[no-untyped-def]
    return who.post(path, data, token_from="/account")


def confirmation_path(message) -> str:  # type: ignore[no-untyped-def]
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"http://localhost(/account/email/confirm/[A-Za-z0-9_.\-]+)", body)
    assert match, body
    return match.group(1)


# --- the page ----------------------------------------------------------------------------------------


def test_the_account_page_needs_a_log_in(client):
    response = client.get("/account")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_the_account_page_shows_who_you_are_and_every_section(alice, client):
    body = page(client.get("/account"))

    assert 'data-testid="account-email">alice@example.com<' in body
    for section in ("Profile", "Email", "Password", "Signed-in browsers", "Delete your account"):
        assert f">{section}</h2>" in body
    assert "You are signed in on 1 browser, this one included." in body
    assert 'href="/account"' in body  # the navigation links to it


# --- name ---------------------------------------------------------------------------------------------


def test_changing_your_name(alice, client):
    response = post(alice, "/account/name", {"name": "  Alice Renamed "})

    assert response.status_code == 302
    assert fresh_user("alice@example.com").name == "Alice Renamed"
    assert "Your name was saved." in page(client.get("/account"))


@pytest.mark.parametrize("name", ["", "   ", "x" * 121, "two\nlines"], ids=["empty", "blank", "long", "newline"])
def test_a_bad_name_is_a_field_error_and_changes_nothing(alice, client, name):
    response = post(alice, "/account/name", {"name": name})

    assert response.status_code == 400
    assert 'class="field-error" id="name-error"' in page(response)
    assert fresh_user("alice@example.com").name == "Alice Example"


def test_the_account_forms_need_the_csrf_token(alice, client):
    for path, data in [
        ("/account/name", {"name": "Mallory"}),
        ("/account/email", {"new_email": "m@example.com", "email_password": PASSWORD}),
        ("/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        ("/account/sign-out-everywhere", {}),
        ("/account/delete", {"delete_password": PASSWORD}),
    ]:
        response = client.post(path, data=data)
        assert response.status_code == 400, path
    user = fresh_user("alice@example.com")
    assert user is not None and user.name == "Alice Example" and user.pending_email is None
    assert user.check_password(PASSWORD)
    assert opens(client)


# --- email --------------------------------------------------------------------------------------------


def test_a_new_email_takes_effect_only_when_its_link_is_followed(app, alice, client, outbox):
    response = post(alice, "/account/email", {"new_email": "Alice@New.example", "email_password": PASSWORD})

    assert response.status_code == 302
    user = fresh_user("alice@example.com")
    assert user is not None and user.pending_email == "alice@new.example"
    assert 'data-testid="pending-email"' in page(client.get("/account"))
    [message] = list(outbox)
    assert message["To"] == "alice@new.example"
    path = confirmation_path(message)

    # The link's page changes nothing by itself (mail scanners follow links); its button does.
    shown = client.get(path)
    assert shown.status_code == 200
    assert 'data-testid="new-email">alice@new.example<' in page(shown)
    assert fresh_user("alice@new.example") is None

    confirmed = alice.post(path, token_from=path)

    assert confirmed.status_code == 302
    assert fresh_user("alice@example.com") is None
    user = fresh_user("alice@new.example")
    assert user is not None and user.pending_email is None
    notice = list(outbox)[-1]
    assert notice["To"] == "alice@example.com" and "changed" in notice["Subject"]
    # Single use: the same link again is dead.
    assert client.get(path).status_code == 404
    assert alice.post(path, token_from="/account").status_code == 404
    # And the new address logs in.
    alice.logout()
    assert alice.login("alice@new.example").headers["Location"] == "/dashboard"


def test_the_link_works_in_a_browser_that_is_not_signed_in(app, alice, outbox):
    post(alice, "/account/email", {"new_email": "alice@new.example", "email_password": PASSWORD})
    path = confirmation_path(outbox[0])
    elsewhere = AuthActions(app.test_client())

    assert elsewhere.post(path, token_from=path).status_code == 302
    assert fresh_user("alice@new.example") is not None


def test_a_link_followed_while_signed_in_as_someone_else_changes_only_its_own_account(app, alice, outbox, fast_user):
    post(alice, "/account/email", {"new_email": "alice@new.example", "email_password": PASSWORD})
    path = confirmation_path(outbox[0])
    fast_user("bob@example.com", name="Bob")
    bob = AuthActions(app.test_client())
    bob.login("bob@example.com")

    assert bob.post(path, token_from=path).status_code == 302

    assert fresh_user("alice@new.example").name == "Alice Example"
    assert fresh_user("bob@example.com") is not None


def test_only_the_newest_link_works_and_cancelling_kills_it(alice, client, outbox):
    post(alice, "/account/email", {"new_email": "first@example.com", "email_password": PASSWORD})
    post(alice, "/account/email", {"new_email": "second@example.com", "email_password": PASSWORD})
    first, second = (confirmation_path(message) for message in list(outbox))

    assert client.get(first).status_code == 404
    assert client.get(second).status_code == 200

    post(alice, "/account/email/cancel")

    assert client.get(second).status_code == 404
    assert fresh_user("alice@example.com").pending_email is None


def test_an_expired_or_forged_link_is_refused(app, alice, client, outbox):
    post(alice, "/account/email", {"new_email": "alice@new.example", "email_password": PASSWORD})
    path = confirmation_path(outbox[0])

    app.config["EMAIL_CHANGE_MAX_AGE"] = -1
    assert client.get(path).status_code == 404
    app.config["EMAIL_CHANGE_MAX_AGE"] = 86400
    assert client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB")).status_code == 404
    assert client.get("/account/email/confirm/not-a-token").status_code == 404
    # A reset token is signed with another salt: no use here.
    reset = accounts.reset_token(fresh_user("alice@example.com"))
    assert client.get(f"/account/email/confirm/{reset}").status_code == 404
    assert fresh_user("alice@example.com") is not None
    assert client.get(path).status_code == 200, "the real link still works afterwards"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"new_email": "alice@new.example", "email_password": "wrong-password"}, "email_password", "not your current"),
        ({"new_email": "not-an-email", "email_password": PASSWORD}, "new_email", "Invalid email"),
        ({"new_email": "ALICE@example.com", "email_password": PASSWORD}, "new_email", "already your email"),
        ({"new_email": "bob@example.com", "email_password": PASSWORD}, "new_email", "Another account"),
        ({"new_email": "", "email_password": PASSWORD}, "new_email", "required"),
    ],
    ids=["wrong-password", "malformed", "same", "taken", "empty"],
)
def test_a_refused_email_change_is_a_field_error_and_sends_nothing(
    alice, client, outbox, fast_user, data, field, message
):
    fast_user("bob@example.com")

    response = post(alice, "/account/email", data)

    assert response.status_code == 400
    body = page(response)
    errors = re.search(rf'id="{field}-error">(.*?)</ul>', body, flags=re.S)
    assert errors and message.lower() in errors.group(1).lower()
    assert fresh_user("alice@example.com").pending_email is None
    assert list(outbox) == []


def test_an_address_taken_between_request_and_confirmation_cancels_the_change(alice, client, outbox, fast_user):
    post(alice, "/account/email", {"new_email": "alice@new.example", "email_password": PASSWORD})
    path = confirmation_path(outbox[0])
    fast_user("alice@new.example", name="Someone Else")

    response = alice.post(path, token_from=path)

    assert response.status_code == 302
    assert "Another account now uses that email address" in page(client.get("/account"))
    user = fresh_user("alice@example.com")
    assert user is not None and user.pending_email is None


def test_email_change_mails_are_rate_limited_per_person(app, alice, outbox):
    app.config["EMAIL_CHANGE_RATE_LIMIT"] = "2 per hour"
    statuses = [
        post(alice, "/account/email", {"new_email": f"n{n}@example.com", "email_password": PASSWORD}).status_code
        for n in range(3)
    ]

    assert statuses == [302, 302, 429]
    assert len(list(outbox)) == 2


# --- password -----------------------------------------------------------------------------------------


def test_changing_the_password_keeps_this_browser_and_signs_out_the_others(app, alice, client):
    phone = AuthActions(app.test_client())
    phone.login("alice@example.com")
    user_id = fresh_user("alice@example.com").id
    assert sessions_of(user_id) == 2

    response = post(
        alice,
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )

    assert response.status_code == 302
    assert opens(client)
    assert not opens(phone.client)
    assert sessions_of(user_id) == 1
    user = fresh_user("alice@example.com")
    assert user.check_password(NEW_PASSWORD) and not user.check_password(PASSWORD)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"current_password": "wrong-password", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
            "current_password",
        ),
        ({"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"}, "new_password"),
        (
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": "different-one"},
            "confirm_password",
        ),
        ({"current_password": "", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}, "current_password"),
    ],
    ids=["wrong-current", "too-short", "mismatch", "no-current"],
)
def test_a_refused_password_change_is_a_field_error_and_changes_nothing(app, alice, client, data, field):
    phone = AuthActions(app.test_client())
    phone.login("alice@example.com")

    response = post(alice, "/account/password", data)

    assert response.status_code == 400
    assert f'id="{field}-error"' in page(response)
    assert fresh_user("alice@example.com").check_password(PASSWORD)
    assert opens(phone.client)


def test_password_guesses_on_the_account_page_are_rate_limited(app, alice):
    app.config["ACCOUNT_RATE_LIMIT"] = "3 per hour"
    wrong = {"current_password": "guess-guess", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}

    statuses = [post(alice, "/account/password", wrong).status_code for _ in range(4)]

    assert statuses == [400, 400, 400, 429]
    # The limit is per person, and it covers the other forms that check the password too.
    assert post(alice, "/account/delete", {"delete_password": PASSWORD}).status_code == 429
    assert fresh_user("alice@example.com") is not None


# --- sign out everywhere ------------------------------------------------------------------------------


def test_sign_out_everywhere_ends_every_session_this_one_included(app, alice, client, fast_user):
    phone = AuthActions(app.test_client())
    phone.login("alice@example.com", remember="y")
    remember = phone.client.get_cookie("remember_token").value
    fast_user("bob@example.com")
    bob = AuthActions(app.test_client())
    bob.login("bob@example.com")

    response = post(alice, "/account/sign-out-everywhere")

    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"
    assert not opens(client)
    assert not opens(phone.client)
    replayed = app.test_client()
    replayed.set_cookie("remember_token", remember)
    assert not opens(replayed)
    assert sessions_of(fresh_user("alice@example.com").id) == 0
    assert opens(bob.client), "another person's sessions are theirs"


# --- delete the account -------------------------------------------------------------------------------


def test_deleting_your_account_deletes_your_solo_teams_and_leaves_the_others(app, alice, client, fast_user, make_team):
    alice_user = fresh_user("alice@example.com")
    personal = alice_user.current_team_id
    credits.grant(personal, 40, source="purchase", key="pack-1", reference="cs_1")
    credits.spend(personal, 15, key="spent-1", actor=credits.Actor("user", alice_user.id))
    bob = fast_user("bob@example.com", name="Bob")
    shared = make_team(bob, "Shared", members=[(alice_user, "owner")])
    db.session.commit()
    body = page(client.get("/account"))
    assert "Alice's team</strong> is deleted with it" in body
    assert "You leave <strong>Shared</strong>" in body

    response = post(alice, "/account/delete", {"delete_password": PASSWORD})

    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert fresh_user("alice@example.com") is None
    assert not opens(client)
    team = db.session.get(Team, personal)
    assert team is not None and team.deleted_at is not None, "archived, not removed: its ledger stays"
    assert credits.balance(personal).total == 0
    assert db.session.scalar(select(func.count()).select_from(Membership).filter_by(team_id=personal)) == 0
    assert db.session.scalar(select(func.count()).select_from(Membership).filter_by(team_id=shared.id)) == 1
    spend = db.session.scalar(select(LedgerEntry).filter_by(team_id=personal, kind="spend"))
    assert spend.amount == -15 and spend.actor_user_id is None
    assert credits.verify() == []
    # Archived, it is no longer anyone's personal team: the monthly job grants it nothing more.
    entries = db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=personal))
    credits.roll_over_free_teams([personal], team.current_period_end + timedelta(days=1))
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=personal)) == entries
    # And the address is free again.
    assert alice.signup("Alice Again", "alice@example.com").status_code == 302


def test_deleting_your_account_needs_your_password(alice, client):
    response = post(alice, "/account/delete", {"delete_password": "not-my-password"})

    assert response.status_code == 400
    assert "That is not your password." in page(response)
    assert fresh_user("alice@example.com") is not None and opens(client)


def test_a_sole_owner_of_a_team_with_members_cannot_delete_the_account(alice, client, fast_user, make_team):
    alice_user = fresh_user("alice@example.com")
    bob = fast_user("bob@example.com")
    make_team(alice_user, "Crew", members=[(bob, "member")])

    body = page(client.get("/account"))
    assert "You are the only owner of Crew, which has other members" in body
    assert 'action="/account/delete"' not in body

    response = post(alice, "/account/delete", {"delete_password": PASSWORD})

    assert response.status_code == 409
    assert "only owner of Crew" in page(response)
    assert fresh_user("alice@example.com") is not None
    assert fresh_user("bob@example.com") is not None


def test_a_team_with_a_subscription_blocks_deleting_the_account(alice, client):
    team = db.session.get(Team, fresh_user("alice@example.com").current_team_id)
    team.stripe_subscription_id, team.subscription_status, team.plan_code = "sub_1", "active", "pro"
    db.session.commit()

    assert "pays for a subscription" in page(client.get("/account"))
    response = post(alice, "/account/delete", {"delete_password": PASSWORD})

    assert response.status_code == 409
    assert fresh_user("alice@example.com") is not None
    assert db.session.get(Team, team.id).deleted_at is None


def test_a_personal_team_with_members_must_be_handed_over_since_it_cannot_be_deleted_alone(alice, client, fast_user):
    alice_user = fresh_user("alice@example.com")
    bob = fast_user("bob@example.com")
    db.session.add(Membership(team_id=alice_user.current_team_id, user_id=bob.id, role="member"))
    db.session.commit()

    blockers = page(client.get("/account")).split('data-testid="deletion-blockers"', 1)[1].split("</div>", 1)[0]

    assert "make one of them owner (Team → Members) first" in blockers
    assert "delete the team" not in blockers
