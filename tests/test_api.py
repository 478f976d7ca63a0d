"""The JSON API: keys and authentication, balance, spend, bad input, rate limit; helpers for the other API tests.

Holds and the ledger are in ``test_api_holds_ledger.py``, the OpenAPI document and the Schemathesis
run in ``test_api_openapi.py``, HTTP races on PostgreSQL in ``test_api_http.py``. Everything runs on
SQLite and on PostgreSQL. Every POST goes without a CSRF token (CSRF is on in tests): the API is
exempt because no cookie authenticates it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from starter import api_keys, credits
from starter.extensions import db
from starter.models import ApiKey, LedgerEntry, utcnow

from .factories import ledger_team


def new_team(slug: str, purchased: int = 1_000) -> int:
    team = ledger_team(slug)
    if purchased:
        credits.grant(team.id, purchased, source="purchase", key="pack")
    db.session.commit()
    return team.id


def new_key(team_id: int, name: str = "backend") -> str:
    _, raw = api_keys.create(team_id, name)
    db.session.commit()
    return raw


class Api:
    """The test client with a team's bearer key on every call."""

    def __init__(self, client, key: str) -> None:  # type: ignore[no-untyped-def]
        self.client, self.key = client, key

    def headers(self, extra: dict | None) -> dict:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    def get(self, path: str, headers: dict | None = None, **kwargs):  # type: ignore[no-untyped-def]
        return self.client.get(f"/api/v1{path}", headers=self.headers(headers), **kwargs)

    def post(self, path: str, json=None, headers: dict | None = None, **kwargs):  # type: ignore[no-untyped-def]
        return self.client.post(f"/api/v1{path}", json=json, headers=self.headers(headers), **kwargs)


@pytest.fixture
def team(app) -> int:
    return new_team("acme")


@pytest.fixture
def api(client, team) -> Api:
    return Api(client, new_key(team))


def error_of(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.json["error"]


def entries(team_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=team_id))


# --- keys and authentication ------------------------------------------------------------------------


