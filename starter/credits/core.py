"""What every credit operation shares: the team lock, idempotency replay, block order and the entry write."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.exc import DBAPIError

from ..extensions import db
from ..models import CreditBalance, CreditBlock, Hold, LedgerAllocation, LedgerEntry
from . import rollup
from .rules import Actor, IdempotencyConflict, InvalidRequest, Receipt

balances = CreditBalance.__table__
blocks_t = CreditBlock.__table__
entries_t = LedgerEntry.__table__
allocations_t = LedgerAllocation.__table__
holds_t = Hold.__table__


def require_aware(now: datetime) -> None:
    """Refuse a naive ``now``: the ledger functions take a time as it is (UTCDateTime refuses one on
    SQLite's path), and every time the ledger writes is UTC."""
    if now.tzinfo is None:
        raise ValueError("naive datetime given; use an aware UTC datetime")


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
    return replayed(keyed_entry(team_id, key), fingerprint)


def keyed_entry(team_id: int, key: str) -> Any | None:
    return db.session.execute(
        select(entries_t).where(entries_t.c.team_id == team_id, entries_t.c.idempotency_key == key)
    ).one_or_none()


def replayed(row: Any | None, fingerprint: str) -> Receipt | None:
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
            blocks_t.c.spendable,  # the same, as PostgreSQL's partial index names it
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
    team_id: int,
    amount: int,
    now: datetime,
    *,
    reference: str | None = None,
    exact: bool = False,
    first: list[Any] | None = None,
) -> tuple[int, list[tuple[Any, int]]]:
    """(credits available, the (block, credits) to take) for ``amount``, or for all there is if less.

    Reads the first ``SPEND_BATCH`` blocks; only when they do not cover ``amount`` does it read them all,
    so a shortfall still reports the true total. When the batch covers ``amount``, "available" is what
    the batch holds (at least ``amount``, maybe less than the team's total); ``exact`` reads every block.
    ``first``: that batch, when ``start`` read it already under the same lock.
    """
    if first is None:
        first = spendable(team_id, now, reference=reference, limit=None if exact else SPEND_BATCH)
    blocks = first
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


class Block(NamedTuple):
    id: int
    remaining: int
    held: int
    expires_at: datetime | None


class Opened(NamedTuple):
    """What a change reads under the team's lock before it decides: ``start`` below."""

    locked: Locked
    replayed: Receipt | None  # the entry an earlier call with this key wrote (``start`` checks its parameters)
    blocks: list[Any] | None  # the first ``SPEND_BATCH`` spendable blocks, when asked for
    hold: Any | None  # the hold asked for, if it is the team's
    reserved: list[tuple[int, int]]  # (block id, credits) that hold reserved, in the order it reserved them


def start(
    team_id: int, key: str, fingerprint: str, now: datetime, *, blocks: bool = False, hold_id: int | None = None
) -> Opened:
    """Lock the team's balance row, then read what the change needs to decide: the entry an earlier
    call with ``key`` wrote (``IdempotencyConflict`` if that call differed), and when asked the first
    spendable blocks and a hold with the blocks it reserves. On PostgreSQL one call of ``credit_open``
    (migration 9a1f3c7d2b60), whose statements each see what was committed before the lock was granted;
    on SQLite the same reads one by one. ``now`` must be aware (UTC): the functions take it as it is."""
    require_aware(now)
    if db.engine.dialect.name == "postgresql":
        opened = _open_in_one_call(team_id, key, now, SPEND_BATCH if blocks else 0, hold_id)
    else:
        opened = _open_statement_by_statement(team_id, key, now, SPEND_BATCH if blocks else 0, hold_id)
    return opened._replace(replayed=replayed(opened.replayed, fingerprint))


