"""Public pages: the landing page with pricing, and the health check."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template, request
from sqlalchemy import text

from ... import catalog, yearly
from ...extensions import db, limiter

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