def test_keys_are_shown_once_and_stored_hashed(app, team):
    key, raw = api_keys.create(team, "  CI  ")
    db.session.commit()
    assert api_keys.KEY_PATTERN.fullmatch(raw) and raw.startswith(key.prefix + "_")
    assert key.name == "CI" and raw not in key.key_hash and len(key.key_hash) == 64
    assert api_keys.authenticate(raw).id == key.id
    assert api_keys.authenticate(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert api_keys.revoke(team, key.id) is key and key.revoked_at is not None
    assert api_keys.authenticate(raw) is None
    assert [k.id for k in api_keys.team_keys(team)] == [key.id]
    assert api_keys.team_keys(team, include_revoked=False) == []
    assert api_keys.revoke(new_team("other"), key.id) is None


def test_missing_or_unknown_key_is_401_with_www_authenticate(client, team):
    fake = "Bearer cs_00000000_" + "a" * 32
    for authorization in (None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", fake, "Bearer not-a-key"):
        response = client.get("/api/v1/balance", headers={"Authorization": authorization} if authorization else {})
        assert error_of(response, 401)["code"] == "unauthorized", authorization
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_secret_or_a_revoked_key_is_401(app, client, api, team):
    wrong = api.key[:-4] + ("0000" if not api.key.endswith("0000") else "1111")
    assert Api(client, wrong).get("/balance").status_code == 401
    assert api.get("/balance").status_code == 200
    key = db.session.scalar(select(ApiKey).filter_by(prefix=api.key[:11]))
    api_keys.revoke(team, key.id)
    db.session.commit()
    response = api.get("/balance")
    assert error_of(response, 401)["code"] == "unauthorized"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert api.post("/spend", {"amount": 1, "idempotency_key": "k"}).status_code == 401
    assert entries(team) == 1


def test_a_logged_in_browser_session_never_authenticates_the_api(client, auth, make_user):
    make_user(email="ada@example.com")
    assert auth.login("ada@example.com").status_code == 302
    assert client.get("/dashboard").status_code == 200  # the session works for pages
    assert error_of(client.get("/api/v1/balance"), 401)["code"] == "unauthorized"
    response = client.post("/api/v1/spend", json={"amount": 1, "idempotency_key": "k"})
    assert error_of(response, 401)["code"] == "unauthorized"  # not a CSRF failure, and nothing spent


def test_last_use_is_recorded_at_most_once_a_minute(app, api):
    updates: list[str] = []

    def watch(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.startswith("UPDATE api_keys") and "last_used_at IS NULL" in statement:
            updates.append(statement)  # the API's conditional write, not the test's own

    key = db.session.scalar(select(ApiKey).filter_by(prefix=api.key[:11]))
    assert key.last_used_at is None
    event.listen(db.engine, "before_cursor_execute", watch)
    try:
        api.get("/balance")
        db.session.expire_all()
        first = key.last_used_at
        assert first is not None and len(updates) == 1
        for _ in range(3):
            api.get("/balance")
        db.session.expire_all()
        assert key.last_used_at == first and len(updates) == 1, "no write while the last use is fresh"
        key.last_used_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
        api.get("/balance")
        db.session.expire_all()
        assert key.last_used_at > first and len(updates) == 2
    finally:
        event.remove(db.engine, "before_cursor_execute", watch)


def test_cli_creates_a_working_key(app, runner, client, team):
    result = runner.invoke(args=["api-keys", "create", "acme", "Backend"])
    assert result.exit_code == 0, result.output
    raw = result.output.strip().splitlines()[-1]
    assert api_keys.KEY_PATTERN.fullmatch(raw)
    assert Api(client, raw).get("/balance").json["available"] == 1_000
    assert runner.invoke(args=["api-keys", "create", "nope", "x"]).exit_code != 0


# --- balance and spend --------------------------------------------------------------------------------


def test_balance(app, api, team):
    now = utcnow()
    credits.grant(team, 100, source="plan", key="plan", expires_at=now + timedelta(days=3), period_start=now)
    credits.hold(team, 30, key="h")
    db.session.commit()
    body = api.get("/balance").json
    assert {k: v for k, v in body.items() if k != "next_expiry_at"} == {
        "plan": 100,
        "purchased": 1_000,
        "other": 0,
        "held": 30,
        "available": 1_070,
        "next_expiry_amount": 70,
    }
    assert body["next_expiry_at"].endswith("Z")


def test_spend_by_feature_and_by_amount(app, api, team):
    response = api.post("/spend", {"feature": "ai_generation", "idempotency_key": "a", "metadata": {"job": 7}})
    assert response.status_code == 201
    entry = response.json
    assert entry["kind"] == "spend" and entry["amount"] == -10 and entry["balance_after"] == 990
    assert entry["feature"] == "ai_generation" and entry["replayed"] is False and entry["created_at"].endswith("Z")
    response = api.post("/spend", {"amount": 15, "description": "Batch"}, headers={"Idempotency-Key": "b"})
    assert response.status_code == 201 and response.json["balance_after"] == 975
    assert api.get("/balance").json["available"] == 975
    row = db.session.get(LedgerEntry, entry["id"])
    assert row.actor_type == "api" and row.meta == {"job": 7}
    assert credits.verify() == []


def test_a_repeated_key_replays_the_first_entry_and_debits_once(app, api, team):
    first = api.post("/spend", {"amount": 5, "idempotency_key": "once"})
    again = api.post("/spend", {"amount": 5}, headers={"Idempotency-Key": "once"})
    same = api.post("/spend", {"amount": 5, "idempotency_key": "once"}, headers={"Idempotency-Key": "once"})
    assert first.status_code == 201 and again.status_code == 200 and same.status_code == 200
    assert again.json == {**first.json, "replayed": True} == {**same.json, "replayed": True}
    assert api.get("/balance").json["available"] == 995
    conflict = api.post("/spend", {"amount": 6, "idempotency_key": "once"})
    assert error_of(conflict, 409)["code"] == "idempotency_conflict"
    assert error_of(api.post("/holds", {"amount": 5, "idempotency_key": "once"}), 409)["code"] == "idempotency_conflict"
    assert entries(team) == 2


def test_insufficient_credits_is_402_with_figures_and_changes_nothing(app, api, team):
    error = error_of(api.post("/spend", {"amount": 1_001, "idempotency_key": "big"}), 402)
    assert error["code"] == "insufficient_credits" and error["required"] == 1_001 and error["available"] == 1_000
    assert entries(team) == 1 and api.get("/balance").json["available"] == 1_000


INVALID_SPENDS = [
    ({"amount": 0}, "invalid_amount"),
    ({"amount": -5}, "invalid_amount"),
    ({"amount": 1.5}, "invalid_amount"),
    ({"amount": 2.0}, "invalid_amount"),
    ({"amount": True}, "invalid_amount"),
    ({"amount": "10"}, "invalid_amount"),
    ({"amount": [1]}, "invalid_amount"),
    ({"amount": credits.MAX_AMOUNT + 1}, "invalid_amount"),
    ({"amount": 10**40}, "invalid_amount"),
    ({"feature": "teleport"}, "unknown_feature"),
    ({"feature": 12}, "invalid_request"),
    ({"feature": ["ai_generation"]}, "invalid_request"),
    ({}, "invalid_request"),
    ({"amount": None, "feature": "ai_generation"}, "invalid_request"),
    ({"amount": 1, "colour": "red"}, "invalid_request"),
    ({"amount": 1, "description": "x" * 256}, "invalid_request"),
    ({"amount": 1, "description": "nul\u0000byte"}, "invalid_request"),
    ({"amount": 1, "description": "\ud800"}, "invalid_request"),
    ({"amount": 1, "metadata": []}, "invalid_request"),
    ({"amount": 1, "metadata": {"k": "\u0000"}}, "invalid_request"),
    ({"amount": 1, "metadata": {"k": "x" * 5_000}}, "invalid_request"),
    ({"amount": 1, "idempotency_key": 5}, "invalid_request"),
    ({"amount": 1, "idempotency_key": ""}, "invalid_request"),
    ({"amount": 1, "idempotency_key": "k" * 256}, "invalid_request"),
    ({"amount": 1, "idempotency_key": "k" * 252}, "invalid_request"),
    ({"amount": 1, "idempotency_key": "   "}, "invalid_request"),
    ({"amount": 1, "idempotency_key": "tab\tkey"}, "invalid_request"),
]


def test_invalid_spends_are_422_and_change_nothing(app, api, team):
    for body, code in INVALID_SPENDS:
        body = {"idempotency_key": "k", **body} if "idempotency_key" not in body and body else body
        error = error_of(api.post("/spend", body), 422)
        assert error["code"] == code and error["message"], body
    nested = "[" * 900 + "1" + "]" * 900
    deep = '{"amount": 1, "idempotency_key": "k", "metadata": {"a": ' + nested + "}}"
    response = api.post("/spend", data=deep, headers={"Content-Type": "application/json"})
    assert error_of(response, 422)["field"] == "metadata"  # checked without recursion: no RecursionError
    assert entries(team) == 1


def test_the_idempotency_key_is_required_and_header_and_field_must_agree(app, api, team):
    error = error_of(api.post("/spend", {"amount": 1}), 422)
    assert error["code"] == "invalid_request" and error["field"] == "idempotency_key"
    mismatch = api.post("/spend", {"amount": 1, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"})
    assert error_of(mismatch, 422)["code"] == "idempotency_key_mismatch"
    assert entries(team) == 1


NOT_JSON_OBJECTS = [
    (b"{not json", "application/json", "invalid_json"),
    (b'{"amount": NaN, "idempotency_key": "k"}', "application/json", "invalid_json"),
    (b'{"amount": 1, "idempotency_key": "\xff\xfe"}', "application/json", "invalid_json"),
    (b"[" * 100_000, "application/json", "invalid_json"),
    (b'[{"amount": 1}]', "application/json", "invalid_request"),
    (b'"amount"', "application/json", "invalid_request"),
    (b"42", "application/json", "invalid_request"),
    (b'{"amount": 1, "idempotency_key": "k"}', "text/plain", "invalid_request"),
    (b"amount=1&idempotency_key=k", "application/x-www-form-urlencoded", "invalid_request"),
]


def test_bodies_that_are_not_json_objects_are_400(app, api, team):
    for data, content_type, code in NOT_JSON_OBJECTS:
        for path in ("/spend", "/holds", "/holds/1/release"):
            response = api.post(path, data=data, headers={"Content-Type": content_type})
            assert error_of(response, 400)["code"] == code, (path, data[:40])
    assert entries(team) == 1


def test_a_too_large_body_is_413_json(app, api):
    response = api.post("/spend", data=b" " * (1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert error_of(response, 413)["code"] == "request_too_large"


# --- the rest of /api ---------------------------------------------------------------------------------


def test_unknown_routes_and_wrong_methods_answer_json(app, api):
    assert error_of(api.get("/nothing-here"), 404)["code"]
    assert error_of(api.post("/balance", {}), 405)["code"] == "method_not_allowed"
    assert error_of(api.get("/spend"), 405)["code"] == "method_not_allowed"
    assert api.get("/balance").headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("app_config", [{"API_RATE_LIMIT": "3 per minute"}])
def test_the_rate_limit_counts_per_key_and_answers_429_with_retry_after(app, client, api, team):
    statuses = [api.get("/balance").status_code, api.get("/ledger").status_code]
    statuses.append(api.post("/spend", {"amount": 1, "idempotency_key": "a"}).status_code)
    assert statuses == [200, 200, 201]
    response = api.post("/spend", {"amount": 1, "idempotency_key": "b"})
    assert error_of(response, 429)["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert api.get("/balance").status_code == 429
    assert Api(client, new_key(team, "second")).get("/balance").status_code == 200, "another key has its own budget"
    assert entries(team) == 2


def test_client_keys_never_collide_with_the_apps_own_keys(app, api, team):
    """A client that sends "expire:hold:<id>" must not block the job that expires that hold."""
    from datetime import timedelta

    from starter.models import Hold

    hold = api.post("/holds", {"amount": 5, "ttl_seconds": 60, "idempotency_key": "h"}).json
    assert api.post("/spend", {"amount": 1, "idempotency_key": f"expire:hold:{hold['id']}"}).status_code == 201
    assert credits.release_expired_holds(utcnow() + timedelta(minutes=5)) == 1
    db.session.commit()
    assert db.session.get(Hold, hold["id"]).status == "expired"
    assert credits.verify() == []
