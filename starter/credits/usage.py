"""Who used the credits: usage by day, feature, member and API key over a range of days in a time zone.

One aggregate statement, grouped in SQL by (local day, feature, key, member), whatever the number
of entries; the page, the CSV and ``GET /api/v1/usage`` roll that up. Usage is what spends and
captures took (``-amount`` of ``spend`` and ``capture`` entries), the same entries
``history.usage_by_day`` sums. A member's usage is what they caused in the browser; what their API
keys spent is the keys'.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, String, case, cast, func, select

from ..extensions import db
from ..models import ApiKey, LedgerEntry, Membership, User
from .rollup import USAGE_KINDS

GROUPS = ("day", "feature", "member", "api_key")
MAX_DAYS = 366
QUARTER_HOUR = timedelta(minutes=15)


@dataclass(frozen=True)
class Window:
    """Whole local days ``first`` … ``last`` (both included) in ``zone``, and their UTC bounds [start, end)."""

    first: date
    last: date
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=self.zone).astimezone(UTC)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def last_days(count: int, zone: ZoneInfo, now: datetime) -> Window:
    """The ``count`` local days ending today (in ``zone``)."""
    today = now.astimezone(zone).date()
    return Window(today - timedelta(days=count - 1), today, zone)


@dataclass(frozen=True)
class Cell:
    """Credits used on one local day, for one feature, by one key (or none) and one member (or none)."""

    day: date
    feature: str | None
    api_key_id: int | None
    user_id: int | None
    credits: int


def cells(team_id: int, window: Window) -> list[Cell]:
    """The team's usage in ``window``, one aggregate statement grouped by local day, feature, key, member."""
    entries = LedgerEntry.__table__.c
    if db.engine.dialect.name == "postgresql":
        bucket = func.date(func.timezone(window.zone.key, entries.created_at))
    else:
        # SQLite has no time zones: group by UTC quarter hour (every offset in use is a multiple of 15
        # minutes) and give each quarter its local day below.
        minute = cast(func.strftime("%M", entries.created_at), Integer) // 15
        bucket = func.strftime("%Y-%m-%d %H", entries.created_at) + ":" + cast(minute, String)
    user = case((entries.api_key_id.is_(None), entries.actor_user_id), else_=None)  # the member, unless a key
    rows = db.session.execute(
        select(bucket, entries.feature, entries.api_key_id, user, func.sum(-entries.amount))
        .where(
            entries.team_id == team_id,
            entries.kind.in_(USAGE_KINDS),
            entries.created_at >= window.start,
            entries.created_at < window.end,
        )
        .group_by(bucket, entries.feature, entries.api_key_id, user)
    ).all()
    merged: dict[tuple[date, str | None, int | None, int | None], int] = defaultdict(int)
    for value, feature, key_id, user_id, used in rows:
        merged[(_local_day(value, window.zone), feature, key_id, user_id)] += int(used or 0)
    return [Cell(day, feature, key_id, user_id, used) for (day, feature, key_id, user_id), used in merged.items()]


def _local_day(value: object, zone: ZoneInfo) -> date:
    if isinstance(value, date):
        return value
    text = str(value)
    if len(text) == 10:
        return date.fromisoformat(text)
    hour, quarter = text.rsplit(":", 1)
    moment = datetime.fromisoformat(hour + ":00").replace(tzinfo=UTC) + int(quarter) * QUARTER_HOUR
    return moment.astimezone(zone).date()


@dataclass(frozen=True)
class Group:
    key: str | None  # the day (ISO), feature code, user id or key id; None: not by a member / by no key
    label: str
    credits: int


def names(team_id: int) -> tuple[dict[int, str], dict[int, tuple[str, str]]]:
    """(user id → name for the team's members, key id → (name, prefix) for its keys): two statements."""
    members = dict(
        db.session.execute(
            select(User.id, User.name)
            .join(Membership, Membership.user_id == User.id)
            .filter(Membership.team_id == team_id)
        ).all()
    )
    keys = {
        key_id: (name, prefix)
        for key_id, name, prefix in db.session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.prefix).filter_by(team_id=team_id)
        )
    }
    return members, keys


def group(
    found: list[Cell],
    by: str,
    window: Window,
    members: dict[int, str],
    keys: dict[int, tuple[str, str]],
    feature_names: dict[str, str],
) -> list[Group]:
    """Roll cells up by day (every day of the window, oldest first) or by feature, member or key (largest first)."""
    totals: dict[object, int] = defaultdict(int)
    for cell in found:
        totals[_of(cell, by)] += cell.credits
    if by == "day":
        return [Group(day.isoformat(), f"{day:%d %b %Y}", totals.get(day, 0)) for day in window.days]
    groups = [
        Group(None if k is None else str(k), _label(k, by, members, keys, feature_names), v) for k, v in totals.items()
    ]
    return sorted(groups, key=lambda g: (-g.credits, g.label))


def _of(cell: Cell, by: str) -> object:
    return {"day": cell.day, "feature": cell.feature, "member": cell.user_id, "api_key": cell.api_key_id}[by]


def _label(
    key: object, by: str, members: dict[int, str], keys: dict[int, tuple[str, str]], feature_names: dict[str, str]
) -> str:
    if by == "feature":
        return feature_names.get(key, str(key).replace("_", " ").title()) if key else "Other"  # type: ignore[arg-type]
    if by == "member":
        return members.get(key, "Former member") if key else "API keys and system"  # type: ignore[arg-type]
    if key is None:
        return "No key (browser and system)"
    name, prefix = keys.get(key, ("Deleted key", ""))  # type: ignore[call-overload]
    return f"{name} ({prefix})" if prefix else name


def by_day_and(found: list[Cell], by: str, window: Window, labels: dict[str | None, str]) -> dict[date, dict[str, int]]:
    """Per day of the window, credits by the label of ``by`` (what the stacked chart draws)."""
    usage: dict[date, dict[str, int]] = {day: {} for day in window.days}
    for cell in found:
        value = _of(cell, by)
        label = labels.get(None if value is None else str(value), "Other")
        day = usage.setdefault(cell.day, {})
        day[label] = day.get(label, 0) + cell.credits
    return usage
