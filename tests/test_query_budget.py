"""Dashboard and history cost the same number of SQL statements with 10 or 10,000 ledger entries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, insert

from starter import credits
from starter.extensions import db
from starter.models import LedgerEntry, utcnow


def add_spends(team_id: int, count: int) -> None:
    """Bulk-insert spend entries spread over the last 30 days (what matters here is their number)."""
    now = utcnow()
    rows = [
        {
            "team_id": team_id,
            "kind": "spend",
            "amount": -1,
            "held_delta": 0,
            "balance_after": 0,
            "held_after": 0,
            "feature": "ai_generation",
            "actor_type": "api",
            "description": "AI generation",
            "metadata": {},
            "idempotency_key": f"bulk-{n}",
            "request_hash": "x",
            "created_at": now - timedelta(minutes=n * 4),
        }
        for n in range(count)
    ]
    db.session.execute(insert(LedgerEntry), rows)
    db.session.commit()


def statements_for(client, path: str) -> int:
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        response = client.get(path)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert response.status_code == 200, path
    return len([s for s in seen if not s.upper().startswith(("BEGIN", "PRAGMA", "COMMIT", "ROLLBACK"))])


@pytest.mark.parametrize(
    "path",
    ["/dashboard", "/credits/history", "/credits/history?kind=spend", "/credits/history?kind=used&since=2000-01-01"],
)
def test_pages_cost_the_same_with_10_or_10000_entries(app, auth, make_user, make_team, path):
    small_owner, big_owner = make_user("small@example.com"), make_user("big@example.com")
    small, big = make_team(small_owner, "Small"), make_team(big_owner, "Big")
    add_spends(small.id, 10)
    add_spends(big.id, 10_000)
    credits.grant(big.id, 5, source="promo", key="x")
    db.session.commit()

    auth.login("small@example.com")
    auth.client.get(path)  # warm-up: first-request work is not what we count
    few = statements_for(auth.client, path)
    auth.logout()
    auth.login("big@example.com")
    auth.client.get(path)
    many = statements_for(auth.client, path)
    assert few == many, f"{path}: {few} statements with 10 entries, {many} with 10,000"
    assert many <= 12


def add_usage(team_id: int, count: int, key_ids: list[int], user_ids: list[int]) -> None:
    """``count`` spends over the last 90 days, spread over features, keys and members, in bulk."""
    now = utcnow()
    features = ["ai_generation", "image_upscale", "export_pdf", None]
    rows = []
    for n in range(count):
        by_key = n % 3 == 0
        rows.append(
            {
                "team_id": team_id,
                "kind": "spend" if n % 5 else "capture",
                "amount": -1,
                "held_delta": 0,
                "balance_after": 0,
                "held_after": 0,
                "feature": features[n % 4],
                "actor_type": "api" if by_key else "user",
                "actor_user_id": None if by_key else user_ids[n % len(user_ids)],
                "api_key_id": key_ids[n % len(key_ids)] if by_key else None,
                "description": "bulk",
                "metadata": {},
                "idempotency_key": f"usage-{n}",
                "request_hash": "x",
                "created_at": now - timedelta(seconds=(n * 77) % (89 * 86_400)),
            }
        )
        if len(rows) == 20_000:
            db.session.execute(insert(LedgerEntry), rows)
            rows = []
    if rows:
        db.session.execute(insert(LedgerEntry), rows)
    db.session.commit()


USAGE_PATHS = ["/credits/usage?range=90&tz=Europe/Paris", "/credits/usage?range=30&group_by=api_key&tz=UTC"]


def test_the_usage_page_costs_the_same_with_10_or_100000_entries(app, auth, make_user, make_team):
    from starter import api_keys

    small_owner, big_owner = make_user("small@example.com"), make_user("big@example.com")
    small, big = make_team(small_owner, "Small"), make_team(big_owner, "Big")
    for team, owner, count in ((small, small_owner, 10), (big, big_owner, 100_000)):
        keys = [api_keys.create(team.id, f"k{n}")[0].id for n in range(3)]
        db.session.commit()
        add_usage(team.id, count, keys, [owner.id])

    counts: dict[str, list[int]] = {path: [] for path in USAGE_PATHS}
    for email in ("small@example.com", "big@example.com"):
        auth.login(email)
        for path in USAGE_PATHS:
            auth.client.get(path)  # warm-up
            counts[path].append(statements_for(auth.client, path))
        auth.logout()
    for path, (few, many) in counts.items():
        assert few == many, f"{path}: {few} statements with 10 entries, {many} with 100,000"
        assert many <= 8
