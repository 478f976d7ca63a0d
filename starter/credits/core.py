"""What every credit operation shares: the team lock, idempotency replay, block order and the entry write."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import Select, bindparam, insert, or_, select, text, update

from ..extensions import db
from ..models import CreditBalance, CreditBlock, Hold, LedgerAllocation, LedgerEntry
from . import rollup
from .rules import Actor, IdempotencyConflict, InvalidRequest, Receipt

balances = CreditBalance.__table__
blocks_t = CreditBlock.__table__
entries_t = LedgerEntry.__table__
allocations_t = LedgerAllocation.__table__
holds_t = Hold.__table__


def fingerprint_of(operation: str, **params: Any) -> str:
    canonical = json.dumps({"op": operation, **params}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Locked(NamedTuple):
    """The balance row as the lock read it: indexable as (balance, held) like any ``before``."""

    balance: int
    held: int
    recharge_below: int | None = None  # auto-recharge's threshold while it is on


def lock(team_id: int) -> Locked:
    """Lock the team's balance row for the rest of the transaction; returns (balance, held, threshold)."""
    row = db.session.execute(
        select(balances.c.balance, balances.c.held, balances.c.recharge_below)
        .where(balances.c.team_id == team_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise InvalidRequest("This team has no credit account.")
    return Locked(row.balance, row.held, row.recharge_below)


def replay(team_id: int, key: str, fingerprint: str) -> Receipt | None:
    """The entry an earlier call with this key wrote; a conflict if it was called differently."""
    row = db.session.execute(
        select(entries_t).where(entries_t.c.team_id == team_id, entries_t.c.idempotency_key == key)
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyConflict("This idempotency key was already used with different parameters.")
    return receipt(row, replayed=True)


def receipt(row: Any, replayed: bool = False) -> Receipt:
    return Receipt(
        row.id,
        row.team_id,
        row.kind,
        row.amount,
        row.balance_after,
        row.held_after,
        row.block_id,
        row.hold_id,
        row.feature,
        row.created_at,
        replayed,
    )


# Blocks read per spend before the fallback: a spend or hold that these do not cover reads the rest.
SPEND_BATCH = 16


def spendable_query(team_id: int, now: datetime, *, reference: str | None = None, limit: int | None = None) -> Select:
    """Blocks with unheld credits, unexpired at ``now``, in the one spending order (the first ``limit``).

    Soonest expiry first, never-expiring last, then oldest: ``expires_at ASC NULLS LAST`` is the natural
    order of the partial index ``ix_credit_blocks_spendable`` on PostgreSQL, so the database reads the
    first rows of the index instead of sorting every block of the team.
    """
    query = (
        select(blocks_t.c.id, blocks_t.c.remaining, blocks_t.c.held, blocks_t.c.expires_at)
        .where(
            blocks_t.c.team_id == team_id,
            blocks_t.c.expired_at.is_(None),
            blocks_t.c.remaining > blocks_t.c.held,
            or_(blocks_t.c.expires_at.is_(None), blocks_t.c.expires_at > now),
        )
        .order_by(blocks_t.c.expires_at.asc().nulls_last(), blocks_t.c.created_at, blocks_t.c.id)
    )
    if reference is not None:
        query = query.where(blocks_t.c.reference == reference)
    if limit is not None:
        query = query.limit(limit)
    return query


def spendable(team_id: int, now: datetime, *, reference: str | None = None, limit: int | None = None) -> list[Any]:
    return list(db.session.execute(spendable_query(team_id, now, reference=reference, limit=limit)))


def draws_for(
    team_id: int, amount: int, now: datetime, *, reference: str | None = None, exact: bool = False
) -> tuple[int, list[tuple[Any, int]]]:
    """(credits available, the (block, credits) to take) for ``amount``, or for all there is if less.

    Reads the first ``SPEND_BATCH`` blocks; only when they do not cover ``amount`` does it read them all,
    so a shortfall still reports the true total. When the batch covers ``amount``, "available" is what
    the batch holds (at least ``amount``, maybe less than the team's total); ``exact`` reads every block.
    """
    blocks = spendable(team_id, now, reference=reference, limit=None if exact else SPEND_BATCH)
    if not exact and len(blocks) == SPEND_BATCH and sum(block.remaining - block.held for block in blocks) < amount:
        blocks = spendable(team_id, now, reference=reference)
    available = sum(block.remaining - block.held for block in blocks)
    draws, left = [], min(amount, available)
    for block in blocks:
        if left == 0:
            break
        take = min(left, block.remaining - block.held)
        draws.append((block, take))
        left -= take
    return available, draws


update_block = (
    update(blocks_t)
    .where(blocks_t.c.id == bindparam("b_id"))
    .values(remaining=blocks_t.c.remaining + bindparam("d_remaining"), held=blocks_t.c.held + bindparam("d_held"))
)


def write(
    team_id: int,
    kind: str,
    *,
    before: tuple[int, int],
    changes: list[tuple[int, int, int]],
    key: str,
    fingerprint: str,
    now: datetime,
    actor: Actor,
    description: str,
    meta: dict[str, Any] | None = None,
    feature: str | None = None,
    hold_id: int | None = None,
    alert_from: int | None = None,
) -> Receipt:
    """Apply per-block changes (block id, Δremaining, Δheld), move the balance and append the entry.

    ``alert_from``: the credits available when the operation began, if an earlier write of it moved them
    (an overage grant tops the balance up just before the spend it covers): the low-balance check starts
    there, so an overage spend does not cross every threshold, and "ran out", again.
    """
    amount = sum(change[1] for change in changes)
    held_delta = sum(change[2] for change in changes)
    balance, held = before[0] + amount, before[1] + held_delta
    values = {
        "team_id": team_id,
        "kind": kind,
        "amount": amount,
        "held_delta": held_delta,
        "balance_after": balance,
        "held_after": held,
        "block_id": changes[0][0] if changes else None,
        "hold_id": hold_id,
        "feature": feature,
        "actor_type": actor.type,
        "actor_user_id": actor.user_id,
        "api_key_id": actor.api_key_id,
        "description": description[:255],
        "metadata": meta or {},
        "idempotency_key": key,
        "request_hash": fingerprint,
        "created_at": now,
    }
    usage = rollup.usage_of(kind, amount, feature, now)
    if db.engine.dialect.name == "postgresql":
        entry_id, levels = _write_in_one_statement(values, changes, usage, now)
    else:
        entry_id, levels = _write_statement_by_statement(values, changes, usage, now)
    if (batch := _one_change.get()) is not None and team_id in batch:
        batch[team_id][1] = entry_id  # judged with the rest of the change when it ends (``one_change``)
    else:
        start = before[0] - before[1] if alert_from is None else alert_from
        if balance - held < start:
            alert_if_crossed(team_id, levels, start, balance - held, entry_id)
    return receipt(Row(id=entry_id, **values))


def _write_statement_by_statement(
    values: dict[str, Any], changes: list[tuple[int, int, int]], usage: tuple | None, now: datetime
) -> tuple[int, Any]:
    """The write as separate statements (SQLite): blocks, balance, entry, usage, allocations."""
    team_id = values["team_id"]
    params = [{"b_id": b, "d_remaining": r, "d_held": h} for b, r, h in changes if r or h]
    if params:
        db.session.execute(update_block, params)
    # RETURNING the thresholds: the alert check needs no statement of its own.
    levels = db.session.execute(
        update(balances)
        .where(balances.c.team_id == team_id)
        .values(balance=values["balance_after"], held=values["held_after"], updated_at=now)
        .returning(balances.c.alert_levels)
    ).scalar_one()
    entry_id = db.session.execute(insert(entries_t).values(values).returning(entries_t.c.id)).scalar_one()
    if usage is not None:
        day, feature, used = usage
        db.session.execute(
            rollup.UPSERTS[db.engine.dialect.name],
            {"team_id": team_id, "day": day, "feature": feature, "credits": used},
        )
    if changes:
        db.session.execute(
            insert(allocations_t),
            [{"entry_id": entry_id, "block_id": b, "amount": r, "held_delta": h} for b, r, h in changes],
        )
    return entry_id, levels


# The same write as one statement on PostgreSQL (one round trip instead of five): data-modifying CTEs,
# the per-block changes passed as arrays. Built once; what it writes is computed by ``write`` above.
WRITE_SQL = text(
    """
WITH changes AS (
    SELECT * FROM unnest(CAST(:block_ids AS bigint[]), CAST(:d_remaining AS bigint[]), CAST(:d_held AS bigint[]))
        WITH ORDINALITY AS c(block_id, d_remaining, d_held, n)
), moved AS (
    UPDATE credit_blocks AS b SET remaining = b.remaining + c.d_remaining, held = b.held + c.d_held
    FROM (
        SELECT block_id, CAST(sum(d_remaining) AS bigint) AS d_remaining, CAST(sum(d_held) AS bigint) AS d_held
        FROM changes GROUP BY block_id
    ) AS c
    WHERE b.id = c.block_id AND (c.d_remaining <> 0 OR c.d_held <> 0)
    RETURNING b.id
), balance AS (
    UPDATE credit_balances SET balance = :balance_after, held = :held_after, updated_at = :created_at
    WHERE team_id = :team_id
    RETURNING alert_levels
), entry AS (
    INSERT INTO ledger_entries (team_id, kind, amount, held_delta, balance_after, held_after, block_id, hold_id,
        feature, actor_type, actor_user_id, api_key_id, description, metadata, idempotency_key, request_hash,
        created_at)
    VALUES (:team_id, :kind, :amount, :held_delta, :balance_after, :held_after, :block_id, :hold_id, :feature,
        :actor_type, :actor_user_id, :api_key_id, :description, CAST(:metadata AS json), :idempotency_key,
        :request_hash, :created_at)
    RETURNING id
), used AS (
    INSERT INTO usage_days (team_id, day, feature, credits)
    SELECT :team_id, CAST(:usage_day AS date), :usage_feature, :usage_credits WHERE CAST(:is_usage AS boolean)
    ON CONFLICT (team_id, day, feature) DO UPDATE SET credits = usage_days.credits + EXCLUDED.credits
), allocated AS (
    INSERT INTO ledger_allocations (entry_id, block_id, amount, held_delta)
    SELECT entry.id, c.block_id, c.d_remaining, c.d_held FROM entry, changes AS c ORDER BY c.n
)
SELECT entry.id, balance.alert_levels FROM entry, balance
"""
)


def _write_in_one_statement(
    values: dict[str, Any], changes: list[tuple[int, int, int]], usage: tuple | None, now: datetime
) -> tuple[int, Any]:
    day, feature, used = usage if usage is not None else (None, "", 0)
    params = {
        **values,
        "metadata": json.dumps(values["metadata"]),
        "block_ids": [b for b, _, _ in changes],
        "d_remaining": [r for _, r, _ in changes],
        "d_held": [h for _, _, h in changes],
        "is_usage": usage is not None,
        "usage_day": day,
        "usage_feature": feature,
        "usage_credits": used,
    }
    row = db.session.execute(WRITE_SQL, params).one()
    return row[0], row[1]


# Teams whose writes are one change for the low-balance alerts: team id -> [available at the start, last entry].
_one_change: ContextVar[dict[int, list[Any]] | None] = ContextVar("one_change", default=None)


@contextmanager
def one_change(team_id: int) -> Iterator[None]:
    """Judge the writes inside as one change for the low-balance alerts, from the balance before the first
    to the balance after the last: a new period that expires the old plan credits and grants the new ones
    must not tell the team it ran out in between. Takes the team's lock; on an error, nothing is judged."""
    batch = _one_change.get()
    if batch is not None and team_id in batch:
        yield  # already inside one change of this team
        return
    locked = lock(team_id)
    token = _one_change.set({**(batch or {}), team_id: [locked.balance - locked.held, None]})
    try:
        yield
        start, entry_id = _one_change.get()[team_id]  # type: ignore[index]
    finally:
        _one_change.reset(token)
    if entry_id is None:
        return
    row = db.session.execute(
        select(balances.c.balance, balances.c.held, balances.c.alert_levels).where(balances.c.team_id == team_id)
    ).one()
    if row.balance - row.held < start:
        alert_if_crossed(team_id, row.alert_levels, start, row.balance - row.held, entry_id)


def alert_levels(levels: list[int] | None) -> list[int]:
    """A team's low-balance thresholds: its own, or the ``LOW_BALANCE_THRESHOLD`` default when it set none."""
    if levels is None:
        default = current_app.config["LOW_BALANCE_THRESHOLD"]
        return [default] if default > 0 else []
    return sorted(int(level) for level in levels)


def crossed(levels: list[int], before: int, after: int) -> list[int]:
    """The thresholds a change from ``before`` to ``after`` credits available went below.

    Changes of one team run one at a time under its lock, so each crossing is seen by exactly one
    change; rising above a threshold again is what lets the next fall cross it once more.
    """
    return [level for level in levels if before >= level > after]


def alert_if_crossed(team_id: int, levels: list[int] | None, before: int, after: int, entry_id: int) -> None:
    below = crossed(alert_levels(levels), before, after)
    ran_out = before > 0 and after <= 0
    if below or ran_out:
        from .. import alerts  # mail, not ledger: only a crossing pays for it

        alerts.balance_crossed(team_id, below, after, ran_out=ran_out, entry_id=entry_id)


class Row:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)
