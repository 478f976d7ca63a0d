"""Grants, spends, adjustments, clawbacks and expiry: every change of credits except holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from .. import catalog
from ..extensions import db
from ..models import BLOCK_SOURCES, CreditBalance, Team, utcnow
from . import limits
from .core import blocks_t, debit_in_one_call, draws_for, fingerprint_of, lock, replay, start, write
from .holds import close_hold, holds_on_block, holds_on_reference
from .overage import cover_shortfall
from .recharge_due import crossed, record_due
from .rules import (
    SYSTEM,
    Actor,
    InsufficientCredits,
    InvalidAmount,
    InvalidRequest,
    Receipt,
    check_amount,
    check_key,
    feature_cost,
)


def open_account(team: Team) -> None:
    """Create the team's balance row (the lock point); idempotent. The caller commits."""
    if db.session.get(CreditBalance, team.id) is None:
        db.session.add(CreditBalance(team_id=team.id, balance=0, held=0))
        db.session.flush()


def grant(
    team_id: int,
    amount: int,
    *,
    source: str,
    key: str,
    expires_at: datetime | None = None,
    period_start: datetime | None = None,
    reference: str | None = None,
    actor: Actor = SYSTEM,
    description: str = "",
    meta: dict[str, Any] | None = None,
    kind: str = "grant",
    now: datetime | None = None,
) -> Receipt:
    """Add a credit block of ``amount`` (from ``source``: plan, purchase, promo, adjustment, refund)."""
    check_amount(amount)
    check_key(key)
    if source not in BLOCK_SOURCES:
        raise InvalidRequest(f"Unknown credit source {source!r}.")
    now = now or utcnow()
    fingerprint = fingerprint_of(
        kind,
        amount=amount,
        source=source,
        expires_at=expires_at,
        period_start=period_start,
        reference=reference,
    )
    before = lock(team_id)
    if replayed := replay(team_id, key, fingerprint):
        return replayed
    block_id = db.session.execute(
        insert(blocks_t)
        .values(
            team_id=team_id,
            source=source,
            amount=amount,
            remaining=0,
            held=0,
            expires_at=expires_at,
            period_start=period_start,
            reference=reference,
            created_at=now,
        )
        .returning(blocks_t.c.id)
    ).scalar_one()
    # The block starts empty and the entry fills it, so the block's remaining is its allocations' sum.
    return write(
        team_id,
        kind,
        before=before,
        changes=[(block_id, amount, 0)],
        key=key,
        fingerprint=fingerprint,
        now=now,
        actor=actor,
        description=description,
        meta=meta,
    )


