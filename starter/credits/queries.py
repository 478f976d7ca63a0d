"""Reads of the ledger: a team's balance and a dry-run quote. They lock nothing and write nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select

from ..extensions import db
from ..models import utcnow
from .core import blocks_t, draws_for
from .rules import check_amount


@dataclass(frozen=True)
class Balance:
    """What a team can spend now. Expired blocks never count, written off yet or not."""

    plan: int = 0
    purchased: int = 0
    other: int = 0  # promo, adjustment and refund blocks
    held: int = 0
    next_expiry_at: datetime | None = None
    next_expiry_amount: int = 0

    @property
    def total(self) -> int:
        return self.plan + self.purchased + self.other

    @property
    def available(self) -> int:
        return self.total - self.held


def balance(team_id: int, now: datetime | None = None) -> Balance:
    """One aggregate query over the team's live blocks, by source and expiry."""
    now = now or utcnow()
    rows = db.session.execute(
        select(
            blocks_t.c.source,
            blocks_t.c.expires_at,
            func.sum(blocks_t.c.remaining),
            func.sum(blocks_t.c.held),
        )
        .where(
            blocks_t.c.team_id == team_id,
            blocks_t.c.expired_at.is_(None),
            blocks_t.c.remaining > 0,
            or_(blocks_t.c.expires_at.is_(None), blocks_t.c.expires_at > now),
        )
        .group_by(blocks_t.c.source, blocks_t.c.expires_at)
    ).all()
    totals = {"plan": 0, "purchase": 0, "other": 0}
    held = 0
    expiries: dict[datetime, int] = {}
    for source, expires_at, remaining, held_here in rows:
        totals[source if source in ("plan", "purchase") else "other"] += int(remaining)
        held += int(held_here)
        if expires_at is not None:
            expiries[expires_at] = expiries.get(expires_at, 0) + int(remaining) - int(held_here)
    next_at = min(expiries) if expiries else None
    return Balance(
        plan=totals["plan"],
        purchased=totals["purchase"],
        other=totals["other"],
        held=held,
        next_expiry_at=next_at,
        next_expiry_amount=expiries.get(next_at, 0) if next_at else 0,
    )


@dataclass(frozen=True)
class Draw:
    block_id: int
    credits: int
    expires_at: datetime | None


@dataclass(frozen=True)
class Quote:
    amount: int
    available: int
    draws: list[Draw] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.available >= self.amount


def quote(team_id: int, amount: int, now: datetime | None = None) -> Quote:
    """Which blocks a spend of ``amount`` would draw from now, without spending (no lock taken)."""
    check_amount(amount)
    available, taken = draws_for(team_id, amount, now or utcnow(), exact=True)
    draws = [Draw(block.id, credits, block.expires_at) for block, credits in taken]
    return Quote(amount=amount, available=available, draws=draws)
