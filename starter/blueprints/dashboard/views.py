"""The signed-in home: the team's credits at a glance, and the purchase dialog."""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template

from ... import catalog, credits, plans
from ...access import team_role_required
from ...teams import has_role
from ..billing.forms import CheckoutForm, PortalForm

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
        packs=list(catalog.PACKS.values()),
        can_buy=has_role(g.membership, "admin"),
        form=CheckoutForm(),
        portal_form=PortalForm(),
    )
