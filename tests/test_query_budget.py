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


@pytest.mark.parametrize("path", ["/dashboard", "/credits/history", "/credits/history?kind=spend"])
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
