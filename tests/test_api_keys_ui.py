"""Team settings: API keys are created (shown once), listed by prefix with their last use, and revoked."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select, update

from starter import credits
from starter.extensions import db
from starter.models import ApiKey, Membership
from tests.conftest import AuthActions


def create_key(auth, name="Backend"):  # type: ignore[no-untyped-def]
    response = auth.post("/team/api-keys", {"name": name}, token_from="/team/api-keys", follow_redirects=True)
    match = re.search(r'data-testid="new-key">(cs_[0-9a-f]{8}_[0-9A-Za-z]{32})<', response.get_data(as_text=True))
    return response, match.group(1) if match else None


def test_a_key_is_shown_once_stored_hashed_and_works_on_the_api(app, auth, make_user):
    make_user("owner@example.com")
    auth.login("owner@example.com")
    response, raw = create_key(auth)
    assert response.status_code == 200 and raw
    assert response.headers["Cache-Control"] == "no-store"
    stored = db.session.scalar(select(ApiKey))
    assert stored.key_hash != raw and raw not in stored.key_hash and raw.startswith(stored.prefix)
    listing = auth.client.get("/team/api-keys").get_data(as_text=True)
    assert stored.prefix in listing and raw not in listing
    api = app.test_client().get("/api/v1/balance", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 200 and api.json["plan"] == 100


def test_creating_a_key_redirects_and_shows_the_key_once_so_a_refresh_makes_no_second_key(app, auth, make_user):
    make_user("owner@example.com")
    auth.login("owner@example.com")

    posted = auth.post("/team/api-keys", {"name": "Backend"}, token_from="/team/api-keys")
    assert posted.status_code == 303
    assert posted.headers["Location"] == "/team/api-keys"  # the secret is never in a URL
    shown = auth.client.get(posted.headers["Location"]).get_data(as_text=True)
    refreshed = auth.client.get(posted.headers["Location"]).get_data(as_text=True)

    stored = db.session.scalars(select(ApiKey)).all()
    assert len(stored) == 1
    raw = re.search(rf'data-testid="new-key">({stored[0].prefix}_[0-9A-Za-z]{{32}})<', shown).group(1)
    assert 'data-testid="new-key"' not in refreshed and stored[0].prefix in refreshed
    with auth.client.session_transaction() as session:
        assert raw not in str(dict(session))  # gone from the session cookie once shown


def test_a_new_key_is_not_shown_in_another_team(app, auth, make_user, make_team):
    owner = make_user("owner@example.com")
    other = make_team(owner, "Other")
    auth.login("owner@example.com")
    personal_id = db.session.scalar(select(Membership.team_id).filter_by(user_id=owner.id).order_by(Membership.id))
    assert auth.post("/team/switch", {"team_id": str(personal_id)}, token_from="/dashboard").status_code == 302
    auth.post("/team/api-keys", {"name": "Backend"}, token_from="/team/api-keys")

    auth.post("/team/switch", {"team_id": str(other.id)}, token_from="/dashboard")
    page = auth.client.get("/team/api-keys").get_data(as_text=True)

    assert 'data-testid="new-key"' not in page


def test_revoking_a_key_makes_the_api_refuse_it(app, auth, make_user):
    make_user("owner@example.com")
    auth.login("owner@example.com")
    _, raw = create_key(auth)
    key_id = db.session.scalar(select(ApiKey.id))
    response = auth.post(f"/team/api-keys/{key_id}/revoke", token_from="/team/api-keys")
    assert response.status_code == 302
    api = app.test_client().get("/api/v1/balance", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 401
    assert "revoked" in auth.client.get("/team/api-keys").get_data(as_text=True)


def test_members_cannot_manage_keys_and_other_teams_keys_are_not_found(app, auth, make_user, make_team):
    owner, member = make_user("o@example.com"), make_user("m@example.com")
    make_user("s@example.com")
    acme = make_team(owner, "Acme", members=[(member, "member")])
    auth.login("s@example.com")
    create_key(auth, "Stranger key")
    foreign_id = db.session.scalar(select(ApiKey.id))
    auth.logout()
    auth.login("o@example.com")
    assert auth.post(f"/team/api-keys/{foreign_id}/revoke", token_from="/team/api-keys").status_code == 404
    assert db.session.get(ApiKey, foreign_id).revoked_at is None
    auth.logout()
    auth.login("m@example.com")
    assert auth.post("/team/switch", {"team_id": str(acme.id)}, token_from="/dashboard").status_code == 302
    assert auth.client.get("/team/api-keys").status_code == 403
    assert auth.post("/team/api-keys", {"name": "x"}, token_from="/dashboard").status_code == 403
    assert db.session.scalar(select(func.count()).select_from(ApiKey)) == 1


# -- keys follow the role of whoever created them ----------------------------------------------


def api_calls(app, raw: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(spend status, ledger status) for the key: what a former admin's backend would still try."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {raw}"}
    spend = client.post("/api/v1/spend", json={"amount": 1}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    return spend.status_code, client.get("/api/v1/ledger", headers=headers).status_code


@pytest.fixture
def acme_with_admin_key(app, make_user, make_team):  # type: ignore[no-untyped-def]
    """Olivia owns Acme; Ada, its admin, created a key for it. Returns (team, Olivia's browser, Ada's id, key)."""
    owner, admin = make_user("olivia@example.com"), make_user("ada@example.com", name="Ada Admin")
    team = make_team(owner, "Acme", members=[(admin, "admin")])
    credits.grant(team.id, 100, source="promo", key="welcome")  # a new team has no free allowance
    admin.current_team_id = team.id
    db.session.commit()
    ada = AuthActions(app.test_client())
    ada.login("ada@example.com")
    _, raw = create_key(ada, "Ada's backend")
    assert api_calls(app, raw) == (201, 200)
    olivia = AuthActions(app.test_client())
    olivia.login("olivia@example.com")
    assert olivia.post("/team/switch", {"team_id": str(team.id)}, token_from="/dashboard").status_code == 302
    return team, olivia, admin.id, raw


def membership_id(team_id: int, user_id: int) -> int:
    return db.session.scalar(select(Membership.id).filter_by(team_id=team_id, user_id=user_id))


def test_a_removed_admins_keys_stop_working(app, acme_with_admin_key):
    team, olivia, ada_id, raw = acme_with_admin_key

    response = olivia.post(f"/team/members/{membership_id(team.id, ada_id)}/remove", token_from="/team/members")

    assert response.status_code == 302
    assert "The 1 API key(s) they created were revoked." in olivia.client.get("/team/members").get_data(as_text=True)
    assert api_calls(app, raw) == (401, 401)
    assert db.session.scalar(select(ApiKey.revoked_at)) is not None


def test_a_demoted_admins_keys_stop_working_and_stay_revoked(app, acme_with_admin_key):
    team, olivia, ada_id, raw = acme_with_admin_key
    path = f"/team/members/{membership_id(team.id, ada_id)}/role"

    assert olivia.post(path, {"role": "member"}, token_from="/team/members").status_code == 302
    assert api_calls(app, raw) == (401, 401)

    assert olivia.post(path, {"role": "admin"}, token_from="/team/members").status_code == 302
    assert api_calls(app, raw) == (401, 401)  # promoted again: the old key is revoked for good


def test_a_role_changed_by_any_other_means_still_stops_the_key(app, acme_with_admin_key):
    """The API checks the creator's role on every call, not only when the members page changes it."""
    team, _olivia, ada_id, raw = acme_with_admin_key
    db.session.execute(update(Membership).filter_by(team_id=team.id, user_id=ada_id).values(role="member"))
    db.session.commit()

    assert api_calls(app, raw) == (401, 401)
    assert db.session.scalar(select(ApiKey.revoked_at)) is None


