"""Spend limits per API key and per member: what each used this period, checked under the team's lock.

"Used" is what the key or member spent since the period began (a counter row per subject and
period, ``spend_limit_usage``, built from the ledger's sum the first time it is needed and moved
by each limited spend and capture) plus what its active holds reserve (read from ``holds``). The
check runs after the team's balance row is locked, so concurrent spends of one key or member are
counted one after the other and never pass the limit together. It costs one statement however
long the period's history, and only for an actor that has a limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update

from ..extensions import db
from ..models import SpendLimitUsage
from .core import alert_levels, balances, entries_t, holds_t
from .rules import Actor, SpendLimit, SpendLimitReached

USED_KINDS = ("spend", "capture")
usage_t = SpendLimitUsage.__table__


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


def _spent(team_id: int, limit: SpendLimit, start: datetime, end: datetime) -> Any:
    """What the subject's spends and captures took in [start, end), from the ledger (a scalar subquery)."""
    return (
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


def _reserved(team_id: int, limit: SpendLimit) -> Any:
    """What the subject's active holds reserve (a scalar subquery; a team has few active holds)."""
    return (
        select(func.coalesce(func.sum(holds_t.c.amount), 0))
        .select_from(holds_t.join(entries_t, and_(entries_t.c.hold_id == holds_t.c.id, entries_t.c.kind == "hold")))
        .where(holds_t.c.team_id == team_id, holds_t.c.status == "active", _who(limit, entries_t))
        .scalar_subquery()
    )


def used(team_id: int, limit: SpendLimit, now: datetime) -> int:
    """Credits the key or member spent this period plus what its active holds reserve, from the ledger."""
    start, end = window(limit.period, now)
    spent, reserved = _spent(team_id, limit, start, end), _reserved(team_id, limit)
    return int(db.session.execute(select(spent + reserved)).scalar_one())


def _counter(team_id: int, limit: SpendLimit, start: datetime) -> Any:
    return and_(
        usage_t.c.team_id == team_id,
        usage_t.c.scope == limit.scope,
        usage_t.c.subject_id == limit.subject_id,
        usage_t.c.period == limit.period,
        usage_t.c.period_start == start,
    )


def _open_counter(team_id: int, limit: SpendLimit, start: datetime, end: datetime) -> int:
    """Create the period's counter from the ledger (first limited change of the period); what it holds."""
    spent = int(db.session.execute(select(_spent(team_id, limit, start, end))).scalar_one())
    db.session.execute(
        insert(usage_t).values(
            scope=limit.scope,
            subject_id=limit.subject_id,
            period=limit.period,
            period_start=start,
            team_id=team_id,
            used=spent,
        )
    )
    return spent


def check(team_id: int, actor: Actor, amount: int, now: datetime, *, spend: bool = True) -> int | None:
    """Refuse ``amount`` if it would pass the actor's limit (``SpendLimitReached``); else count it.

    A spend adds ``amount`` to the period's counter; a hold (``spend=False``) only checks, its
    reserve being counted from the active holds. The caller holds the team's lock, so racing
    changes of one key or member are counted one after the other. One statement (a conditional
    UPDATE) when the counter exists and the change fits; none when the actor has no limit. Returns
    the credits spent this period after the change (holds not included), or None without a limit.
    """
    limit = actor.limit
    if limit is None:
        return None
    start, end = window(limit.period, now)
    reserved = _reserved(team_id, limit)
    added = amount if spend else 0
    counted = db.session.execute(
        update(usage_t)
        .where(_counter(team_id, limit, start), usage_t.c.used + amount + reserved <= limit.credits)
        .values(used=usage_t.c.used + added)
        .returning(usage_t.c.used)
    ).scalar_one_or_none()
    if counted is not None:
        return int(counted)
    # Rare: the period's first limited change, or a refusal.
    spent = db.session.execute(select(usage_t.c.used).where(_counter(team_id, limit, start))).scalar_one_or_none()
    if spent is None:
        spent = _open_counter(team_id, limit, start, end)
    held = int(db.session.execute(select(reserved)).scalar_one())
    if spent + held + amount > limit.credits:
        raise SpendLimitReached(limit, spent + held, amount, (start, end))
    if added:
        db.session.execute(update(usage_t).where(_counter(team_id, limit, start)).values(used=usage_t.c.used + added))
    return int(spent) + added


def count_capture(team_id: int, actor: Actor, amount: int, now: datetime) -> None:
    """A capture by a limited actor: what it took counts as spent this period (its hold's reserve ends)."""
    limit = actor.limit
    if limit is None:
        return
    start, end = window(limit.period, now)
    moved = db.session.execute(
        update(usage_t).where(_counter(team_id, limit, start)).values(used=usage_t.c.used + amount)
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        _open_counter(team_id, limit, start, end)  # the ledger's sum includes the capture just written


def forget(team_id: int, scope: str, subject_id: int) -> None:
    """The subject's limit in this team changed: drop its counters, rebuilt from the ledger when next needed."""
    db.session.execute(
        delete(usage_t).where(
            usage_t.c.team_id == team_id, usage_t.c.scope == scope, usage_t.c.subject_id == subject_id
        )
    )


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
