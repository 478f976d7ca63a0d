"""Attribution and usage: who caused each entry (web, API, scheduler), and /credits/usage and GET /api/v1/usage.

The webhook path's attribution is tested with the other webhook tests (``test_billing_webhooks.py``).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from starter import api_keys, credits, scheduler
from starter.extensions import db
from starter.models import LedgerEntry, utcnow

from .test_api import Api, error_of


@pytest.fixture
def acme(app, fast_user, make_team):  # type: ignore[no-untyped-def]
    owner = fast_user("owner@example.com", name="Olive")
    member = fast_user("member@example.com", name="Max")
    team = make_team(owner, "Acme", members=[(member, "member")])
    credits.grant(team.id, 10_000, source="purchase", key="pack")
    owner.current_team_id = member.current_team_id = team.id
    db.session.commit()
    return team


def users(team):  # type: ignore[no-untyped-def]
    return {m.user.email: m.user for m in team.memberships}


def test_every_path_records_who_caused_it(app, acme, auth, client):
    owner = users(acme)["owner@example.com"]
    key, raw = api_keys.create(acme.id, "Backend")
    db.session.commit()

    auth.login("owner@example.com")  # web: the example feature, a hold then a capture
    assert auth.post("/generate", {"prompt": "hi", "idempotency_key": "g"}, token_from="/generate").status_code == 200
    auth.logout()
    api = Api(app.test_client(), raw)  # API: a spend and a hold the scheduler will expire
    assert api.post("/spend", {"amount": 7}, headers={"Idempotency-Key": "s"}).status_code == 201
    assert api.post("/holds", {"amount": 5, "ttl_seconds": 1}, headers={"Idempotency-Key": "h"}).status_code == 201
    scheduler.release_holds(app, utcnow() + timedelta(minutes=5))  # the scheduler: the expiry

    rows = db.session.execute(
        select(LedgerEntry.kind, LedgerEntry.actor_type, LedgerEntry.actor_user_id, LedgerEntry.api_key_id)
        .where(LedgerEntry.team_id == acme.id)
        .order_by(LedgerEntry.id)
    ).all()
    by_kind = {(row.kind, row.actor_type): (row.actor_user_id, row.api_key_id) for row in rows}
    assert by_kind[("hold", "user")] == (owner.id, None)
    assert by_kind[("capture", "user")] == (owner.id, None)
    assert by_kind[("spend", "api")] == (None, key.id)
    assert by_kind[("hold", "api")] == (None, key.id)
    assert by_kind[("release", "system")] == (None, None)


def seed_usage(team_id: int, owner_id: int, member_id: int, key_id: int) -> None:
    """Spends and captures by two members and a key over three days, plus entries that are not usage."""
    day = datetime(2026, 5, 10, 12, tzinfo=UTC)
    owner, member = credits.Actor("user", owner_id), credits.Actor("user", member_id)
    key = credits.Actor("api", None, api_key_id=key_id)
    credits.spend(team_id, 10, key="a", feature="ai_generation", actor=owner, now=day)
    credits.spend(team_id, 25, key="b", feature="export_pdf", actor=member, now=day + timedelta(days=1))
    credits.spend(team_id, 40, key="c", actor=key, now=day + timedelta(days=1))
    hold = credits.hold(team_id, 30, key="d", feature="ai_generation", actor=key, now=day + timedelta(days=2))
    credits.capture(team_id, hold.id, 12, key="e", actor=key, now=day + timedelta(days=2))
    credits.adjust(team_id, -3, reason="fix", key="f", actor=credits.Actor("admin", owner_id), now=day)
    credits.grant(team_id, 5, source="promo", key="g", now=day)
    db.session.commit()


def ledger_usage(team_id: int) -> int:
    return db.session.scalar(
        select(func.sum(-LedgerEntry.amount)).where(
            LedgerEntry.team_id == team_id, LedgerEntry.kind.in_(("spend", "capture"))
        )
    )


def test_usage_sums_equal_the_ledger_in_every_grouping(app, acme, client):
    people = users(acme)
    key, raw = api_keys.create(acme.id, "Backend")
    db.session.commit()
    seed_usage(acme.id, people["owner@example.com"].id, people["member@example.com"].id, key.id)
    api = Api(client, raw)
    expected = {
        "day": {"2026-05-10": 10, "2026-05-11": 65, "2026-05-12": 12},
        "feature": {"ai_generation": 22, "export_pdf": 25, None: 40},
        "member": {str(people["owner@example.com"].id): 10, str(people["member@example.com"].id): 25, None: 52},
        "api_key": {str(key.id): 52, None: 35},
    }
    for group_by, want in expected.items():
        answer = api.get(f"/usage?from=2026-05-10&to=2026-05-12&group_by={group_by}").json
        assert answer["total"] == ledger_usage(acme.id) == 87
        got = {row["group"]: row["credits"] for row in answer["data"] if row["credits"]}
        assert got == want, group_by
        assert sum(row["credits"] for row in answer["data"]) == answer["total"]
    labels = {
        row["group"]: row["label"]
        for row in api.get("/usage?from=2026-05-10&to=2026-05-12&group_by=api_key").json["data"]
    }
    assert labels[str(key.id)] == f"Backend ({key.prefix})"
    assert api.get("/usage?from=2026-05-11&to=2026-05-11").json["total"] == 65


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13-01",
        "to=yesterday",
        "from=2026-05-12&to=2026-05-10",
        "from=2020-01-01&to=2026-01-01",
        "group_by=team",
        "since=2026-01-01",
        "from=2026-05-10&from=2026-05-11",
        "from=0001-01-01",
    ],
)
def test_bad_usage_queries_are_422(app, acme, client, query):
    _, raw = api_keys.create(acme.id, "Backend")
    db.session.commit()
    assert error_of(Api(client, raw).get(f"/usage?{query}"), 422)["code"] == "invalid_request"


def test_a_key_sees_only_its_own_teams_usage(app, acme, client, make_team, fast_user):
    other = make_team(fast_user("else@example.com"), "Other")
    credits.grant(other.id, 100, source="promo", key="p")
    credits.spend(other.id, 60, key="x")
    credits.spend(acme.id, 9, key="y")
    _, raw = api_keys.create(acme.id, "Backend")
    db.session.commit()
    assert Api(client, raw).get("/usage").json["total"] == 9


def test_the_usage_page_counts_days_in_the_viewers_time_zone(app, acme, auth):
    owner = users(acme)["owner@example.com"]
    late = datetime(2026, 5, 10, 23, 30, tzinfo=UTC)  # 01:30 on the 11th in Paris (UTC+2 in May)
    credits.spend(acme.id, 11, key="late", actor=credits.Actor("user", owner.id), now=late)
    db.session.commit()
    auth.login("member@example.com")

    def day_rows(tz: str) -> dict[str, int]:
        response = auth.client.get(f"/credits/usage.csv?range=custom&from=2026-05-09&to=2026-05-12&tz={tz}")
        assert response.status_code == 200 and response.mimetype == "text/csv"
        return {row["day"]: int(row["credits"]) for row in csv.DictReader(io.StringIO(response.get_data(as_text=True)))}

    assert day_rows("UTC") == {"2026-05-10": 11}
    assert day_rows("Europe/Paris") == {"2026-05-11": 11}
    assert day_rows("America/Los_Angeles") == {"2026-05-10": 11}
    assert day_rows("Asia/Kolkata") == {"2026-05-11": 11}  # +05:30: the quarter-hour buckets on SQLite
    page = auth.client.get("/credits/usage?range=custom&from=2026-05-09&to=2026-05-12&tz=Europe/Paris&group_by=member")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Olive" in html and 'data-testid="usage-chart"' in html
    assert '<strong data-testid="usage-total">11</strong>' in html


@pytest.mark.parametrize(
    "query",
    [
        "range=14",
        "range=custom",
        "range=custom&from=2026-05-10&to=2026-05-01",
        "range=custom&from=2020-01-01&to=2026-01-01",
        "tz=Mars/Olympus",
        "tz=../../etc/passwd",
        "group_by=nope",
        "range=custom&from=x&to=y",
    ],
)
def test_bad_usage_page_choices_are_a_clear_400(app, acme, auth, query):
    auth.login("member@example.com")
    assert auth.client.get(f"/credits/usage?{query}").status_code == 400


def test_the_usage_page_needs_a_login_and_shows_the_ranges(app, acme, auth, client):
    assert client.get("/credits/usage").status_code in (302, 401)
    auth.login("member@example.com")
    for days in ("7", "30", "90"):
        page = auth.client.get(f"/credits/usage?range={days}&tz=UTC")
        assert page.status_code == 200
        today = datetime.now(UTC).date()
        assert (today - timedelta(days=int(days) - 1)).isoformat() in page.get_data(as_text=True)


def test_history_filters_by_member_and_key(app, acme, auth):
    people = users(acme)
    key, _ = api_keys.create(acme.id, "Backend")
    db.session.commit()
    seed_usage(acme.id, people["owner@example.com"].id, people["member@example.com"].id, key.id)
    auth.login("owner@example.com")

    def kinds(query: str) -> list[str]:
        response = auth.client.get(f"/credits/history.csv?{query}")
        assert response.status_code == 200
        return sorted(row["actor"] for row in csv.DictReader(io.StringIO(response.get_data(as_text=True))))

    assert kinds(f"member={people['member@example.com'].id}") == ["Max"]
    assert set(kinds(f"api_key={key.id}")) == {f"API key Backend ({key.prefix})"}
    assert len(kinds(f"api_key={key.id}")) == 3  # the spend, the hold and the capture
    assert auth.client.get("/credits/history?member=999999").status_code == 400
    page = auth.client.get(f"/credits/history?api_key={key.id}").get_data(as_text=True)
    assert f"API key Backend ({key.prefix})" in page


def test_the_usage_window_spans_dst_changes_by_local_midnights():
    from zoneinfo import ZoneInfo

    from starter.credits.usage import Window

    window = Window(date(2026, 3, 29), date(2026, 3, 29), ZoneInfo("Europe/Paris"))  # a 23-hour day
    assert window.end - window.start == timedelta(hours=23)
