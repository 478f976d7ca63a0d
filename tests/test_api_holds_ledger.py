"""The JSON API's holds (create, capture, release), tenant isolation and the ledger listing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from starter import credits
from starter.extensions import db
from starter.models import utcnow

from .test_api import Api, entries, error_of, new_key, new_team


@pytest.fixture
def team(app) -> int:
    return new_team("acme")


@pytest.fixture
def api(client, team) -> Api:
    return Api(client, new_key(team))


# --- holds -----------------------------------------------------------------------------------------


def test_hold_capture_and_release(app, api, team):
    created = api.post("/holds", {"feature": "image_upscale", "ttl_seconds": 60, "idempotency_key": "h1"})
    assert created.status_code == 201
    hold = created.json
    assert hold["amount"] == 25 and hold["status"] == "active" and hold["feature"] == "image_upscale"
    assert (
        api.post("/holds", {"feature": "image_upscale", "ttl_seconds": 60, "idempotency_key": "h1"}).status_code == 200
    )
    assert api.get("/balance").json["held"] == 25

    too_much = api.post(f"/holds/{hold['id']}/capture", {"amount": 26, "idempotency_key": "c1"})
    assert error_of(too_much, 422)["code"] == "invalid_amount"
    missing = api.post(f"/holds/{hold['id']}/capture", {"idempotency_key": "c1"})
    assert error_of(missing, 422)["field"] == "amount"
    captured = api.post(f"/holds/{hold['id']}/capture", {"amount": 20, "idempotency_key": "c1"})
    assert captured.status_code == 200 and captured.json["status"] == "captured"
    assert captured.json["captured_amount"] == 20 and captured.json["replayed"] is False
    replay = api.post(f"/holds/{hold['id']}/capture", {"amount": 20}, headers={"Idempotency-Key": "c1"})
    assert replay.status_code == 200 and replay.json["replayed"] is True
    late = api.post(f"/holds/{hold['id']}/release", headers={"Idempotency-Key": "r1"})
    assert error_of(late, 409)["code"] == "hold_not_active"
    assert balance(api) == {"held": 0, "available": 980}

    second = api.post("/holds", {"amount": 40, "idempotency_key": "h2"}).json
    released = api.post(f"/holds/{second['id']}/release", {"idempotency_key": "r2"})
    assert released.status_code == 200 and released.json["status"] == "released"
    assert (
        error_of(api.post(f"/holds/{second['id']}/capture", {"amount": 1, "idempotency_key": "c2"}), 409)["code"]
        == "hold_not_active"
    )
    assert api.get("/balance").json["available"] == 980
    assert credits.verify() == []


def test_invalid_holds_are_422_or_402(app, api, team):
    for body, code in [
        ({"amount": 1, "ttl_seconds": 0}, "invalid_request"),
        ({"amount": 1, "ttl_seconds": 86_401}, "invalid_request"),
        ({"amount": 1, "ttl_seconds": "60"}, "invalid_request"),
        ({"amount": 0}, "invalid_amount"),
        ({"feature": "teleport"}, "unknown_feature"),
        ({"amount": 1, "hold": True}, "invalid_request"),
    ]:
        assert error_of(api.post("/holds", {**body, "idempotency_key": "h"}), 422)["code"] == code, body
    assert error_of(api.post("/holds", {"amount": 5_000, "idempotency_key": "big"}), 402)["available"] == 1_000
    assert entries(team) == 1


def test_unknown_holds_are_404(app, api):
    for hold_id in ("999999", str(2**63), str(10**30)):
        for action, body in (("capture", {"amount": 1, "idempotency_key": "c"}), ("release", {"idempotency_key": "r"})):
            assert error_of(api.post(f"/holds/{hold_id}/{action}", body), 404)["code"] == "hold_not_found"


def test_another_teams_holds_and_ledger_do_not_exist_for_you(app, client, api, team):
    theirs = Api(client, new_key(new_team("globex")))
    hold = theirs.post("/holds", {"amount": 50, "idempotency_key": "theirs"}).json
    theirs.post("/spend", {"amount": 7, "feature": "export_pdf", "idempotency_key": "s"})
    api.post("/spend", {"amount": 3, "idempotency_key": "mine"})

    capture = api.post(f"/holds/{hold['id']}/capture", {"amount": 1, "idempotency_key": "x"})
    release = api.post(f"/holds/{hold['id']}/release", {"idempotency_key": "y"})
    assert error_of(capture, 404)["code"] == error_of(release, 404)["code"] == "hold_not_found"
    assert [e["amount"] for e in api.get("/ledger").json["data"]] == [-3, 1_000]
    assert api.get("/ledger?feature=export_pdf").json["data"] == []
    assert balance(theirs) == {"held": 50, "available": 943}
    assert theirs.post(f"/holds/{hold['id']}/capture", {"amount": 50, "idempotency_key": "x"}).status_code == 200
    assert credits.verify() == []


def balance(api: Api) -> dict:
    body = api.get("/balance").json
    return {"held": body["held"], "available": body["available"]}


# --- ledger ----------------------------------------------------------------------------------------


def test_ledger_pages_newest_first_with_a_cursor(app, api, team):
    start = utcnow() - timedelta(hours=1)
    moments = [start, start + timedelta(minutes=1), start + timedelta(minutes=2), start + timedelta(minutes=2)]
    for i, moment in enumerate(moments):  # the last two share a timestamp: the id breaks the tie
        credits.spend(team, i + 1, key=f"s{i}", feature="export_pdf" if i % 2 else None, now=moment)
    db.session.commit()
    seen, cursor = [], None
    while True:
        page = api.get("/ledger", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).json
        assert len(page["data"]) == 2 or page["next_cursor"] is None
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["amount"] for e in seen] == [1_000, -4, -3, -2, -1]
    assert len({e["id"] for e in seen}) == 5
    assert [e["amount"] for e in api.get("/ledger?kind=spend&limit=100").json["data"]] == [-4, -3, -2, -1]
    assert [e["amount"] for e in api.get("/ledger?feature=export_pdf").json["data"]] == [-4, -2]
    window = {"since": moments[1].isoformat(), "until": (start + timedelta(minutes=2)).isoformat()}
    assert [e["amount"] for e in api.get("/ledger", query_string=window).json["data"]] == [-2]
    grant = api.get("/ledger?kind=grant").json["data"]
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in grant] == [("grant", 1_000, 1_000)]


BAD_LEDGER_QUERIES = [
    "kind=gift",
    "limit=0",
    "limit=101",
    "limit=ten",
    "limit=-1",
    "since=yesterday",
    "since=2025-01-01",
    "since=2025-01-01T00:00:00",
    "until=2025-13-01T00:00:00Z",
    "until=9999-12-31T23:59:59-23:59",
    "cursor=abc",
    "cursor=1.99999999999999999999",
    "cursor=999999999999999999.1",
    "feature=",
    "kind=spend&kind=hold",
    "sort=asc",
]


def test_invalid_ledger_queries_are_422(app, api):
    for query in BAD_LEDGER_QUERIES:
        assert error_of(api.get(f"/ledger?{query}"), 422)["code"] == "invalid_request", query