def test_a_promotion_between_admin_and_owner_keeps_the_key(app, acme_with_admin_key):
    team, olivia, ada_id, raw = acme_with_admin_key

    olivia.post(f"/team/members/{membership_id(team.id, ada_id)}/role", {"role": "owner"}, token_from="/team/members")

    assert api_calls(app, raw) == (201, 200)


def test_a_command_line_key_has_no_creator_and_keeps_working(app, runner, acme_with_admin_key):
    team, olivia, _ada_id, _raw = acme_with_admin_key
    result = runner.invoke(args=["api-keys", "create", team.slug, "Cron job"])
    raw = result.output.strip().splitlines()[-1]

    assert api_calls(app, raw) == (201, 200)
    page = olivia.client.get("/team/api-keys").get_data(as_text=True)
    assert re.findall(r'data-testid="key-creator">([^<]*)<', page) == ["Command line", "Ada Admin"]


def test_the_keys_page_shows_who_created_each_key_and_when_it_was_last_used(app, acme_with_admin_key):
    _team, olivia, _ada_id, _raw = acme_with_admin_key

    page = olivia.client.get("/team/api-keys").get_data(as_text=True)

    assert re.findall(r'data-testid="key-creator">([^<]*)<', page) == ["Ada Admin"]
    assert "Never" not in page  # used by the fixture's calls
