"""Reads of the ledger for people: history pages, CSV export, usage by day. Indexed, fixed query counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select

from ..extensions import db
from ..models import ApiKey, LedgerEntry, User, utcnow
from .rollup import by_day

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ID = 2**63 - 1  # the largest BIGINT: a cursor past it names no row
CURSOR = re.compile(r"(-?[0-9]{1,18})\.([0-9]{1,19})")


@dataclass(frozen=True)
class Filters:
    kind: str | None = None
    feature: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    member_id: int | None = None  # entries this user caused in the browser (not through an API key)
    api_key_id: int | None = None  # entries this API key caused


def start_of(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def days(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Whole UTC days, both inclusive, as the [since, until) bounds ``Filters`` takes."""
    end = start_of(until + timedelta(days=1)) if until and until < date.max else None  # 31 Dec 9999: no bound
    return (start_of(since) if since else None, end)


def encode_cursor(created_at: datetime, entry_id: int) -> str:
    """An opaque page cursor: the (created_at, id) of a page's last entry, for keyset pagination."""
    return f"{(created_at - EPOCH) // timedelta(microseconds=1)}.{entry_id}"


def decode_cursor(value: str) -> tuple[datetime, int]:
    """The (created_at, id) a cursor stands for; ``ValueError`` for anything ``encode_cursor`` did not make."""
    match = CURSOR.fullmatch(value)
    try:
        if match is None or int(match[2]) > MAX_ID:
            raise ValueError(value)
        return EPOCH + timedelta(microseconds=int(match[1])), int(match[2])
    except OverflowError as error:
        raise ValueError(value) from error


def entries_query(team_id: int, filters: Filters) -> Select:
    """Entries of one team, newest first, with the person or API key who caused each (one query)."""
    query = (
        select(
            LedgerEntry, User.name.label("actor_name"), ApiKey.name.label("key_name"), ApiKey.prefix.label("key_prefix")
        )
        .outerjoin(User, User.id == LedgerEntry.actor_user_id)
        .outerjoin(ApiKey, ApiKey.id == LedgerEntry.api_key_id)
        .where(LedgerEntry.team_id == team_id)
        .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
    )
    if filters.kind:
        query = query.where(LedgerEntry.kind == filters.kind)
    if filters.feature:
        query = query.where(LedgerEntry.feature == filters.feature)
    if filters.member_id:
        query = query.where(LedgerEntry.actor_user_id == filters.member_id, LedgerEntry.api_key_id.is_(None))
    if filters.api_key_id:
        query = query.where(LedgerEntry.api_key_id == filters.api_key_id)
    if filters.since:
        query = query.where(LedgerEntry.created_at >= filters.since)
    if filters.until:
        query = query.where(LedgerEntry.created_at < filters.until)
    return query


def page(team_id: int, filters: Filters, *, after: tuple[datetime, int] | None = None, size: int = 50):  # type: ignore[no-untyped-def]
    """One page of entries after the keyset cursor (created_at, id); returns (rows, next cursor or None)."""
    query = entries_query(team_id, filters)
    if after is not None:
        created_at, entry_id = after
        query = query.where(
            or_(
                LedgerEntry.created_at < created_at,
                and_(LedgerEntry.created_at == created_at, LedgerEntry.id < entry_id),
            )
        )
    rows = db.session.execute(query.limit(size + 1)).all()
    more = len(rows) > size
    rows = rows[:size]
    cursor = (rows[-1].LedgerEntry.created_at, rows[-1].LedgerEntry.id) if more else None
    return rows, cursor


def stream(team_id: int, filters: Filters, batch: int = 1_000, first: int | None = None) -> Iterator:
    """Every matching entry, read in keyset batches so an export of any size runs in bounded memory.

    ``first``: the size of the first batch, if smaller, so the first rows come out quickly.
    """
    after = None
    size = first or batch
    while True:
        rows, after = page(team_id, filters, after=after, size=size)
        size = batch
        yield from rows
        if after is None:
            return
        db.session.expunge_all()  # what was written out is not kept


def actor_label(row: Any) -> str:
    """Who caused an entry, for people: the member's name, the API key, or the kind of actor."""
    if row.key_prefix:
        return f"API key {row.key_name} ({row.key_prefix})"
    return row.actor_name or row.LedgerEntry.actor_type.title()


def usage_by_day(team_id: int, days: int = 30, now: datetime | None = None) -> dict[date, dict[str, int]]:
    """Credits used per UTC day and feature over the last ``days`` days, from the ``usage_days`` rollup."""
    now = now or utcnow()
    first = (now - timedelta(days=days - 1)).date()
    usage: dict[date, dict[str, int]] = {first + timedelta(days=n): {} for n in range(days)}
    for day, feature, used in by_day(team_id, first):
        if day in usage:
            usage[day][feature or "other"] = used
    return usage
