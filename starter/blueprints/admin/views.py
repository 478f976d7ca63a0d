"""The admin area (site admins only; a 404 for everyone else): find teams, adjust credits, Stripe events."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select

from ... import credits, teams
from ...access import site_admin_required
from ...billing import webhooks
from ...credits import history
from ...extensions import db
from ...models import CreditBalance, Membership, StripeEvent, Team, User
from .forms import AdjustForm, ReplayForm

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("")
@site_admin_required
def index():  # type: ignore[no-untyped-def]
    q = request.args.get("q", "").strip()[:100]
    query = (
        select(Team, CreditBalance.balance)
        .outerjoin(CreditBalance, CreditBalance.team_id == Team.id)
        .order_by(Team.created_at.desc())
        .limit(50)
    )
    if q:
        pattern = f"%{q.lower()}%"
        members = select(Membership.team_id).join(User).where(func.lower(User.email).like(pattern))
        query = query.where(or_(func.lower(Team.name).like(pattern), Team.slug.like(pattern), Team.id.in_(members)))
    return render_template("admin/index.html", q=q, rows=db.session.execute(query).all())


def _team(team_id: int) -> Team:
    return db.session.get(Team, team_id) or abort(404)


@bp.get("/teams/<id:team_id>")
@site_admin_required
def team(team_id: int):  # type: ignore[no-untyped-def]
    found = _team(team_id)
    rows, _ = history.page(found.id, history.Filters(), size=50)
    return render_template(
        "admin/team.html",
        team=found,
        balance=credits.balance(found.id),
        members=teams.members(found),
        rows=rows,
        form=AdjustForm(formdata=None),
    )


@bp.post("/teams/<id:team_id>/adjust")
@site_admin_required
def adjust(team_id: int):  # type: ignore[no-untyped-def]
    found = _team(team_id)
    form = AdjustForm()
    if not form.validate_on_submit() or form.amount.data == 0:
        flash("Enter a non-zero whole number of credits and a reason.", "error")
        return redirect(url_for("admin.team", team_id=found.id))
    try:
        receipt = credits.adjust(
            found.id,
            form.amount.data,
            reason=form.reason.data,
            key=f"admin:{form.idempotency_key.data}",
            actor=credits.Actor("admin", current_user.id),
        )
    except credits.CreditError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("admin.team", team_id=found.id))
    db.session.commit()
    flash(f"Adjusted by {receipt.amount:+,} credits; balance {receipt.balance_after:,}.", "success")
    return redirect(url_for("admin.team", team_id=found.id))


@bp.get("/events")
@site_admin_required
def events():  # type: ignore[no-untyped-def]
    rows = db.session.scalars(select(StripeEvent).order_by(StripeEvent.received_at.desc()).limit(100)).all()
    return render_template("admin/events.html", events=rows, form=ReplayForm())


@bp.post("/events/<event_id>/replay")
@site_admin_required
def replay(event_id: str):  # type: ignore[no-untyped-def]
    if not ReplayForm().validate_on_submit():
        abort(400)
    status, body = webhooks.replay(event_id)
    if status == 404:
        abort(404)
    if status == 200 and body.get("duplicate"):
        flash("That event was already processed: replaying it changed nothing.", "info")
    elif status == 200:
        flash("Event replayed through the webhook handler.", "success")
    else:
        flash(f"Replay failed: {body['error']['message']}", "error")
    return redirect(url_for("admin.events"))
