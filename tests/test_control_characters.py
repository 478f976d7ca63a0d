"""Control characters in what people type: a 400 (or a form error) that changes nothing, never a 500.

NUL reached PostgreSQL's driver from many fields (a 500); a line break in a team or user name broke
the invitation mail's headers (a 500). ``starter/forms.py`` refuses them in one place.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from starter.extensions import db
from starter.models import ApiKey, Invitation, LedgerEntry, StripeEvent, Team, User
from tests.conftest import AuthActions

CONTROL_VALUES = ["ab\x00cd", "\x00", "ab\x1bcd", "ab\x7fcd"]


def count(model) -> int:  # type: ignore[no-untyped-def]
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def snapshot() -> dict[str, int]:
    return {model.__tablename__: count(model) for model in (User, Team, ApiKey, Invitation, LedgerEntry)}


@pytest.fixture
def admin(make_user, auth):  # type: ignore[no-untyped-def]
    """A site admin, logged in, owner of a personal team."""
    make_user("root@example.com", name="Ada Admin", is_site_admin=True)
    auth.login("root@example.com")
    return auth


def team_id_of(email: str) -> int:
    return db.session.scalar(select(User.current_team_id).filter_by(email=email))


@pytest.mark.parametrize("value", CONTROL_VALUES, ids=repr)
def test_sign_up_with_a_control_character_in_the_name_is_a_400(client, auth, value):
    before = snapshot()

    response = auth.signup(value, "eve@example.com")

    assert response.status_code == 400
    assert "control character" in response.get_data(as_text=True)
    assert snapshot() == before


@pytest.mark.parametrize("value", CONTROL_VALUES, ids=repr)
def test_log_in_with_a_control_character_in_the_email_is_a_400(client, auth, fast_user, value):
    fast_user("alice@example.com")

    response = auth.login(f"alice{value}@example.com")

    assert response.status_code == 400
    assert client.get("/dashboard").status_code == 302  # not logged in


@pytest.mark.parametrize("value", CONTROL_VALUES, ids=repr)
def test_team_and_key_names_with_a_control_character_are_a_400(admin, value):
    before = snapshot()

    team = admin.post("/team/new", {"name": f"Acme{value}"}, token_from="/team/new")
    key = admin.post("/team/api-keys", {"name": f"Backend{value}"}, token_from="/team/api-keys")

    assert (team.status_code, key.status_code) == (400, 400)
    assert snapshot() == before


@pytest.mark.parametrize("value", CONTROL_VALUES, ids=repr)
def test_admin_reason_and_search_with_a_control_character_are_a_400(admin, value):
    team_id = team_id_of("root@example.com")
    before = snapshot()

    adjust = admin.post(
        f"/admin/teams/{team_id}/adjust",
        {"amount": "50", "reason": f"goodwill{value}", "idempotency_key": "k-1"},
        token_from=f"/admin/teams/{team_id}",
    )
    search = admin.client.get("/admin", query_string={"q": f"acme{value}"})

    assert (adjust.status_code, search.status_code) == (400, 400)
    assert snapshot() == before


@pytest.mark.parametrize("value", CONTROL_VALUES, ids=repr)
def test_a_checkout_session_id_with_a_control_character_is_a_400(admin, value):
    response = admin.client.get("/billing/success", query_string={"session_id": f"cs_test{value}"})

    assert response.status_code == 400


@pytest.mark.parametrize("value", ["evt\x00x", "evt\x1bx"], ids=repr)
def test_replaying_an_event_id_with_a_control_character_is_a_400(admin, value):
    response = admin.post(f"/admin/events/{value}/replay", token_from="/admin/events")

    assert response.status_code == 400
    assert count(StripeEvent) == 0


@pytest.mark.parametrize("name", ["Acme\r\nBcc: everyone@example.com", "Acme\nCorp", "Acme\tCorp", "Acme\u2028Corp"])
def test_a_team_name_on_two_lines_is_a_form_error(admin, name):
    before = snapshot()

    response = admin.post("/team/new", {"name": name}, token_from="/team/new")

    assert response.status_code == 200
    assert "Use a single line" in response.get_data(as_text=True)
    assert snapshot() == before


def test_a_user_name_on_two_lines_is_a_form_error(client, auth):
    response = auth.signup("Eve\r\nBcc: everyone@example.com", "eve@example.com")

    assert response.status_code == 200
    assert "Use a single line" in response.get_data(as_text=True)
    assert count(User) == 0


def test_invitations_from_a_team_with_a_proper_name_are_mailed(admin, outbox):
    """The invitation mail names the team and the inviter: with one-line names it always sends."""
    assert admin.post("/team/new", {"name": "Acme Corp"}, token_from="/team/new").status_code == 302

    invite = {"email": "bob@example.com", "role": "member"}
    response = admin.post("/team/invitations", invite, token_from="/team/members")

    assert response.status_code == 302
    assert [message["Subject"] for message in outbox] == ["Join Acme Corp"]


def test_a_prompt_may_span_lines(make_user, auth):
    make_user("owner@example.com")
    auth.login("owner@example.com")

    response = auth.post(
        "/generate",
        {"prompt": "Line one\r\n\tLine two", "idempotency_key": "multi-line-1"},
        token_from="/generate",
    )

    assert response.status_code == 200
    assert 'data-testid="output"' in response.get_data(as_text=True)


def test_a_prompt_with_nul_is_a_400_and_charges_nothing(make_user, auth):
    make_user("owner@example.com")
    auth.login("owner@example.com")
    before = count(LedgerEntry)

    response = auth.post("/generate", {"prompt": "a\x00b", "idempotency_key": "nul-1"}, token_from="/generate")

    assert response.status_code == 400
    assert count(LedgerEntry) == before


def test_the_api_and_the_webhook_keep_their_own_checks(app):
    """The JSON API answers its own 4xx (docs/api.md) and the webhook its 400: the form check stays out."""
    api = app.test_client().get("/api/v1/ledger", query_string={"feature": "a\x00b"})
    webhook = AuthActions(app.test_client()).client.post("/webhooks/stripe?x=\x1b", data=b"{}")

    assert api.status_code == 401 and api.json["error"]["code"] == "unauthorized"
    assert webhook.status_code == 400 and webhook.json["error"]["code"] == "invalid_event"
