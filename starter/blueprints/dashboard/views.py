"""The signed-in home: the team's credits at a glance."""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template

from ... import credits, plans
from ...access import team_role_required

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
@team_role_required("member")
def index():  # type: ignore[no-untyped-def]
    balance = credits.balance(g.team.id)
    return render_template(
        "dashboard/index.html",
        balance=balance,
        plan=plans.plan_of(g.team),
        low_balance=balance.available < current_app.config["LOW_BALANCE_THRESHOLD"],
    )
