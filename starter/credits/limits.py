"""Spend limits per API key and per member: what each used this period, checked under the team's lock.

"Used" is read from the ledger itself (the spends and captures the key or member caused since the
period began, plus what its active holds reserve), so it can never drift from what was charged.
The check runs after the team's balance row is locked, so concurrent spends of one key or member
are counted one after the other and never pass the limit together. It costs one statement, and
only for an actor that has a limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update

from ..extensions import db
from .core import alert_levels, balances, entries_t, holds_t
from .rules import Actor, SpendLimit, SpendLimitReached

USED_KINDS = ("spend", "capture")


def window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC month or day containing ``now``: [start, end)."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _who(limit: SpendLimit, table: Any) -> Any:
    if limit.scope == "api_key":
        return table.c.api_key_id == limit.subject_id
    # A member's own spends in the browser; what their API keys spend counts against the keys.
    return and_(table.c.actor_user_id == limit.subject_id, table.c.api_key_id.is_(None))


def used(team_id: int, limit: SpendLimit, now: datetime) -> int:
    """Credits the key or member spent this period plus what its active holds reserve (one statement)."""
    start, end = window(limit.period, now)
    spent = (
        select(func.coalesce(func.sum(-entries_t.c.amount), 0))
        .where(
            entries_t.c.team_id == team_id,
            _who(limit, entries_t),
            entries_t.c.kind.in_(USED_KINDS),
            entries_t.c.created_at >= start,
            entries_t.c.created_at < end,
        )
        .scalar_subquery()
    )
    reserved = (
        select(func.coalesce(func.sum(holds_t.c.amount), 0))
        .select_from(holds_t.join(entries_t, and_(entries_t.c.hold_id == holds_t.c.id, entries_t.c.kind == "hold")))
        .where(holds_t.c.team_id == team_id, holds_t.c.status == "active", _who(limit, entries_t))
        .scalar_subquery()
    )
    return int(db.session.execute(select(spent + reserved)).scalar_one())


def check(team_id: int, actor: Actor, amount: int, now: datetime) -> int | None:
    """Refuse ``amount`` if it would pass the actor's limit (``SpendLimitReached``); the total used after it.

    The caller holds the team's lock. None, and no statement, when the actor has no limit.
    """
    limit = actor.limit
    if limit is None:
        return None
    so_far = used(team_id, limit, now)
    if so_far + amount > limit.credits:
        raise SpendLimitReached(limit, so_far, amount, window(limit.period, now))
    return so_far + amount


def reached(team_id: int, actor: Actor, total: int | None, now: datetime) -> None:
    """After a spend that brought the actor to its limit: tell the owners and admins (once per period)."""
    if actor.limit is None or total is None or total < actor.limit.credits:
        return
    from .. import alerts  # mail, not ledger: imported late so the ledger does not depend on it at import

    alerts.limit_reached(team_id, actor.limit, total, window(actor.limit.period, now))


def used_by(team_id: int, scope: str, now: datetime) -> dict[int, dict[str, int]]:
    """What each key (``scope="api_key"``) or member (``"member"``) of the team used this month and today,
    active holds included: ``{id: {"month": n, "day": n}}``. Two aggregate statements, whatever the size."""
    month_start, _ = window("month", now)
    day_start, _ = window("day", now)
    column = entries_t.c.api_key_id if scope == "api_key" else entries_t.c.actor_user_id
    who = column.isnot(None) if scope == "api_key" else and_(column.isnot(None), entries_t.c.api_key_id.is_(None))
    out: dict[int, dict[str, int]] = {}
    rows = db.session.execute(
        select(
            column,
            func.sum(-entries_t.c.amount),
            func.sum(-entries_t.c.amount).filter(entries_t.c.created_at >= day_start),
        )
        .where(
            entries_t.c.team_id == team_id,
            who,
            entries_t.c.kind.in_(USED_KINDS),
            entries_t.c.created_at >= month_start,
        )
        .group_by(column)
    )
    for subject, month, day in rows:
        out[subject] = {"month": int(month or 0), "day": int(day or 0)}
    held = db.session.execute(
        select(column, func.sum(holds_t.c.amount))
        .select_from(holds_t.join(entries_t, and_(entries_t.c.hold_id == holds_t.c.id, entries_t.c.kind == "hold")))
        .where(holds_t.c.team_id == team_id, holds_t.c.status == "active", who)
        .group_by(column)
    )
    for subject, amount in held:
        entry = out.setdefault(subject, {"month": 0, "day": 0})
        entry["month"] += int(amount or 0)
        entry["day"] += int(amount or 0)
    return out


def thresholds(team_id: int) -> list[int]:
    """The team's low-balance thresholds, the ``LOW_BALANCE_THRESHOLD`` default if it set none."""
    levels = db.session.execute(select(balances.c.alert_levels).where(balances.c.team_id == team_id)).scalar()
    return alert_levels(levels)


def set_thresholds(team_id: int, levels: list[int]) -> None:
    """Replace the team's low-balance thresholds (whole credits, at least 1 each; [] for none)."""
    if any(isinstance(level, bool) or not isinstance(level, int) or level < 1 for level in levels):
        raise ValueError("thresholds are positive whole numbers of credits")
    db.session.execute(update(balances).where(balances.c.team_id == team_id).values(alert_levels=sorted(set(levels))))
