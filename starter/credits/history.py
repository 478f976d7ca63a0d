"""Reads of the ledger for people: history pages, CSV export, usage by day. Indexed, fixed query counts.

The ledger records a generation as two entries (a hold, then its capture or release); people see one
thing that happened. ``Filters(one_per_event=True)`` leaves out the hold entry of a hold that has
ended (its capture or release says it all, with the reserved amount in its metadata), and ``lines``
turns rows into what a person reads: a kind named for people (``CATEGORIES``), a sentence, and the
ledger's own detail for those who want it. The CSV and the API keep every entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import Select, and_, case, func, inspect, or_, select
from sqlalchemy.orm import Bundle

from ..extensions import db
from ..models import ApiKey, CreditBlock, Hold, LedgerEntry, Purchase, User, utcnow
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
    category: str | None = None  # a kind named for people (CATEGORIES)
    one_per_event: bool = False  # leave out the hold entry of an ended hold (its capture or release tells)


# Kinds named for people: what the history's filter offers and its rows say.
CATEGORIES = {
    "purchase": "Purchase",
    "monthly": "Monthly credits",
    "bonus": "Bonus",
    "used": "Used",
    "expired": "Expired",
    "refund": "Refund",
    "adjustment": "Adjustment",
    "overage": "Overage",
}
GRANT_CATEGORIES = {"purchase": "purchase", "plan": "monthly", "promo": "bonus", "refund": "refund"}
KIND_CATEGORIES = {
    "spend": "used",
    "capture": "used",
    "hold": "used",
    "release": "used",
    "expire": "expired",
    "clawback": "refund",
    "adjustment": "adjustment",
    "overage": "overage",
}


def _category_clause(category: str):  # type: ignore[no-untyped-def]
    kinds = [kind for kind, found in KIND_CATEGORIES.items() if found == category]
    sources = [source for source, found in GRANT_CATEGORIES.items() if found == category]
    clauses = [LedgerEntry.kind.in_(kinds)] if kinds else []
    if sources:
        clauses.append(and_(LedgerEntry.kind == "grant", CreditBlock.source.in_(sources)))
    return or_(*clauses) if clauses else LedgerEntry.id.is_(None)


def category_of(kind: str, source: str | None) -> str:
    """The people's kind of an entry (its ledger kind and, for a grant, its block's source)."""
    if kind == "grant":
        return GRANT_CATEGORIES.get(source or "", "adjustment")
    return KIND_CATEGORIES.get(kind, "adjustment")


def start_of(day: date, zone: tzinfo = UTC) -> datetime:
    """Midnight at the start of ``day`` in ``zone`` (UTC unless given), as a UTC time."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def days(since: date | None, until: date | None, zone: tzinfo = UTC) -> tuple[datetime | None, datetime | None]:
    """Whole days in ``zone``, both inclusive, as the [since, until) bounds ``Filters`` takes."""
    # 1 Jan of year 1 and 31 Dec 9999: no bound (the local midnight would not fit a datetime).
    end = start_of(until + timedelta(days=1), zone) if until and until < date.max - timedelta(days=1) else None
    start = start_of(since, zone) if since and since > date.min + timedelta(days=1) else None
    return (start, end)


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


# An entry's columns as one plain row (``row.LedgerEntry.amount`` reads like the model's attribute): a page
# reads entries, it never changes them, and a row costs a fraction of a tracked ORM object to build.
ENTRY = Bundle("LedgerEntry", *(getattr(LedgerEntry, column.key) for column in inspect(LedgerEntry).column_attrs))


def entries_query(team_id: int, filters: Filters) -> Select:
    """Entries of one team, newest first, with the person or API key who caused each (one query)."""
    query = select(
        ENTRY,
        User.name.label("actor_name"),
        ApiKey.name.label("key_name"),
        ApiKey.prefix.label("key_prefix"),
        CreditBlock.source.label("block_source"),
        Hold.status.label("hold_status"),
        Hold.description.label("hold_description"),
    ).order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
    return _filtered(query, team_id, filters)


def _filtered(query: Select, team_id: int, filters: Filters) -> Select:
    """``query`` over one team's entries (joined to their actor, first block and hold), filtered."""
    query = (
        query.select_from(LedgerEntry)
        .outerjoin(User, User.id == LedgerEntry.actor_user_id)
        .outerjoin(ApiKey, ApiKey.id == LedgerEntry.api_key_id)
        .outerjoin(CreditBlock, CreditBlock.id == LedgerEntry.block_id)
        .outerjoin(Hold, Hold.id == LedgerEntry.hold_id)
        .where(LedgerEntry.team_id == team_id)
    )
    if filters.one_per_event:
        query = query.where(or_(LedgerEntry.kind != "hold", Hold.status == "active"))
    if filters.category:
        query = query.where(_category_clause(filters.category))
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


