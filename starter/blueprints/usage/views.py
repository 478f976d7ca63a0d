"""``/credits/usage``: who used the team's credits, by day, feature, member and API key, with a CSV.

Every member of the team sees it (their own team only, like everything else). Days are the
viewer's: the ``tz`` parameter if given (an IANA name), else the viewer's zone of every page
(``starter.localtime``: the one picked, or the browser's), UTC until one is known.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flask import Blueprint, Response, abort, g, render_template, request, url_for

from ... import catalog, localtime
from ...access import team_role_required
from ...credits import usage
from ...models import utcnow
from ..dashboard import charts
from ..dashboard.views import _safe_cell

bp = Blueprint("usage", __name__)

RANGES = ("7", "30", "90", "custom")


@dataclass(frozen=True)
class Choice:
    range: str
    first: str
    last: str
    tz: str
    group_by: str


def _zone(name: str | None) -> ZoneInfo:
    try:
        if name and len(name) <= 64 and name.isprintable() and ".." not in name:
            return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    abort(400, f"Unknown time zone {name!r}: use an IANA name such as Europe/Paris.")


def _choice() -> tuple[Choice, usage.Window]:
    """The range, time zone and grouping the query string asks for; a clear 400 for anything else."""
    args = request.args
    zone = _zone(args["tz"]) if args.get("tz") else localtime.viewer_zone()
    picked = args.get("range", "30")
    if picked not in RANGES:
        abort(400, "Choose 7, 30 or 90 days, or a custom range.")
    group_by = args.get("group_by", "feature")
    if group_by not in usage.GROUPS:
        abort(400, "Group by day, feature, member or api_key.")
    if picked == "custom":
        try:
            first, last = date.fromisoformat(args.get("from", "")), date.fromisoformat(args.get("to", ""))
        except ValueError:
            abort(400, "A custom range needs from and to dates (YYYY-MM-DD).")
        if last < first or (last - first).days >= usage.MAX_DAYS or first.year < 2000 or last.year > 9000:
            abort(400, f"A custom range runs forwards, over at most {usage.MAX_DAYS} days.")
        window = usage.Window(first, last, zone)
    else:
        window = usage.last_days(int(picked), zone, utcnow())
    return Choice(picked, window.first.isoformat(), window.last.isoformat(), zone.key, group_by), window


FEATURE_NAMES = {code: feature.name for code, feature in catalog.FEATURES.items()}


@bp.get("/credits/usage")
@team_role_required("member")
def index():  # type: ignore[no-untyped-def]
    choice, window = _choice()
    found = usage.cells(g.team.id, window)
    members, keys = usage.names(g.team.id)
    groups = {by: usage.group(found, by, window, members, keys, FEATURE_NAMES) for by in usage.GROUPS}
    labels = {item.key: item.label for item in groups[choice.group_by]}
    chart = charts.usage_chart(usage.by_day_and(found, choice.group_by, window, labels), labelled=True)
    args = {"range": choice.range, "from": choice.first, "to": choice.last, "tz": choice.tz}
    return render_template(
        "usage/index.html",
        choice=choice,
        groups=groups,
        total=sum(cell.credits for cell in found),
        chart=chart,
        chart_size=(charts.CHART_WIDTH, charts.CHART_HEIGHT, charts.CHART_BOTTOM),
        csv_url=url_for("usage.export", **args),
        group_urls={by: url_for("usage.index", group_by=by, **args) for by in usage.GROUPS},
        zones=sorted(available_timezones()),
        know_tz=bool(request.args.get("tz")) or localtime.zone_source() != "default",
    )


@bp.get("/credits/usage.csv")
@team_role_required("member")
def export():  # type: ignore[no-untyped-def]
    """One row per local day, feature, API key and member with credits used (the page's finest grain)."""
    choice, window = _choice()
    found = sorted(usage.cells(g.team.id, window), key=lambda c: (c.day, c.feature or "", c.api_key_id or 0))
    members, keys = usage.names(g.team.id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["day", "feature", "member", "api_key", "credits"])
    for cell in found:
        key = keys.get(cell.api_key_id) if cell.api_key_id else None
        writer.writerow(
            [
                cell.day.isoformat(),
                cell.feature or "",
                _safe_cell(members.get(cell.user_id, "Former member")) if cell.user_id else "",
                _safe_cell(f"{key[0]} ({key[1]})") if key else ("Deleted key" if cell.api_key_id else ""),
                cell.credits,
            ]
        )
    filename = f"usage-{g.team.slug}-{choice.first}-{choice.last}.csv"
    return Response(
        buffer.getvalue(), mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
