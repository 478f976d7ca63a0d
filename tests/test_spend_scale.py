"""A spend reads the first few blocks in the spending order, from an index, however many blocks a team holds.

Counts and plans, never timings (the figures are in ``bench/scale.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from starter import credits
from starter.credits import InsufficientCredits, core
from starter.extensions import db
from starter.models import CreditBlock

from .factories import ledger_team

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def expiry(n: int) -> datetime | None:
    """Every third block never expires; the others expire on distinct days, later ones first."""
    return None if n % 3 == 0 else NOW + timedelta(days=200 - n)


def many_blocks(team_id: int, count: int) -> list[int]:
    """``count`` one-credit blocks granted through the ledger; their ids in the spending order."""
    for n in range(count):
        credits.grant(
            team_id, 1, source="purchase", key=f"g{n}", expires_at=expiry(n), now=NOW - timedelta(days=400 - n)
        )
    db.session.commit()
    blocks = db.session.execute(
        select(CreditBlock.id, CreditBlock.expires_at, CreditBlock.created_at).where(CreditBlock.team_id == team_id)
    ).all()
    blocks.sort(key=lambda b: (b.expires_at is None, b.expires_at or NOW, b.created_at, b.id))
    return [b.id for b in blocks]


def bulk_blocks(team_id: int, count: int) -> None:
    """Rows straight into the table, for the planner's sake (not a ledger ``verify`` would accept)."""
    rows = [
        {
            "team_id": team_id,
            "source": "purchase",
            "amount": 1,
            "remaining": 1,
            "held": 0,
            "expires_at": expiry(n),
            "created_at": NOW - timedelta(days=400 - n),
        }
        for n in range(count)
    ]
    db.session.execute(insert(CreditBlock), rows)
    db.session.commit()


def remaining_of(team_id: int) -> dict[int, int]:
    rows = db.session.execute(select(CreditBlock.id, CreditBlock.remaining).where(CreditBlock.team_id == team_id))
    return dict(rows.all())


def test_a_spend_larger_than_the_first_batch_draws_the_rest_in_the_spending_order(app):
    team = ledger_team("batch")
    order = many_blocks(team.id, 3 * core.SPEND_BATCH + 2)
    amount = 2 * core.SPEND_BATCH + 5  # more than the first batch holds

    receipt = credits.spend(team.id, amount, key="big", now=NOW)
    db.session.commit()

    after = remaining_of(team.id)
    assert [after[i] for i in order] == [0] * amount + [1] * (len(order) - amount)
    assert receipt.balance_after == len(order) - amount
    assert credits.verify() == []


def test_a_spend_that_does_not_fit_reports_every_credit_available_not_the_first_batch(app):
    team = ledger_team("short")
    order = many_blocks(team.id, 2 * core.SPEND_BATCH + 3)

    with pytest.raises(InsufficientCredits) as raised:
        credits.spend(team.id, len(order) + 1, key="too-much", now=NOW)
    db.session.rollback()
    assert (raised.value.required, raised.value.available) == (len(order) + 1, len(order))
    assert set(remaining_of(team.id).values()) == {1}  # nothing was charged


def test_a_spend_within_the_first_batch_reads_at_most_one_batch_of_blocks(app):
    team = ledger_team("small-read")
    many_blocks(team.id, 10 * core.SPEND_BATCH)
    available, draws = core.draws_for(team.id, 3, NOW)
    assert [take for _, take in draws] == [1, 1, 1]
    assert available == core.SPEND_BATCH  # what the batch holds: enough, and all that was read
    exact, _ = core.draws_for(team.id, 3, NOW, exact=True)
    assert exact == 10 * core.SPEND_BATCH
    assert credits.quote(team.id, 3, NOW).available == 10 * core.SPEND_BATCH  # a quote shows the true total


def plan_of(team_id: int) -> dict:
    query = core.spendable_query(team_id, NOW, limit=core.SPEND_BATCH)
    compiled = query.compile(dialect=db.engine.dialect)
    connection = db.session.connection()
    rows = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar_one()
    return rows[0]["Plan"] if isinstance(rows, list) else json.loads(rows)[0]["Plan"]


def nodes(plan: dict) -> list[dict]:
    return [plan] + [node for child in plan.get("Plans", []) for node in nodes(child)]


@pytest.mark.postgres
def test_postgresql_serves_the_spending_order_from_the_partial_index_without_sorting(app):
    team = ledger_team("planned")
    other = ledger_team("neighbour")
    bulk_blocks(team.id, 5_000)
    bulk_blocks(other.id, 5_000)
    # Spent-out blocks are not in the index at all.
    db.session.execute(
        core.blocks_t.update()
        .where(core.blocks_t.c.team_id == team.id, core.blocks_t.c.id % 2 == 0)
        .values(remaining=0)
    )
    db.session.commit()
    db.session.connection().exec_driver_sql("ANALYZE credit_blocks")

    plan = nodes(plan_of(team.id))
    kinds = [node["Node Type"] for node in plan]
    assert "Sort" not in kinds, kinds
    assert any(node.get("Index Name") == "ix_credit_blocks_spendable" for node in plan), plan


def test_a_write_that_names_one_block_twice_applies_both_changes(app):
    """Both write paths (statement by statement on SQLite, one statement on PostgreSQL) agree on it."""
    from starter.credits.rules import SYSTEM

    team = ledger_team("twice")
    granted = credits.grant(team.id, 10, source="purchase", key="g", now=NOW)
    db.session.commit()
    before = core.lock(team.id)
    core.write(
        team.id,
        "spend",
        before=before,
        changes=[(granted.block_id, -2, 0), (granted.block_id, -3, 0)],
        key="twice",
        fingerprint="x",
        now=NOW,
        actor=SYSTEM,
        description="Spend",
    )
    db.session.commit()
    assert remaining_of(team.id) == {granted.block_id: 5}
    assert credits.balance(team.id, NOW).available == 5
    assert credits.verify() == []