@dataclass(frozen=True)
class Summary:
    count: int
    added: int  # credits in (positive amounts)
    used: int  # credits out, as a positive number


def summary(team_id: int, filters: Filters) -> Summary:
    """How many entries match and the credits they added and took away (one query)."""
    query = _filtered(
        select(
            func.count(),
            func.coalesce(func.sum(case((LedgerEntry.amount > 0, LedgerEntry.amount), else_=0)), 0),
            func.coalesce(func.sum(case((LedgerEntry.amount < 0, -LedgerEntry.amount), else_=0)), 0),
        ),
        team_id,
        filters,
    )
    count, added, used = db.session.execute(query).one()
    return Summary(int(count), int(added), int(used))


@dataclass(frozen=True)
class Line:
    """One row of the history as a person reads it."""

    entry: Any  # the entry's columns (``ENTRY``), read like the model's attributes
    category: str  # a key of CATEGORIES
    label: str  # the badge: CATEGORIES' name, or Reserved / Not charged for a hold in flight or given back
    what: str
    by: str
    details: list[tuple[str, str]]


RELEASED = {"released": "released", "expired": "the reservation expired", "revoked": "ended by a refund or dispute"}


def lines(team_id: int, rows: list[Any], *, internal: bool = False) -> list[Line]:
    """``rows`` of ``page`` as people read them; one more query when they include purchases.

    ``internal``: the details show the metadata (an adjustment's internal reason); only for admins.
    """
    block_ids = [r.LedgerEntry.block_id for r in rows if r.LedgerEntry.kind == "grant" and r.block_source == "purchase"]
    paid = {}
    if block_ids:
        paid = {
            block_id: (cents, currency)
            for block_id, cents, currency in db.session.execute(
                select(Purchase.block_id, Purchase.amount_cents, Purchase.currency).where(
                    Purchase.team_id == team_id, Purchase.block_id.in_(block_ids)
                )
            )
        }
    return [_line(row, paid, internal) for row in rows]


def _money(cents: int, currency: str) -> str:
    return f"${cents / 100:,.2f}" if currency.lower() == "usd" else f"{cents / 100:,.2f} {currency.upper()}"


def _line(row: Any, paid: dict[int, tuple[int, str]], internal: bool) -> Line:
    entry = row.LedgerEntry
    meta = entry.meta or {}
    category = category_of(entry.kind, row.block_source)
    label, what = CATEGORIES[category], entry.description or CATEGORIES[category]
    details = [("Ledger entry", f"#{entry.id} · {entry.kind}")]
    if entry.kind == "capture":
        held, captured = int(meta.get("held", 0)), int(meta.get("captured", -entry.amount))
        what = f"{entry.description} · {captured:,} credits ({held:,} reserved)"
        details.append(
            ("Reserved, then charged", f"{held:,} reserved, {captured:,} charged, {held - captured:,} returned")
        )
    elif entry.kind == "hold":
        label = "Reserved"
        what = f"{row.hold_description or 'Credits'} · {entry.held_delta:,} credits reserved, in progress"
    elif entry.kind == "release":
        label = "Not charged"
        held = int(meta.get("held", -entry.held_delta))
        why = RELEASED.get(row.hold_status or "", "released")
        what = f"{row.hold_description or 'Reservation'} · not charged ({held:,} reserved, {why})"
    elif entry.kind == "grant" and entry.block_id in paid:
        cents, currency = paid[entry.block_id]
        what = f"{entry.description} · {_money(cents, currency)} paid"
    elif entry.kind == "clawback" and meta.get("shortfall"):
        what = f"{entry.description} ({int(meta['shortfall']):,} credits were already used)"
    if entry.held_delta:
        details.append(("Reserved credits", f"{entry.held_delta:+,} (reserved after: {entry.held_after:,})"))
    details.append(("Available after", f"{entry.balance_after - entry.held_after:,}"))
    if entry.hold_id:
        details.append(("Hold", f"#{entry.hold_id}"))
    if entry.feature:
        details.append(("Feature", entry.feature))
    if internal and meta:
        details.append(("Metadata", ", ".join(f"{key}={value}" for key, value in sorted(meta.items()))))
    return Line(entry, category, label, what, actor_label(row), details)


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
