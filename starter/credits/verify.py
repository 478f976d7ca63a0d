"""The ledger's invariants, recomputed from scratch with set-based queries (``flask credits verify``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select

from ..extensions import db
from . import rollup
from .core import allocations_t, balances, blocks_t, entries_t, holds_t


@dataclass(frozen=True)
class Problem:
    team_id: int
    message: str

    def __str__(self) -> str:
        return f"team {self.team_id}: {self.message}"


def _sum_by_team(column, table, *where):  # type: ignore[no-untyped-def]
    return (
        select(table.c.team_id, func.coalesce(func.sum(column), 0).label("total"))
        .where(*where)
        .group_by(table.c.team_id)
        .subquery()
    )


def verify() -> list[Problem]:
    """Every mismatch between cached balances, ledger entries, allocations, blocks and holds."""
    problems: list[Problem] = []

    # 1. The cached balance and held credits equal the ledger's sums and the blocks' sums.
    ledger = (
        select(
            entries_t.c.team_id,
            func.sum(entries_t.c.amount).label("amount"),
            func.sum(entries_t.c.held_delta).label("held"),
        )
        .group_by(entries_t.c.team_id)
        .subquery()
    )
    block_sums = (
        select(
            blocks_t.c.team_id,
            func.sum(blocks_t.c.remaining).label("remaining"),
            func.sum(blocks_t.c.held).label("held"),
        )
        .group_by(blocks_t.c.team_id)
        .subquery()
    )
    active_holds = _sum_by_team(holds_t.c.amount, holds_t, holds_t.c.status == "active")
    rows = db.session.execute(
        select(
            balances.c.team_id,
            balances.c.balance,
            balances.c.held,
            func.coalesce(ledger.c.amount, 0),
            func.coalesce(ledger.c.held, 0),
            func.coalesce(block_sums.c.remaining, 0),
            func.coalesce(block_sums.c.held, 0),
            func.coalesce(active_holds.c.total, 0),
        )
        .outerjoin(ledger, ledger.c.team_id == balances.c.team_id)
        .outerjoin(block_sums, block_sums.c.team_id == balances.c.team_id)
        .outerjoin(active_holds, active_holds.c.team_id == balances.c.team_id)
        .order_by(balances.c.team_id)
    )
    for team_id, cached, held, ledger_sum, ledger_held, remaining, block_held, hold_total in rows:
        if cached != ledger_sum:
            problems.append(Problem(team_id, f"cached balance {cached} but the ledger sums to {ledger_sum}"))
        if cached != remaining:
            problems.append(Problem(team_id, f"cached balance {cached} but blocks hold {remaining}"))
        if not held == ledger_held == block_held == hold_total:
            problems.append(
                Problem(
                    team_id,
                    f"held {held}, ledger {ledger_held}, blocks {block_held}, active holds {hold_total}",
                )
            )

    # 2. Each block's remaining and held equal the sum of its allocations, within 0 ≤ held ≤ remaining ≤ amount.
    allocated = (
        select(
            allocations_t.c.block_id,
            func.sum(allocations_t.c.amount).label("amount"),
            func.sum(allocations_t.c.held_delta).label("held"),
        )
        .group_by(allocations_t.c.block_id)
        .subquery()
    )
    for team_id, block_id, amount, remaining, held, alloc_amount, alloc_held in db.session.execute(
        select(
            blocks_t.c.team_id,
            blocks_t.c.id,
            blocks_t.c.amount,
            blocks_t.c.remaining,
            blocks_t.c.held,
            func.coalesce(allocated.c.amount, 0),
            func.coalesce(allocated.c.held, 0),
        )
        .outerjoin(allocated, allocated.c.block_id == blocks_t.c.id)
        .where(
            or_(
                blocks_t.c.remaining != func.coalesce(allocated.c.amount, 0),
                blocks_t.c.held != func.coalesce(allocated.c.held, 0),
                blocks_t.c.held < 0,
                blocks_t.c.held > blocks_t.c.remaining,
                blocks_t.c.remaining > blocks_t.c.amount,
            )
        )
    ):
        problems.append(
            Problem(
                team_id,
                f"block {block_id}: amount {amount}, remaining {remaining}, held {held}; "
                f"allocations say remaining {alloc_amount}, held {alloc_held}",
            )
        )

    # 3. Nothing was spent or reserved from a block at or after its expiry.
    for team_id, entry_id, block_id in db.session.execute(
        select(entries_t.c.team_id, entries_t.c.id, blocks_t.c.id)
        .join(allocations_t, allocations_t.c.entry_id == entries_t.c.id)
        .join(blocks_t, blocks_t.c.id == allocations_t.c.block_id)
        .where(
            blocks_t.c.expires_at.is_not(None),
            entries_t.c.created_at >= blocks_t.c.expires_at,
            entries_t.c.kind.in_(("spend", "hold", "adjustment", "clawback")),
            or_(allocations_t.c.amount < 0, allocations_t.c.held_delta > 0),
        )
    ):
        problems.append(Problem(team_id, f"entry {entry_id} drew from block {block_id} after it expired"))

    # 4. The newest entry's balance_after is the cached balance; each idempotency key is used once.
    newest = select(func.max(entries_t.c.id).label("id")).group_by(entries_t.c.team_id).subquery()
    for team_id, after, cached in db.session.execute(
        select(entries_t.c.team_id, entries_t.c.balance_after, balances.c.balance)
        .join(newest, newest.c.id == entries_t.c.id)
        .join(balances, balances.c.team_id == entries_t.c.team_id)
        .where(entries_t.c.balance_after != balances.c.balance)
    ):
        problems.append(Problem(team_id, f"newest entry says balance {after}, cached {cached}"))
    for team_id, key in db.session.execute(
        select(entries_t.c.team_id, entries_t.c.idempotency_key)
        .group_by(entries_t.c.team_id, entries_t.c.idempotency_key)
        .having(func.count() > 1)
    ):
        problems.append(Problem(team_id, f"idempotency key {key!r} used more than once"))

    # 5. Every credit-changing entry of a block names a block of the same team.
    for team_id, entry_id in db.session.execute(
        select(entries_t.c.team_id, entries_t.c.id)
        .join(allocations_t, allocations_t.c.entry_id == entries_t.c.id)
        .join(blocks_t, blocks_t.c.id == allocations_t.c.block_id)
        .where(and_(blocks_t.c.team_id != entries_t.c.team_id))
    ):
        problems.append(Problem(team_id, f"entry {entry_id} touches another team's block"))

    # 6. The dashboard's usage rollup says what the spends and captures say, day by day.
    problems.extend(Problem(team_id, message) for team_id, message in rollup.check())

    return sorted(problems, key=lambda problem: problem.team_id)
