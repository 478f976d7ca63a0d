"""Usage per team, UTC day and feature (``usage_days``), kept by the ledger as it writes spends and captures.

One upsert per spend or capture, in its transaction and under the team's lock, so the dashboard's usage
chart reads a few rows instead of aggregating every entry of its window. ``check`` recomputes it from
the entries for ``flask credits verify``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import LedgerEntry, UsageDay

USAGE_KINDS = ("spend", "capture")  # the entries that count as credits used

usage_t = UsageDay.__table__
entries_t = LedgerEntry.__table__


def _upsert(insert: Any) -> Any:
    statement = insert(usage_t).values(
        team_id=bindparam("team_id"), day=bindparam("day"), feature=bindparam("feature"), credits=bindparam("credits")
    )
    return statement.on_conflict_do_update(
        index_elements=[usage_t.c.team_id, usage_t.c.day, usage_t.c.feature],
        set_={"credits": usage_t.c.credits + statement.excluded.credits},
    )


# Built once: both dialects have INSERT … ON CONFLICT DO UPDATE.
UPSERTS = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def usage_of(kind: str, amount: int, feature: str | None, now: datetime) -> tuple[date, str, int] | None:
    """(day, feature or "", credits used) an entry adds to the rollup; None for kinds that are no usage."""
    if kind not in USAGE_KINDS:
        return None
    return day_of(now), feature or "", -amount


def record(team_id: int, kind: str, amount: int, feature: str | None, now: datetime) -> None:
    """Add an entry's usage to its day; other kinds of entry are no usage and cost nothing."""
    usage = usage_of(kind, amount, feature, now)
    if usage is None:
        return
    day, key, used = usage
    db.session.execute(
        UPSERTS[db.engine.dialect.name], {"team_id": team_id, "day": day, "feature": key, "credits": used}
    )


def by_day(team_id: int, first: date) -> list[tuple[date, str, int]]:
    """(day, feature or "", credits used) of one team from ``first`` on."""
    rows = db.session.execute(
        select(usage_t.c.day, usage_t.c.feature, usage_t.c.credits).where(
            usage_t.c.team_id == team_id, usage_t.c.day >= first
        )
    )
    return [(day, feature, int(used)) for day, feature, used in rows]


def entry_day(column: Any) -> Any:
    """The UTC day of a timestamp column, in SQL (PostgreSQL keeps time zones; SQLite keeps UTC text)."""
    if db.engine.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def check() -> list[tuple[int, str]]:
    """(team id, message) for every day and feature where the rollup and the entries disagree."""
    day = entry_day(entries_t.c.created_at)
    feature = func.coalesce(entries_t.c.feature, "")
    from_entries = db.session.execute(
        select(entries_t.c.team_id, day, feature, func.sum(-entries_t.c.amount))
        .where(entries_t.c.kind.in_(USAGE_KINDS))
        .group_by(entries_t.c.team_id, day, feature)
    )
    expected = {(team, str(on), name): int(used) for team, on, name, used in from_entries}
    kept = {
        (team, str(on), name): int(used)
        for team, on, name, used in db.session.execute(
            select(usage_t.c.team_id, usage_t.c.day, usage_t.c.feature, usage_t.c.credits)
        )
    }
    problems = []
    for team, on, name in sorted(expected.keys() | kept.keys()):
        want, have = expected.get((team, on, name), 0), kept.get((team, on, name), 0)
        if want != have:
            label = name or "no feature"
            problems.append((team, f"usage on {on} ({label}) is {have} in usage_days but {want} in the ledger"))
    return problems