def _call(sql: str, params: dict[str, Any]) -> tuple:
    """One call of a ledger function on the session's connection, its row as a tuple.

    When nothing watches the engine (no cursor or error listeners, no echo), straight through the
    driver's cursor: SQLAlchemy's execution context and result object cost more Python than the rest of
    a spend's own work. A driver error is still raised as SQLAlchemy's ``DBAPIError`` subclass, and a
    lost connection is invalidated. When something does watch (a tracer, a test counting statements,
    ``echo``), the same statement goes through ``exec_driver_sql`` so it sees it as any other.
    """
    connection = db.session.connection()
    dispatch, dialect = connection.dispatch, connection.dialect
    if (
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or dialect.dispatch.handle_error
        or connection.engine.echo
    ):
        return tuple(connection.exec_driver_sql(sql, params).one())
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchone()
    except dialect.loaded_dbapi.Error as error:
        gone = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
        if gone:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql, params, error, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from error
    finally:
        cursor.close()


class OpenRow(NamedTuple):
    """What ``credit_open`` returns, by position."""

    o_account: bool
    o_balance: int
    o_held: int
    o_recharge_below: int | None
    r_id: int | None
    b_ids: list[int] | None
    b_remaining: list[int] | None
    b_held: list[int] | None
    b_expires_at: list[datetime] | None
    h_id: int | None
    h_amount: int | None
    h_status: str | None
    h_feature: str | None
    h_description: str | None
    h_expires_at: datetime | None
    h_blocks: list[int] | None
    h_held: list[int] | None


OPEN_SQL = "SELECT * FROM credit_open(%(team_id)s, %(key)s, %(now)s, %(batch)s, %(hold_id)s)"


def _open_in_one_call(team_id: int, key: str, now: datetime, batch: int, hold_id: int | None) -> Opened:
    params = {"team_id": team_id, "key": key, "now": now, "batch": batch, "hold_id": hold_id}
    row = OpenRow._make(_call(OPEN_SQL, params))
    if not row.o_account:
        raise InvalidRequest("This team has no credit account.")
    locked = Locked(row.o_balance, row.o_held, row.o_recharge_below)
    if row.r_id is not None:  # a repeat (rare): its entry read whole by one statement more
        earlier = keyed_entry(team_id, key)
        return Opened(locked, earlier, None, None, [])
    spendable_blocks = None
    if batch:
        spendable_blocks = [
            Block(block_id, remaining, held, expires_at and expires_at.astimezone(UTC))
            for block_id, remaining, held, expires_at in zip(
                row.b_ids or (), row.b_remaining or (), row.b_held or (), row.b_expires_at or (), strict=True
            )
        ]
    hold, reserved = None, []
    if row.h_id is not None:
        hold = Row(
            id=row.h_id,
            team_id=team_id,
            amount=row.h_amount,
            status=row.h_status,
            feature=row.h_feature,
            description=row.h_description,
            expires_at=row.h_expires_at.astimezone(UTC),
        )
        reserved = list(zip(row.h_blocks or (), row.h_held or (), strict=True))
    return Opened(locked, None, spendable_blocks, hold, reserved)


def _open_statement_by_statement(team_id: int, key: str, now: datetime, batch: int, hold_id: int | None) -> Opened:
    locked = lock(team_id)
    if (earlier := keyed_entry(team_id, key)) is not None:
        return Opened(locked, earlier, None, None, [])
    spendable_blocks = spendable(team_id, now, limit=batch) if batch else None
    hold, reserved = None, []
    if hold_id is not None:
        hold = db.session.execute(
            select(holds_t).where(holds_t.c.id == hold_id, holds_t.c.team_id == team_id)
        ).one_or_none()
        if hold is not None:
            reserved = reserved_by(hold_id)
    return Opened(locked, None, spendable_blocks, hold, reserved)


def reserved_by(hold_id: int) -> list[tuple[int, int]]:
    """(block id, credits held there) for a hold, in the order it reserved them."""
    return [
        (row.block_id, row.held_delta)
        for row in db.session.execute(
            select(allocations_t.c.block_id, allocations_t.c.held_delta)
            .join(entries_t, entries_t.c.id == allocations_t.c.entry_id)
            .where(entries_t.c.hold_id == hold_id, entries_t.c.kind == "hold")
            .order_by(allocations_t.c.id)
        )
    ]


class OpenHold(NamedTuple):
    """A hold the change opens: the hold row is written with the entry that reserves its credits."""

    amount: int
    description: str
    expires_at: datetime


