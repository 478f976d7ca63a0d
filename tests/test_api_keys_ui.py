"""Team settings: API keys are created (shown once), listed by prefix with their last use, and revoked."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from starter.extensions import db
from starter.models import ApiKey


def create_key(auth, name="Backend"):  # type: ignore[no-untyped-def]
    response = auth.post("/team/api-keys", {"name": name}, token_from="/team/api-keys")
    match = re.search(r'data-testid="new-key">(cs_[0-9a-f]{8}_[0-9A-Za-z]{32})<', response.get_data(as_text=True))
    return response, match.group(1) if match else None


def test_a_key_is_shown_once_stored_hashed_and_works_on_the_api(app, auth, make_user):
    make_user("owner@example.com")
    auth.login("owner@example.com")
    response, raw = create_key(auth)
    assert response.status_code == 201 and raw
    assert response.headers["Cache-Control"] == "no-store"
    stored = db.session.scalar(select(ApiKey))
    assert stored.key_hash != raw and raw not in stored.key_hash and raw.startswith(stored.prefix)
    listing = auth.client.get("/team/api-keys").get_data(as_text=True)
    assert stored.prefix in listing and raw not in listing
    api = app.test_client().get("/api/v1/balance", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 200 and api.json["plan"] == 100


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
