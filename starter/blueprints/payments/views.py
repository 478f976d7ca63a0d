"""Auto-recharge, the card on file, receipts, and test mode's 3-D Secure page (all under /billing).

Thin: authorise (owners and admins), call ``starter.billing.recharge`` / ``recharge_job`` /
``receipts``, render. Credits are granted only by ``recharge.payment_succeeded``, which the
webhook and the return page after 3-D Secure share.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from ... import catalog, credits
from ...access import team_role_required
from ...billing import BillingError, gateway, receipts, recharge, recharge_job, testmode, testmode_cards
from ...billing.errors import Ignored
from ...extensions import db
from ..billing.views import _deliver, not_configured
from .forms import AutoRechargeForm, CardSetupForm, ConfirmPaymentForm, TestAuthenticationForm

bp = Blueprint("payments", __name__, url_prefix="/billing")


def _pack_choices() -> list[tuple[str, str]]:
    return [
        (p.code, f"{p.name}: {p.total_credits:,} credits for ${p.price_cents / 100:,.2f}")
        for p in catalog.PACKS.values()
    ]


@bp.route("/auto-recharge", methods=["GET", "POST"])
@team_role_required("admin")
def auto_recharge():  # type: ignore[no-untyped-def]
    settings = recharge.settings_of(g.team.id)
    form = AutoRechargeForm(obj=None)
    form.pack_code.choices = _pack_choices()
    if request.method == "GET" and settings is not None and settings.pack_code:
        form.enabled.data, form.threshold.data = settings.enabled, settings.threshold
        form.pack_code.data, form.monthly_cap_dollars.data = settings.pack_code, settings.monthly_cap_cents // 100
    status = 200
    if form.validate_on_submit():
        try:
            recharge.configure(
                g.team,
                enabled=bool(form.enabled.data),
                threshold=form.threshold.data,
                pack_code=form.pack_code.data,
                monthly_cap_cents=form.monthly_cap_dollars.data * 100,
            )
        except BillingError as error:
            db.session.rollback()
            flash(str(error), "error")
            status = 422
        else:
            db.session.commit()
            flash("Auto-recharge is on." if form.enabled.data else "Auto-recharge is off.", "success")
            return redirect(url_for("payments.auto_recharge"), 303)
    elif form.errors:
        status = 422
    if request.args.get("saved"):
        flash("Card saved with Stripe: it shows here as soon as Stripe confirms it.", "success")
    return render_template(
        "billing/auto_recharge.html",
        form=form,
        card_form=CardSetupForm(),
        summary=recharge.summary(g.team.id),
        recharges=recharge.recharges_of(g.team.id),
        configured=gateway.is_configured(),
    ), status


@bp.post("/auto-recharge/card")
@team_role_required("admin")
def replace_card():  # type: ignore[no-untyped-def]
    form = CardSetupForm()
    if not form.validate_on_submit():
        abort(400)
    if not gateway.is_configured():
        return not_configured()
    try:
        url = gateway.create_setup_checkout(g.team, current_user.email, current_user.id, form.attempt.data)
    except BillingError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("payments.auto_recharge"), 303)
    db.session.commit()
    return redirect(url, 303)


@bp.route("/auto-recharge/confirm/<id:recharge_id>", methods=["GET", "POST"])
@team_role_required("admin")
def auto_recharge_confirm(recharge_id: int):  # type: ignore[no-untyped-def]
    found = recharge.find(g.team.id, recharge_id)
    if found is None:
        abort(404)
    form = ConfirmPaymentForm()
    if form.validate_on_submit():
        return_url = current_app.config["BASE_URL"] + url_for("payments.auto_recharge_confirmed", recharge_id=found.id)
        try:
            url = recharge_job.finish_on_session(g.team, found.id, return_url)
        except BillingError as error:
            db.session.rollback()
            flash(str(error), "error")
            return redirect(url_for("payments.auto_recharge"), 303)
        db.session.commit()
        return redirect(url, 303)
    pack = catalog.pack(found.pack_code)
    return render_template("billing/auto_recharge_confirm.html", recharge=found, pack=pack, form=form)


@bp.get("/auto-recharge/confirmed/<id:recharge_id>")
@team_role_required("admin")
def auto_recharge_confirmed(recharge_id: int):  # type: ignore[no-untyped-def]
    """Where 3-D Secure returns: like the success page, apply what Stripe says now (the webhook may lag)."""
    found = recharge.find(g.team.id, recharge_id)
    if found is None:
        abort(404)
    payment_intent = gateway.retrieve_payment_intent(found.payment_intent_id) if found.payment_intent_id else None
    if payment_intent and payment_intent.get("status") == "succeeded":
        try:
            recharge.payment_succeeded(payment_intent)
        except Ignored:
            db.session.rollback()
        db.session.commit()
        db.session.refresh(found)
    return render_template(
        "billing/auto_recharge_done.html",
        recharge=found,
        pack=catalog.pack(found.pack_code),
        balance=credits.balance(g.team.id),
    )


@bp.get("/receipts", endpoint="receipts")
@team_role_required("admin")
def receipts_page():  # type: ignore[no-untyped-def]
    return render_template(
        "billing/receipts.html", receipts=receipts.list_for(g.team.id), test_mode=gateway.is_test_mode()
    )


@bp.get("/receipts/<any(pack, recharge, invoice):kind>/<id:receipt_id>")
@team_role_required("admin")
def receipt(kind: str, receipt_id: int):  # type: ignore[no-untyped-def]
    """Our printable receipt in test mode; Stripe's hosted receipt or invoice in live mode."""
    found = receipts.find(g.team.id, kind, receipt_id)
    if found is None:
        abort(404)
    if not gateway.is_test_mode() and request.args.get("view") != "here":
        url = found.hosted_url or _stripe_receipt_url(found)
        if url:
            return redirect(url, 303)
    return render_template("billing/receipt.html", receipt=found)


def _stripe_receipt_url(found: receipts.Receipt) -> str | None:
    try:
        pi_id = found.reference
        if pi_id.startswith("cs_"):
            pi_id = (gateway.retrieve_checkout_session(pi_id) or {}).get("payment_intent") or ""
        payment_intent = gateway.retrieve_payment_intent(pi_id) if pi_id.startswith("pi_") else None
    except BillingError:
        return None
    charge = (payment_intent or {}).get("latest_charge")
    return charge.get("receipt_url") if isinstance(charge, dict) else None


@bp.route("/test-authenticate/<token>", methods=["GET", "POST"])
@team_role_required("admin")
def test_authenticate(token: str):  # type: ignore[no-untyped-def]
    """Test mode's stand-in for the bank's 3-D Secure page."""
    if not gateway.is_test_mode():
        abort(404)
    data = testmode.load_authentication(token)
    payment_intent = testmode.load(data["payment_intent"]) if data else None
    if payment_intent is None or (payment_intent.get("metadata") or {}).get("team_id") != str(g.team.id):
        abort(404)
    form = TestAuthenticationForm()
    if form.validate_on_submit():
        testmode_cards.authenticate(payment_intent["id"], complete=form.action.data == "complete")
        db.session.commit()
        try:
            _deliver(testmode_cards.take_queued())
        except BillingError as error:
            flash(str(error), "error")
        return redirect(data["return_url"] or url_for("payments.auto_recharge"), 303)
    return render_template("billing/test_authenticate.html", payment_intent=payment_intent, form=form)