class CloseHold(NamedTuple):
    """A hold the change closes: its new status (and what was captured) is written with the entry."""

    status: str
    captured: int | None = None


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
    open_hold: OpenHold | None = None,
    close_hold: CloseHold | None = None,
) -> Receipt:
    """Apply per-block changes (block id, Δremaining, Δheld), move the balance and append the entry;
    with ``open_hold`` or ``close_hold``, open or close the entry's hold too (the receipt names it).

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
    require_aware(now)
    if db.engine.dialect.name == "postgresql":
        entry_id, levels, values["hold_id"] = _write_in_one_call(values, changes, usage, open_hold, close_hold)
    else:
        entry_id, levels, values["hold_id"] = _write_statement_by_statement(
            values, changes, usage, open_hold, close_hold
        )
    began = before[0] - before[1] if alert_from is None else alert_from
    judge(team_id, entry_id, levels, began, balance - held)
    return receipt(Row(id=entry_id, **values))


def judge(team_id: int, entry_id: int, levels: Any, began: int, after: int) -> None:
    """After an entry took the credits available from ``began`` to ``after``: the low-balance alerts, or,
    inside ``one_change``, the entry noted to be judged with the rest of the change when it ends."""
    if (batch := _one_change.get()) is not None and team_id in batch:
        batch[team_id][1] = entry_id
    elif after < began:
        alert_if_crossed(team_id, levels, began, after, entry_id)


def _write_statement_by_statement(
    values: dict[str, Any],
    changes: list[tuple[int, int, int]],
    usage: tuple | None,
    open_hold: OpenHold | None,
    close_hold: CloseHold | None,
) -> tuple[int, Any, int | None]:
    """The write as separate statements (SQLite): hold, blocks, balance, entry, usage, allocations, hold."""
    team_id, now = values["team_id"], values["created_at"]
    if open_hold is not None:
        values["hold_id"] = db.session.execute(
            insert(holds_t)
            .values(
                team_id=team_id,
                amount=open_hold.amount,
                status="active",
                feature=values["feature"],
                description=open_hold.description,
                expires_at=open_hold.expires_at,
                created_at=now,
            )
            .returning(holds_t.c.id)
        ).scalar_one()
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
    if close_hold is not None:
        closed = {"status": close_hold.status, "closed_at": now}
        if close_hold.captured is not None:
            closed["captured_amount"] = close_hold.captured
        db.session.execute(update(holds_t).where(holds_t.c.id == values["hold_id"]).values(**closed))
    return entry_id, levels, values["hold_id"]


# The same write as one call on PostgreSQL (``credit_write``, migration 9a1f3c7d2b60): one round trip
# instead of five to seven, its statements planned once per connection; the per-block changes as arrays.
WRITE_SQL = (
    "SELECT * FROM credit_write(%(team_id)s, %(kind)s, %(amount)s, %(held_delta)s, %(balance_after)s,"
    " %(held_after)s, %(block_id)s, %(hold_id)s, %(feature)s, %(actor_type)s, %(actor_user_id)s, %(api_key_id)s,"
    " %(description)s, %(metadata)s::json, %(idempotency_key)s, %(request_hash)s, %(created_at)s,"
    " %(block_ids)s::bigint[], %(d_remaining)s::bigint[], %(d_held)s::bigint[],"
    " %(usage_day)s::date, %(usage_feature)s, %(usage_credits)s,"
    " %(open_amount)s, %(open_description)s, %(open_expires_at)s, %(close_status)s, %(close_captured)s)"
)


def _write_in_one_call(
    values: dict[str, Any],
    changes: list[tuple[int, int, int]],
    usage: tuple | None,
    open_hold: OpenHold | None,
    close_hold: CloseHold | None,
) -> tuple[int, Any, int | None]:
    day, feature, used = usage if usage is not None else (None, None, None)
    params = {
        **values,
        "metadata": json.dumps(values["metadata"]),
        "block_ids": [b for b, _, _ in changes],
        "d_remaining": [r for _, r, _ in changes],
        "d_held": [h for _, _, h in changes],
        "usage_day": day,
        "usage_feature": feature,
        "usage_credits": used,
        "open_amount": open_hold and open_hold.amount,
        "open_description": open_hold and open_hold.description,
        "open_expires_at": open_hold and open_hold.expires_at,
        "close_status": close_hold and close_hold.status,
        "close_captured": close_hold and close_hold.captured,
    }
    row = _call(WRITE_SQL, params)
    if row[0] is None:  # the key was written by a change the lock did not keep out (none should exist)
        raise IdempotencyConflict("This idempotency key was already used.")
    return row[0], row[2], row[1]


class SpentRow(NamedTuple):
    """What ``credit_spend`` returns, by position."""

    o_status: str
    o_balance: int
    o_held: int
    o_recharge_below: int | None
    o_entry_id: int | None
    o_block_id: int | None
    o_alert_levels: Any


class Debited(NamedTuple):
    locked: Locked  # the balance row as the lock read it
    receipt: Receipt


SPEND_SQL = (
    "SELECT * FROM credit_spend(%(team_id)s, %(kind)s, %(amount)s, %(batch)s, %(feature)s, %(actor_type)s,"
    " %(actor_user_id)s, %(api_key_id)s, %(description)s, %(metadata)s::json, %(key)s, %(request_hash)s,"
    " %(now)s, %(usage_day)s::date, %(usage_feature)s, %(usage_credits)s)"
)


def debit_in_one_call(
    team_id: int,
    kind: str,
    amount: int,
    *,
    key: str,
    fingerprint: str,
    now: datetime,
    actor: Actor,
    description: str,
    meta: dict[str, Any] | None,
    feature: str | None,
) -> Debited | None:
    """A debit the team's first ``SPEND_BATCH`` blocks cover, decided and written by one call of
    ``credit_spend`` on PostgreSQL: ``credit_open``, the draw in the spending order (what ``draws_for``
    does with a batch that covers the amount), then ``credit_write``, all under the lock that call took.

    None when this path does not apply: SQLite, or the first blocks do not cover ``amount`` (the lock
    stays taken and nothing was written; the caller goes the general way, which reads every block and
    decides on overage or ``InsufficientCredits``). The caller checks an actor's spend limit first, so
    only an actor without one comes here. A repeat of ``key`` returns the earlier entry.
    """
    require_aware(now)
    if db.engine.dialect.name != "postgresql":
        return None
    day, usage_feature, used = rollup.usage_of(kind, -amount, feature, now) or (None, None, None)
    description = description[:255]
    row = SpentRow._make(
        _call(
            SPEND_SQL,
            {
                "team_id": team_id,
                "kind": kind,
                "amount": amount,
                "batch": SPEND_BATCH,
                "feature": feature,
                "actor_type": actor.type,
                "actor_user_id": actor.user_id,
                "api_key_id": actor.api_key_id,
                "description": description,
                "metadata": json.dumps(meta or {}),
                "key": key,
                "request_hash": fingerprint,
                "now": now,
                "usage_day": day,
                "usage_feature": usage_feature,
                "usage_credits": used,
            },
        )
    )
    if row.o_status == "no account":
        raise InvalidRequest("This team has no credit account.")
    locked = Locked(row.o_balance, row.o_held, row.o_recharge_below)
    if row.o_status == "repeat":
        return Debited(locked, replayed(keyed_entry(team_id, key), fingerprint))  # type: ignore[arg-type]
    if row.o_status == "short":
        return None
    began = locked.balance - locked.held
    judge(team_id, row.o_entry_id, row.o_alert_levels, began, began - amount)
    written = Row(
        id=row.o_entry_id,
        team_id=team_id,
        kind=kind,
        amount=-amount,
        balance_after=locked.balance - amount,
        held_after=locked.held,
        block_id=row.o_block_id,
        hold_id=None,
        feature=feature,
        created_at=now,
    )
    return Debited(locked, receipt(written))


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
        began, entry_id = _one_change.get()[team_id]  # type: ignore[index]
    finally:
        _one_change.reset(token)
    if entry_id is None:
        return
    row = db.session.execute(
        select(balances.c.balance, balances.c.held, balances.c.alert_levels).where(balances.c.team_id == team_id)
    ).one()
    if row.balance - row.held < began:
        alert_if_crossed(team_id, row.alert_levels, began, row.balance - row.held, entry_id)


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
