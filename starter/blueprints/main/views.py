"""Public pages: the landing page with pricing, and the health check."""

from __future__ import annotations

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, session, url_for
from sqlalchemy import text

from ... import catalog, localtime, yearly
from ...extensions import db, limiter
from ..auth.views import safe_next
from .forms import TimeZoneForm

bp = Blueprint("main", __name__)


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    interval = "year" if request.args.get("interval") == "year" else "month"  # the monthly/yearly switch
    team = g.get("team")
    return render_template(
        "main/index.html",
        plans=list(catalog.PLANS.values()),
        packs=list(catalog.PACKS.values()),
        interval=interval,
        # Signed in: the cards say "Current plan", "Upgrade" or "Downgrade" against the team's plan.
        current_plan=(catalog.plan(team.plan_code) or catalog.FREE_PLAN) if team is not None else None,
        current_interval="year" if team is not None and yearly.current_year(team.id) else "month",
    )


@bp.get("/up")
@limiter.exempt
def up():  # type: ignore[no-untyped-def]
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # any database failure means "down" to a load balancer
        db.session.rollback()
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok")


@bp.route("/time-zone", methods=["GET", "POST"])
def time_zone():  # type: ignore[no-untyped-def]
    """Pick the zone times are shown in, or follow the browser's (the default). Kept in the session."""
    form = TimeZoneForm(data={"zone": session.get(localtime.SESSION_KEY, ""), "next": request.args.get("next", "")})
    form.zone.choices = [("", "Automatic: the browser's time zone")] + [(n, n) for n in localtime.zone_names()]
    if form.validate_on_submit():
        if form.zone.data:
            session[localtime.SESSION_KEY] = form.zone.data
            flash(f"Times are now shown in {form.zone.data}.", "success")
        else:
            session.pop(localtime.SESSION_KEY, None)
            flash("Times now follow your browser's time zone.", "success")
        return redirect(safe_next(form.next.data) or url_for("main.time_zone"))
    return render_template("main/time_zone.html", form=form), 400 if form.errors else 200