def spend(
    team_id: int,
    amount: int | None = None,
    *,
    key: str,
    feature: str | None = None,
    actor: Actor = SYSTEM,
    description: str = "",
    meta: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Receipt:
    """Debit ``amount`` credits (or the ``feature``'s catalog cost); ``InsufficientCredits`` if it does not fit."""
    feature, amount = feature_cost(feature, amount)
    check_key(key)
    return _debit(
        team_id,
        "spend",
        amount,
        key=key,
        feature=feature,
        actor=actor,
        description=description or (catalog.FEATURES[feature].name if feature else "Spend"),
        meta=meta,
        now=now or utcnow(),
    )


def _debit(
    team_id: int,
    kind: str,
    amount: int,
    *,
    key: str,
    feature: str | None,
    actor: Actor,
    description: str,
    meta: dict[str, Any] | None,
    now: datetime,
) -> Receipt:
    fingerprint = fingerprint_of(kind, amount=amount, feature=feature)
    if actor.limit is None or kind != "spend":
        # The common case: no limit to count against, and the first blocks cover it (PostgreSQL).
        debited = debit_in_one_call(
            team_id,
            kind,
            amount,
            key=key,
            fingerprint=fingerprint,
            now=now,
            actor=actor,
            description=description,
            meta=meta,
            feature=feature,
        )
        if debited is not None:
            if not debited.receipt.replayed and crossed(debited.locked, debited.receipt.balance_after):
                record_due(team_id, debited.receipt.balance_after, now)
            return debited.receipt
    opened = start(team_id, key, fingerprint, now, blocks=True)
    if opened.replayed:
        return opened.replayed
    locked = before = opened.locked
    total = limits.check(team_id, actor, amount, now) if kind == "spend" else None
    available, draws = draws_for(team_id, amount, now, first=opened.blocks)
    if available < amount:
        if kind != "spend":
            raise InsufficientCredits(amount, available)
        # Only a spend that does not fit pays for this: an opted-in team's overage, up to its cap.
        before = cover_shortfall(team_id, before, required=amount, available=available, key=key, actor=actor, now=now)
        available, draws = draws_for(team_id, amount, now)
    changes = [(block.id, -take, 0) for block, take in draws]
    result = write(
        team_id,
        kind,
        before=before,
        changes=changes,
        key=key,
        fingerprint=fingerprint,
        now=now,
        actor=actor,
        description=description,
        meta=meta,
        feature=feature,
        alert_from=locked.balance - locked.held,
    )
    # Against the balance the lock read: an overage grant just before this write is no crossing of its own.
    if crossed(locked, result.balance_after):
        record_due(team_id, result.balance_after, now)
    limits.reached(team_id, actor, total, now)
    return result


DEFAULT_ADJUSTMENT = "Credit adjustment"  # what a team reads when the admin gave no description


def adjust(
    team_id: int,
    amount: int,
    *,
    reason: str,
    key: str,
    actor: Actor = SYSTEM,
    now: datetime | None = None,
    description: str | None = None,
) -> Receipt:
    """An admin correction: positive adds a non-expiring block, negative debits like a spend.

    ``reason`` is internal (the entry's metadata, for admins); ``description`` is what the team reads
    in its history ("Credit adjustment" unless given).
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise InvalidAmount("An adjustment is a non-zero whole number of credits.")
    check_amount(abs(amount))
    if not reason or not reason.strip():
        raise InvalidRequest("An adjustment needs a reason.")
    description = (description or "").strip()[:255] or DEFAULT_ADJUSTMENT
    if amount > 0:
        return grant(
            team_id,
            amount,
            source="adjustment",
            key=key,
            actor=actor,
            description=description,
            kind="adjustment",
            meta={"reason": reason.strip()},
            now=now,
        )
    check_key(key)
    return _debit(
        team_id,
        "adjustment",
        -amount,
        key=key,
        feature=None,
        actor=actor,
        description=description,
        meta={"reason": reason.strip()},
        now=now or utcnow(),
    )


def clawback(
    team_id: int,
    reference: str,
    amount: int,
    *,
    key: str,
    actor: Actor = SYSTEM,
    description: str = "",
    meta: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Receipt:
    """Take back up to ``amount`` from the blocks granted under ``reference`` (a refund or lost dispute).

    Held credits are no shield: when what is unheld does not cover ``amount``, the holds on those
    blocks end (status ``revoked``; capturing one is refused) and their credits are taken too. What
    was already spent is the shortfall, recorded in the entry's metadata.
    """
    check_amount(amount)
    check_key(key)
    now = now or utcnow()
    fingerprint = fingerprint_of("clawback", reference=reference, amount=amount)
    before = lock(team_id)
    if replayed := replay(team_id, key, fingerprint):
        return replayed
    available, draws = draws_for(team_id, amount, now, reference=reference)
    for hold_id in holds_on_reference(team_id, reference) if available < amount else []:
        # One hold at a time, oldest first, only until the clawback is covered: a small refund must not
        # end every piece of work in flight.
        receipt = close_hold(
            team_id, hold_id, before=before, status="revoked", key=f"{key}:revoke:{hold_id}", actor=actor, now=now
        )
        before = (receipt.balance_after, receipt.held_after)
        available, draws = draws_for(team_id, amount, now, reference=reference)
        if available >= amount:
            break
    taken = min(amount, available)
    changes = [(block.id, -take, 0) for block, take in draws]
    meta = {**(meta or {}), "reference": reference, "requested": amount, "shortfall": amount - taken}
    return write(
        team_id,
        "clawback",
        before=before,
        changes=changes,
        key=key,
        fingerprint=fingerprint,
        now=now,
        actor=actor,
        description=description or "Clawback",
        meta=meta,
    )


def expire_block(
    team_id: int, block_id: int, *, now: datetime | None = None, early_reason: str | None = None
) -> Receipt | None:
    """Write the expiry of one block whose time has come: release its holds, zero what remains.

    With ``early_reason`` the block ends now even though its time has not come (a new paid period
    replaces the old period's plan credits); its active holds are released with it.
    """
    now = now or utcnow()
    key = f"expire:block:{block_id}"
    fingerprint = fingerprint_of("expire", block_id=block_id)
    before = lock(team_id)
    if replayed := replay(team_id, key, fingerprint):
        return replayed
    block = db.session.execute(
        select(blocks_t).where(blocks_t.c.id == block_id, blocks_t.c.team_id == team_id)
    ).one_or_none()
    due = block is not None and block.expires_at is not None and block.expires_at <= now
    if block is None or block.expired_at is not None or not (due or early_reason):
        return None
    if block.held:
        # A hold never outlives the blocks it draws on, so these holds end with the block.
        for hold_id in holds_on_block(block_id):
            receipt = close_hold(
                team_id,
                hold_id,
                before=before,
                status="expired",
                key=f"expire:hold:{hold_id}",
                actor=SYSTEM,
                now=now,
            )
            before = (receipt.balance_after, receipt.held_after)
        block = db.session.execute(select(blocks_t).where(blocks_t.c.id == block_id)).one()
    db.session.execute(update(blocks_t).where(blocks_t.c.id == block_id).values(expired_at=now))
    if block.remaining == 0:
        return None  # fully used: nothing to write off, the block is simply closed
    return write(
        team_id,
        "expire",
        before=before,
        changes=[(block_id, -block.remaining, 0)],
        key=key,
        fingerprint=fingerprint,
        now=now,
        actor=SYSTEM,
        description=f"Credits expired: {early_reason}" if early_reason else "Credits expired",
        meta={"source": block.source, "expires_at": block.expires_at.isoformat() if block.expires_at else None},
    )


def expire_due(now: datetime | None = None, *, limit: int = 500) -> int:
    """Write the expiry of up to ``limit`` blocks past their time; returns how many. The caller commits."""
    now = now or utcnow()
    due = db.session.execute(
        select(blocks_t.c.team_id, blocks_t.c.id)
        .where(blocks_t.c.expired_at.is_(None), blocks_t.c.expires_at <= now)
        .order_by(blocks_t.c.team_id, blocks_t.c.id)
        .limit(limit)
    ).all()
    for team_id, block_id in due:
        expire_block(team_id, block_id, now=now)
    return len(due)
