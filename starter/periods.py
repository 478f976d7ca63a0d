"""Plan periods: monthly from an anchor day, clamped to short months (31 Jan → 28/29 Feb → 31 Mar)."""

from __future__ import annotations

import calendar
from datetime import datetime


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` moved by ``months``, on the anchor's day or the month's last day if it is shorter."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_containing(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The monthly period [start, end) anchored at ``anchor`` that contains ``now``.

    Computed from the anchor every time (never by adding a month to the last period's end), so a
    period that starts on a clamped day (28 Feb) still returns to the anchor day (31 Mar).
    """
    if now < anchor:
        return anchor, add_months(anchor, 1)
    months = (now.year - anchor.year) * 12 + (now.month - anchor.month)
    start = add_months(anchor, months)
    if start > now:
        months -= 1
        start = add_months(anchor, months)
    return start, add_months(anchor, months + 1)
