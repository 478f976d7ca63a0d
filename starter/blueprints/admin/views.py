"""The admin area (site admins only; a 404 for everyone else): find teams, adjust credits, Stripe events."""

from __future__ import annotations

import json
from datetime import datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select

from ... import credits, teams
from ...access import site_admin_required
from ...billing import webhooks
from ...credits import history, ledger
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


def _cursor() -> tuple[datetime, int] | None:
    value = request.args.get("after")
    if not value:
        return None
    try:
        return history.decode_cursor(value)
    except ValueError:
        abort(400, "That page link is not valid.")


def _team_page(found: Team, form: AdjustForm, status: int = 200):  # type: ignore[no-untyped-def]
    """The team, its balance and members, the adjustment form, and one page of its whole ledger."""
    rows, after = history.page(found.id, history.Filters(), after=_cursor(), size=50)
    page = render_template(
        "admin/team.html",
        team=found,
        balance=credits.balance(found.id),
        members=teams.members(found),
        lines=history.lines(found.id, rows, internal=True),
        form=form,
        next_url=url_for("admin.team", team_id=found.id, after=history.encode_cursor(*after)) if after else None,
        first_url=url_for("admin.team", team_id=found.id) if request.args.get("after") else None,
    )
    return page, status


@bp.get("/teams/<id:team_id>")
@site_admin_required
def team(team_id: int):  # type: ignore[no-untyped-def]
    return _team_page(_team(team_id), AdjustForm(formdata=None))


@bp.post("/teams/<id:team_id>/adjust")
@site_admin_required
def adjust(team_id: int):  # type: ignore[no-untyped-def]
    """Two steps: a valid form is shown back with what it will do; only the confirmed one is applied.

    A form with errors comes back with its values and the errors beside the fields (400).
    """
    found = _team(team_id)
    form = AdjustForm()
    if not form.validate_on_submit():
        return _team_page(found, form, 400)
    balance = credits.balance(found.id)
    if form.amount.data < 0 and -form.amount.data > balance.available:
        form.amount.errors = [f"{found.name} has {balance.available:,} credits available: take away at most that."]
        return _team_page(found, form, 400)
    if request.form.get("edit"):  # back from the confirmation, values kept
        return _team_page(found, _unconfirmed(form))
    if form.confirmed.data != "yes":
        form.confirmed.data = "yes"
        return render_template(
            "admin/adjust_confirm.html",
            team=found,
            form=form,
            balance=balance,
            description=(form.description.data or "").strip() or ledger.DEFAULT_ADJUSTMENT,
        )
    try:
        receipt = credits.adjust(
            found.id,
            form.amount.data,
            reason=form.reason.data,
            description=form.description.data,
            key=f"admin:{form.idempotency_key.data}",
            actor=credits.Actor("admin", current_user.id),
        )
    except credits.CreditError as error:
        db.session.rollback()
        form.amount.errors = [str(error)]
        return _team_page(found, _unconfirmed(form), 400)
    db.session.commit()
    flash(f"Adjusted by {receipt.amount:+,} credits; balance {receipt.balance_after:,}.", "success")
    return redirect(url_for("admin.team", team_id=found.id))


def _unconfirmed(form: AdjustForm) -> AdjustForm:
    form.confirmed.data = ""
    return form


@bp.get("/events")
@site_admin_required
def events():  # type: ignore[no-untyped-def]
    rows = db.session.scalars(select(StripeEvent).order_by(StripeEvent.received_at.desc()).limit(100)).all()
    return render_template(
        "admin/events.html",
        events=rows,
        teams_by_event=_teams_of(rows),
        payloads={event.id: json.dumps(event.payload, indent=2, sort_keys=True) for event in rows},
        form=ReplayForm(),
    )


def _teams_of(events: list[StripeEvent]) -> dict[str, Team]:
    """The team each event is about (by its object's customer, or the team id in its metadata); one query."""
    wanted: dict[str, tuple[str | None, int | None]] = {}
    for event in events:
        obj = ((event.payload or {}).get("data") or {}).get("object") or {}
        if not isinstance(obj, dict):
            continue
        customer = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
        team_id = (obj.get("metadata") or {}).get("team_id") if isinstance(obj.get("metadata"), dict) else None
        wanted[event.id] = (
            customer if isinstance(customer, str) else None,
            int(team_id)
            if isinstance(team_id, str | int) and str(team_id).isdigit() and len(str(team_id)) < 10
            else None,
        )
    customers = {c for c, _ in wanted.values() if c}
    ids = {t for _, t in wanted.values() if t}
    if not customers and not ids:
        return {}
    found = db.session.scalars(select(Team).where(or_(Team.stripe_customer_id.in_(customers), Team.id.in_(ids)))).all()
    by_customer = {t.stripe_customer_id: t for t in found if t.stripe_customer_id}
    by_id = {t.id: t for t in found}
    result = {}
    for event_id, (customer, team_id) in wanted.items():
        team = by_customer.get(customer) if customer else None
        team = team or (by_id.get(team_id) if team_id else None)
        if team is not None:
            result[event_id] = team
    return result


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
