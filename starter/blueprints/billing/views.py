"""The purchase dialog's endpoints: packs and plans to Stripe Checkout, success and cancel, the portal.

Thin: authorise, call ``starter.billing``, render. Credits are granted only by fulfilment, which
the webhook and the success page share.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms.fields.choices import SelectChoice

from ... import catalog, credits, plans, yearly
from ...access import team_role_required
from ...billing import BillingError, fulfilment, gateway, overage, subscriptions, testmode, testmode_cards, webhooks
from ...billing.errors import Ignored
from ...extensions import db
from ...models import Purchase
from ...teams import has_role
from .forms import CheckoutForm, OverageForm, PortalForm, TestPaymentForm, TestPortalForm

bp = Blueprint("billing", __name__, url_prefix="/billing")


def purchase_context(balance: credits.Balance | None = None) -> dict:
    """What the purchase dialog (and the /billing page) needs, on every page that can open it."""
    return {
        "packs": list(catalog.PACKS.values()),
        "best_pack": catalog.best_value_pack(),
        "dialog_balance": balance if balance is not None else credits.balance(g.team.id),
        "can_buy": has_role(g.membership, "admin"),
        "form": CheckoutForm(),
        "portal_form": PortalForm(),
        # The portal only where there is something to manage in it: a subscription (packs have receipts).
        "can_manage": has_role(g.membership, "admin") and bool(g.team.stripe_subscription_id),
    }


def chosen_interval() -> str:
    """The monthly/yearly switch of the pricing and billing pages (``?interval=year``); monthly otherwise."""
    return "year" if request.args.get("interval") == "year" else "month"


@bp.get("")
@team_role_required("member")
def index():  # type: ignore[no-untyped-def]
    setting = overage.setting_of(g.team.id)
    overage_form = OverageForm(
        data={"enabled": bool(setting and setting.enabled), "cap": setting.cap_credits if setting else 0}
    )
    balance = credits.balance(g.team.id)
    interval = chosen_interval()
    # A plan picked on the pricing page (carried through sign-up): its Checkout button comes first.
    chosen = catalog.paid_plan_sold(request.args.get("plan"), request.args.get("interval") or "month")
    if chosen is not None and (chosen.code == g.team.plan_code or g.team.is_paying):
        chosen = None  # already on it, or a paying team changes plans in the portal (the cards say how)
    return render_template(
        "billing/index.html",
        plans=list(catalog.PLANS.values()),
        current_plan=plans.plan_of(g.team),
        interval=interval,
        chosen=chosen,
        balance=balance,
        outlook=plans.outlook(g.team, balance.plan),
        paid_year=yearly.current_year(g.team.id),
        overage=overage.summary(g.team),
        overage_form=overage_form,
        **purchase_context(balance),
    )


@bp.post("/overage")
@team_role_required("admin")
def overage_settings():  # type: ignore[no-untyped-def]
    form = OverageForm()
    if not form.validate_on_submit():
        flash("Check the overage form: " + "; ".join(e[0] for e in form.errors.values()), "error")
        return redirect(url_for("billing.index"), 303)
    try:
        overage.configure(g.team, enabled=bool(form.enabled.data), cap=form.cap.data, user_id=current_user.id)
    except BillingError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("billing.index"), 303)
    db.session.commit()
    flash("Overage is on." if form.enabled.data else "Overage is off.", "success")
    return redirect(url_for("billing.index"), 303)


@bp.post("/checkout")
@team_role_required("admin")
def checkout():  # type: ignore[no-untyped-def]
    form = CheckoutForm()
    if not form.validate_on_submit():
        abort(400, "Choose a pack or a plan from the list.")
    kind, code, interval = form.kind.data, form.code.data, form.interval.data or "month"
    if (kind == "pack" and catalog.pack(code) is None) or (kind == "plan" and catalog.plan(code) is None):
        abort(400, "That pack or plan does not exist.")
    if kind == "plan" and interval == "year" and not catalog.PLANS[code].sold_yearly:
        abort(400, "That plan is not sold yearly.")
    if not gateway.is_configured():
        return not_configured()
    try:
        if kind == "plan" and (g.team.is_paying or catalog.PLANS[code].is_free):
            if not g.team.is_paying:
                flash("You are on the free plan already.", "info")
                return redirect(url_for("billing.index"), 303)
            # A team that already pays changes or cancels its plan in the portal.
            return redirect(gateway.portal_url(g.team, current_user.email, "/billing"), 303)
        url = gateway.create_checkout(
            g.team,
            current_user.email,
            kind,
            code,
            current_user.id,
            form.attempt.data,
            interval if kind == "plan" else "month",
        )
    except BillingError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("billing.index"), 303)
    db.session.commit()  # the lazily created Stripe customer id
    return redirect(url, 303)


@bp.get("/success")
@team_role_required("member")
def success():  # type: ignore[no-untyped-def]
    session_id = request.args.get("session_id", "")
    if not session_id.startswith("cs_") or len(session_id) > 255:
        abort(404)
    try:
        session = gateway.retrieve_checkout_session(session_id)
    except BillingError as error:
        return render_template("billing/success.html", outcome=None, error=str(error)), 503
    if session is None or str((session.get("metadata") or {}).get("team_id")) != str(g.team.id):
        abort(404)
    try:
        outcome = fulfilment.fulfil_checkout(session)
    except Ignored:
        db.session.rollback()
        current_app.logger.warning("Success page for %s: the payment did not match its pack", session_id)
        outcome = fulfilment.Fulfilment("mismatch")
    db.session.commit()
    metadata = session.get("metadata") or {}
    return render_template(
        "billing/success.html",
        outcome=outcome,
        session=session,
        error=None,
        pack=catalog.pack(str(metadata.get("code"))) if metadata.get("kind") == "pack" else None,
        balance=credits.balance(g.team.id),
        purchase=db.session.scalar(select(Purchase).where(Purchase.stripe_checkout_session_id == session_id)),
    )


@bp.get("/cancel")
@team_role_required("member")
def cancel():  # type: ignore[no-untyped-def]
    return render_template("billing/cancel.html")


def not_configured():  # type: ignore[no-untyped-def]
    """Neither a Stripe key nor test mode: say so plainly; nothing is created, nothing granted."""
    return render_template("billing/not_configured.html"), 503


@bp.post("/portal")
@team_role_required("admin")
def portal():  # type: ignore[no-untyped-def]
    if not PortalForm().validate_on_submit():
        abort(400)
    if not gateway.is_configured():
        return not_configured()
    if not g.team.stripe_subscription_id:
        # No dead end: the portal manages subscriptions; packs have their receipts here.
        flash(
            "There is no subscription to manage yet: choose a plan below. Receipts for packs are under Receipts.",
            "info",
        )
        return redirect(url_for("billing.index"), 303)
    try:
        url = gateway.portal_url(g.team, current_user.email)
    except BillingError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("dashboard.index"), 303)
    db.session.commit()
    return redirect(url, 303)


@bp.post("/resume")
@team_role_required("admin")
def resume():  # type: ignore[no-untyped-def]
    """Keep a plan that was cancelled at the period end."""
    if not PortalForm().validate_on_submit():
        abort(400)
    if not gateway.is_configured():
        return not_configured()
    try:
        subscriptions.resume(g.team)
    except BillingError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("billing.index"), 303)
    db.session.commit()
    if gateway.is_test_mode():
        try:
            _deliver(testmode_cards.take_queued())  # Stripe's webhook for the change, as test mode sends it
        except BillingError as error:  # the resume itself is applied and committed; the event is on the admin page
            db.session.rollback()
            flash(str(error), "error")
    flash(f"The {plans.plan_of(g.team).name} plan will renew as usual.", "success")
    return redirect(url_for("billing.index"), 303)


def _test_mode_only() -> None:
    if not gateway.is_test_mode():
        abort(404)


def _deliver(events: list[testmode.SignedEvent]) -> None:
    """Test mode's events go through the webhook code, exactly as Stripe's deliveries do."""
    for payload, signature in events:
        status, body = webhooks.receive(payload, signature)
        if status != 200:
            raise BillingError(f"The test payment could not be processed ({body.get('error', status)}).")


@bp.route("/test-checkout/<token>", methods=["GET", "POST"])
@team_role_required("admin")
def test_checkout(token: str):  # type: ignore[no-untyped-def]
    _test_mode_only()
    checkout = testmode.load_checkout(token)
    if checkout is None or checkout["params"]["metadata"]["team_id"] != str(g.team.id):
        abort(404)
    form = TestPaymentForm()
    if form.validate_on_submit():
        if form.action.data == "cancel":
            return redirect(checkout["params"]["cancel_url"], 303)
        try:
            success_url, events = testmode.pay(checkout, form.card.data)
            _deliver(events)
            return redirect(success_url, 303)
        except BillingError as error:
            db.session.rollback()
            flash(str(error), "error")
    metadata = checkout["params"]["metadata"]
    item = catalog.pack(metadata["code"]) if metadata["kind"] == "pack" else catalog.plan(metadata["code"] or "")
    return render_template("billing/test_checkout.html", checkout=checkout, item=item, kind=metadata["kind"], form=form)


@bp.route("/test-portal", methods=["GET", "POST"])
@team_role_required("admin")
def test_portal():  # type: ignore[no-untyped-def]
    _test_mode_only()
    form = TestPortalForm()
    form.plan_code.choices = [SelectChoice(p.code, p.name) for p in catalog.PLANS.values() if not p.is_free]
    if form.validate_on_submit():
        try:
            if form.action.data in ("renew", "renew_failed"):
                # Stripe finalises a renewal about an hour after the period ends, by when the
                # scheduler has reported the period's overage; report it now, as that hour would.
                overage.report_due()
            _deliver(testmode.portal_action(g.team, form.action.data, form.plan_code.data))
        except BillingError as error:
            db.session.rollback()
            flash(str(error), "error")
        else:
            flash("Done: the subscription was updated through the webhook.", "success")
        return redirect(url_for("billing.test_portal"), 303)
    return render_template("billing/test_portal.html", form=form, plan=plans.plan_of(g.team))
