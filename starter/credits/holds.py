"""Holds: reserve credits, then capture what the work cost or release them; expired holds are released."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select

from ..extensions import db
from ..models import utcnow
from . import limits
from .core import (
    CloseHold,
    OpenHold,
    allocations_t,
    blocks_t,
    draws_for,
    entries_t,
    fingerprint_of,
    holds_t,
    lock,
    reserved_by,
    start,
    write,
)
from .overage import cover_shortfall
from .recharge_due import crossed, record_due
from .rules import (
    SYSTEM,
    Actor,
    HoldNotActive,
    HoldNotFound,
    HoldResult,
    InvalidAmount,
    InvalidRequest,
    Receipt,
    check_amount,
    check_key,
    feature_cost,
)


def hold(
    team_id: int,
    amount: int | None = None,
    *,
    key: str,
    feature: str | None = None,
    ttl_seconds: int = 900,
    actor: Actor = SYSTEM,
    description: str = "",
    meta: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> HoldResult:
    """Reserve credits for work whose cost is known afterwards; capture or release it before it expires.

    The hold expires after ``ttl_seconds``, or sooner if a block it reserves from expires sooner:
    a hold never outlives its credits.
    """
    feature, amount = feature_cost(feature, amount)
    check_key(key)
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= 86_400:
        raise InvalidRequest("A hold lasts between 1 second and 24 hours.")
    now = now or utcnow()
    fingerprint = fingerprint_of("hold", amount=amount, feature=feature, ttl=ttl_seconds)
    opened = start(team_id, key, fingerprint, now, blocks=True)
    if opened.replayed:
        return _hold_result(opened.replayed.hold_id, replayed=True)
    locked = before = opened.locked
    total = limits.check(team_id, actor, amount, now, spend=False)
    available, draws = draws_for(team_id, amount, now, first=opened.blocks)
    if available < amount:
        # An opted-in team's overage covers the rest, up to its cap (else InsufficientCredits).
        before = cover_shortfall(team_id, before, required=amount, available=available, key=key, actor=actor, now=now)
        available, draws = draws_for(team_id, amount, now)
    expires_at = min([now + timedelta(seconds=ttl_seconds)] + [b.expires_at for b, _ in draws if b.expires_at])
    reserved = write(
        team_id,
        "hold",
        before=before,
        changes=[(block.id, 0, take) for block, take in draws],
        key=key,
        fingerprint=fingerprint,
        now=now,
        actor=actor,
        description=f"Reserved for {description}" if description else "Credits reserved",
        meta=meta,
        feature=feature,
        alert_from=locked.balance - locked.held,
        open_hold=OpenHold(amount, description[:255], expires_at),
    )
    limits.reached(team_id, actor, total, now)
    assert reserved.hold_id is not None
    return HoldResult(reserved.hold_id, team_id, amount, None, "active", expires_at, feature)


def capture(
    team_id: int, hold_id: int, amount: int, *, key: str, actor: Actor = SYSTEM, now: datetime | None = None
) -> HoldResult:
    """Spend ``amount`` (0 … the held amount) of an active hold and return the rest.

    Capturing more than was held is refused (``InvalidAmount``): reserve the most a call can cost.
    """
    check_amount(amount, allow_zero=True)
    check_key(key)
    now = now or utcnow()
    fingerprint = fingerprint_of("capture", hold_id=hold_id, amount=amount)
    opened = start(team_id, key, fingerprint, now, hold_id=hold_id)
    if opened.replayed:
        return _hold_result(opened.replayed.hold_id, replayed=True)
    before, active = opened.locked, _active(opened.hold, now)
    if amount > active.amount:
        raise InvalidAmount(f"Cannot capture {amount:,} credits from a hold of {active.amount:,}.")
    changes, left = [], amount
    for block_id, held in opened.reserved:
        take = min(left, held)
        changes.append((block_id, -take, -held))
        left -= take
    captured = write(
        team_id,
        "capture",
        before=before,
        changes=changes,
        key=key,
        fingerprint=fingerprint,
        now=now,
        actor=actor,
        description=active.description or "Credits used",
        feature=active.feature,
        hold_id=hold_id,
        meta={"held": active.amount, "captured": amount, "returned": active.amount - amount},
        close_hold=CloseHold("captured", amount),
    )
    if crossed(before, captured.balance_after):
        record_due(team_id, captured.balance_after, now)
    limits.count_capture(team_id, actor, amount, now)
    return HoldResult(hold_id, team_id, active.amount, amount, "captured", active.expires_at, active.feature)


def release(team_id: int, hold_id: int, *, key: str, actor: Actor = SYSTEM, now: datetime | None = None) -> HoldResult:
    """Give back every credit of an active hold."""
    check_key(key)
    now = now or utcnow()
    fingerprint = fingerprint_of("release", hold_id=hold_id)
    opened = start(team_id, key, fingerprint, now, hold_id=hold_id)
    if opened.replayed:
        return _hold_result(opened.replayed.hold_id, replayed=True)
    active = _active(opened.hold, now)
    close_hold(
        team_id,
        hold_id,
        before=opened.locked,
        status="released",
        key=key,
        actor=actor,
        now=now,
        fingerprint=fingerprint,
        held=(active.amount, opened.reserved),
    )
    return HoldResult(hold_id, team_id, active.amount, None, "released", active.expires_at, active.feature)


def release_expired_holds(now: datetime | None = None, *, limit: int = 500) -> int:
    """Release up to ``limit`` active holds past their expiry; returns how many. The caller commits."""
    now = now or utcnow()
    due = db.session.execute(
        select(holds_t.c.team_id, holds_t.c.id)
        .where(holds_t.c.status == "active", holds_t.c.expires_at <= now)
        .order_by(holds_t.c.expires_at, holds_t.c.id)
        .limit(limit)
    ).all()
    released = 0
    for team_id, hold_id in due:
        before = lock(team_id)
        status = db.session.execute(select(holds_t.c.status).where(holds_t.c.id == hold_id)).scalar_one()
        if status == "active":  # another process may have closed it since we looked
            close_hold(
                team_id,
                hold_id,
                before=before,
                status="expired",
                key=f"expire:hold:{hold_id}",
                actor=SYSTEM,
                now=now,
            )
            released += 1
    return released


def _active(row: Any | None, now: datetime) -> Any:
    """The hold ``start`` read, if it is active: else why not."""
    if row is None:
        raise HoldNotFound("No such hold.")
    if row.status == "revoked":
        raise HoldNotActive("This hold was ended: the credits it reserved were taken back by a refund or dispute.")
    if row.status != "active":
        raise HoldNotActive(f"This hold is already {row.status}.")
    if row.expires_at <= now:
        raise HoldNotActive("This hold has expired; its credits are being released.")
    return row


def holds_on_block(block_id: int) -> list[int]:
    return list(
        db.session.scalars(
            select(holds_t.c.id)
            .join(entries_t, and_(entries_t.c.hold_id == holds_t.c.id, entries_t.c.kind == "hold"))
            .join(allocations_t, allocations_t.c.entry_id == entries_t.c.id)
            .where(allocations_t.c.block_id == block_id, holds_t.c.status == "active")
            .distinct()
        )
    )


def holds_on_reference(team_id: int, reference: str) -> list[int]:
    """Active holds reserving credits of the blocks granted under ``reference`` (a purchase)."""
    return list(
        db.session.scalars(
            select(holds_t.c.id)
            .join(entries_t, and_(entries_t.c.hold_id == holds_t.c.id, entries_t.c.kind == "hold"))
            .join(allocations_t, allocations_t.c.entry_id == entries_t.c.id)
            .join(blocks_t, blocks_t.c.id == allocations_t.c.block_id)
            .where(
                blocks_t.c.team_id == team_id,
                blocks_t.c.reference == reference,
                blocks_t.c.held > 0,
                holds_t.c.status == "active",
            )
            .distinct()
            .order_by(holds_t.c.id)
        )
    )


CLOSED_DESCRIPTIONS = {
    "expired": "Hold expired",
    "released": "Hold released",
    "revoked": "Hold ended: its credits were taken back by a refund or dispute",
}


def close_hold(
    team_id: int,
    hold_id: int,
    *,
    before: tuple[int, int],
    status: str,
    key: str,
    actor: Actor,
    now: datetime,
    fingerprint: str | None = None,
    held: tuple[int, list[tuple[int, int]]] | None = None,
) -> Receipt:
    """Return every held credit of a hold; the caller has locked the team (``before`` is its balance).

    ``held``: the hold's amount and (block, credits) it reserves, when the caller read them already.
    """
    if held is None:
        amount = db.session.execute(select(holds_t.c.amount).where(holds_t.c.id == hold_id)).scalar_one()
        held = amount, reserved_by(hold_id)
    amount, reserved = held
    return write(
        team_id,
        "release",
        before=before,
        changes=[(block_id, 0, -credits) for block_id, credits in reserved],
        key=key,
        fingerprint=fingerprint or fingerprint_of("release", hold_id=hold_id),
        now=now,
        actor=actor,
        description=CLOSED_DESCRIPTIONS[status],
        hold_id=hold_id,
        meta={"held": amount},
        close_hold=CloseHold(status),
    )


def _hold_result(hold_id: int | None, replayed: bool = False) -> HoldResult:
    row = db.session.execute(select(holds_t).where(holds_t.c.id == hold_id)).one()
    return HoldResult(
        row.id,
        row.team_id,
        row.amount,
        row.captured_amount,
        row.status,
        row.expires_at,
        row.feature,
        replayed,
    )
