"""Times in the viewer's time zone: stored in UTC, shown local and labelled, on every page.

The zone is, in this order: the one the user picked on ``/time-zone`` (kept in the session), the
browser's (``app.js`` writes it into the ``tz`` cookie), else UTC. Both come from the client, so a
name is used only if it is a known IANA zone; anything else falls back to UTC. The very first page,
before the cookie exists, is relabelled in the browser by ``app.js`` from each ``<time datetime>``.

Templates: ``{{ moment|when }}`` (date and time, zone named), ``{{ moment|when('date') }}``,
``{{ moment|when('cell') }}`` (a table cell: the column header names the zone with ``viewer_zone()``).
Emails stay in UTC (labelled): who reads them and where is not known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flask import Flask, g, has_request_context, request, session
from markupsafe import Markup, escape

COOKIE = "tz"  # the browser's zone, written by app.js
SESSION_KEY = "tz"  # the zone the user picked; absent: follow the browser
STYLES = {
    "datetime": "{day} {month} {year}, {hour:02d}:{minute:02d} {zone}",
    "date": "{day} {month} {year}",
    "cell": "{day} {month} {year} {hour:02d}:{minute:02d}",
    "short": "{day} {month} {hour:02d}:{minute:02d}",
}
# English month names, as the C locale's %b writes them (formatted by hand: strftime costs more).
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_zone(name: object) -> ZoneInfo | None:
    """The zone an IANA name stands for, or None for anything else (a made-up or hostile value)."""
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable() or ".." in name:
        return None
    if name.startswith("/") or "\\" in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def zone_names() -> list[str]:
    return sorted(available_timezones())


UTC_ZONE = ZoneInfo("UTC")


def viewer_zone() -> ZoneInfo:
    """The zone to show times in for this request (UTC outside a request)."""
    if not has_request_context():
        return UTC_ZONE
    zone = g.get("viewer_zone")
    if zone is None:
        zone, g.viewer_zone_source = _find_zone()
        g.viewer_zone = zone
    return zone


def zone_source() -> str:
    """Where the zone came from: ``setting`` (picked), ``browser`` (the cookie) or ``default`` (UTC)."""
    viewer_zone()
    return g.viewer_zone_source if has_request_context() else "default"


def _find_zone() -> tuple[ZoneInfo, str]:
    picked = parse_zone(session.get(SESSION_KEY))
    if picked is not None:
        return picked, "setting"
    browser = parse_zone(request.cookies.get(COOKIE))
    if browser is not None:
        return browser, "browser"
    return UTC_ZONE, "default"


def when(moment: datetime | None, style: str = "datetime") -> Markup:
    """``moment`` as a ``<time>`` element in the viewer's zone; its ``datetime`` attribute is UTC.

    Plain string formatting, the one value that comes from outside (the zone's name) escaped, then one
    ``Markup``: a history page calls this twice per row, and ``Markup.format`` costs several times as
    much. ``style`` is one of ``STYLES`` (anything else is a KeyError), so it needs no escaping.
    """
    if moment is None:
        return Markup("")
    pattern = STYLES[style]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # stored UTC
    zone = viewer_zone()
    # In UTC before the cache: two readings of an ambiguous local time (a DST change) are equal keys.
    local, utc_iso, utc_title = _moment(moment.astimezone(UTC), zone)
    text = pattern.format(
        day=local.day,
        month=MONTHS[local.month - 1],
        year=local.year,
        hour=local.hour,
        minute=local.minute,
        zone=local.tzname() or zone.key,
    )
    # The text is escaped; the rest are numbers, month names and a STYLES key.
    return Markup(  # noqa: S704
        f'<time datetime="{utc_iso}Z" data-style="{style}" title="{utc_title} UTC">{escape(text)}</time>'
    )


@lru_cache(maxsize=256)
def _moment(utc: datetime, zone: ZoneInfo) -> tuple[datetime, str, str]:
    """``utc`` in ``zone``, and as the ``<time>`` element's ``datetime`` and ``title`` say it (in UTC).
    Cached: a history row shows each time twice (the table's cell, and under the description on a phone)."""
    title = f"{utc.day} {MONTHS[utc.month - 1]} {utc.year}, {utc.hour:02d}:{utc.minute:02d}"
    return utc.astimezone(zone), utc.replace(tzinfo=None).isoformat(timespec="seconds"), title


def register(app: Flask) -> None:
    app.jinja_env.filters["when"] = when
    app.jinja_env.globals["viewer_zone"] = lambda: viewer_zone().key
    app.jinja_env.globals["viewer_zone_source"] = zone_source
    app.jinja_env.globals["zone_label"] = lambda: Markup("<span data-tz-label>{}</span>").format(
        escape(viewer_zone().key)
    )
