"""Paying due auto-recharges, outside every spend's transaction: the scheduler job and
``flask billing recharge-due`` call ``pay_due``.

Each recharge is claimed in a short transaction (team, balance and recharge rows locked in that
order, so a second runner waits and then finds it claimed; the guardrails checked again, the
attempt counted and committed), then
charged with no transaction open: an off-session PaymentIntent whose idempotency key names the
attempt (``auto-recharge:<id>:<attempt>``). A crash or a network error between the two leaves the
recharge ``processing``; after ``AUTO_RECHARGE_STALE_SECONDS`` the next run repeats the **same**
attempt with the same key, so Stripe answers the first result instead of charging twice. The answer
is recorded, but credits wait for ``payment_intent.succeeded`` (``recharge.payment_succeeded``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, or_, select

from .. import catalog
from ..credits.recharge_due import month_total
from ..extensions import db
from ..models import AutoRecharge, Team, utcnow
from . import gateway, recharge
from .errors import BillingError, PaymentDeclined

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass
class PayResult:
    claimed: int = 0
    charged: int = 0
    declined: int = 0
    needs_action: int = 0
    canceled: int = 0
    errors: int = 0

    def describe(self) -> str:
        return (
            f"auto-recharge: {self.claimed} due, {self.charged} charged, {self.declined} declined, "
            f"{self.needs_action} need authentication, {self.canceled} canceled, {self.errors} error(s)"
        )


def due_ids(now: datetime, limit: int = 100) -> list[int]:
    stale = now - timedelta(seconds=current_app.config["AUTO_RECHARGE_STALE_SECONDS"])
    return list(
        db.session.scalars(
            select(AutoRecharge.id)
            .where(
                or_(
                    AutoRecharge.status == "due",
                    and_(AutoRecharge.status == "retrying", AutoRecharge.next_attempt_at <= now),
                    and_(AutoRecharge.status == "processing", AutoRecharge.updated_at <= stale),
                )
            )
            .order_by(AutoRecharge.id)
            .limit(limit)
        )
    )


def _claim(recharge_id: int, now: datetime) -> tuple[AutoRecharge, Json] | None:
    """Lock the recharge, check it is still due and allowed, count the attempt; the caller commits.

    Returns the recharge and the PaymentIntent parameters, or None (not due any more, or canceled)."""
    team_id = db.session.scalar(select(AutoRecharge.team_id).where(AutoRecharge.id == recharge_id))
    if team_id is None:
        return None
    team = recharge.lock_team(team_id)  # team → balance → recharge: the order of every recharge change
    row = db.session.scalar(
        select(AutoRecharge)
        .where(AutoRecharge.id == recharge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        return None
    stale = now - timedelta(seconds=current_app.config["AUTO_RECHARGE_STALE_SECONDS"])
    repeat = row.status == "processing" and row.updated_at <= stale  # the same attempt again, same key
    if not (row.status == "due" or repeat or (row.status == "retrying" and row.next_attempt_at <= now)):
        return None
    settings = recharge.settings_of(row.team_id, lock=True)
    pack = catalog.pack(row.pack_code)
    reason = None
    if settings is None or not settings.enabled:
        reason = "auto-recharge is off"
    elif not settings.payment_method_id or team is None or not team.stripe_customer_id:
        reason = "no card on file"
    elif pack is None or pack.price_cents != row.amount_cents or pack.total_credits != row.credits:
        reason = "the pack changed in the catalog"
    elif not repeat:
        # The cap again, now that Stripe is about to be asked: what else this month is counted, plus this.
        others = db.session.scalar(select(month_total(row.team_id, row.created_at))) - row.amount_cents
        if others + row.amount_cents > settings.monthly_cap_cents:
            reason = "the monthly cap is reached"
    if reason and not repeat:
        row.status, row.failure_code, row.failure_message, row.updated_at = "canceled", "canceled", reason, now
        return row, {}
    if not repeat:
        row.attempts += 1
    row.status, row.updated_at = "processing", now
    params: Json = {
        "amount": row.amount_cents,
        "currency": row.currency,
        "customer": team.stripe_customer_id,
        "payment_method": settings.payment_method_id,
        "payment_method_types": ["card"],
        "off_session": True,
        "confirm": True,
        "description": f"Auto-recharge: {pack.name if pack else row.pack_code}",
        "metadata": {
            "team_id": str(row.team_id),
            "kind": recharge.KIND,
            "auto_recharge_id": str(row.id),
            "attempt": str(row.attempts),
            "code": row.pack_code,
        },
    }
    return row, params


def pay_one(recharge_id: int, now: datetime | None = None, result: PayResult | None = None) -> PayResult:
    """Claim and charge one due recharge; commits its claim and its outcome separately."""
    result = result or PayResult()
    now = now or utcnow()
    claimed = _claim(recharge_id, now)
    db.session.commit()
    if claimed is None:
        return result
    row, params = claimed
    if not params:
        result.canceled += 1
        return result
    result.claimed += 1
    recharge_id, attempt = row.id, row.attempts
    key = f"auto-recharge:{recharge_id}:{attempt}"
    try:
        payment_intent = gateway.create_payment_intent(params, key)  # no transaction open
    except PaymentDeclined as declined:
        _record_decline(recharge_id, attempt, declined, result)
    except BillingError:
        log.warning("auto-recharge %s: Stripe unreachable; the same attempt is repeated later", recharge_id)
        result.errors += 1
    else:
        _record_answer(recharge_id, attempt, payment_intent, result)
    db.session.commit()
    _deliver_test_mode_events()
    return result


def _locked(recharge_id: int) -> AutoRecharge | None:
    team_id = db.session.scalar(select(AutoRecharge.team_id).where(AutoRecharge.id == recharge_id))
    if team_id is None:
        return None
    recharge.lock_team(team_id)
    return db.session.scalar(
        select(AutoRecharge)
        .where(AutoRecharge.id == recharge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _record_answer(recharge_id: int, attempt: int, payment_intent: Json, result: PayResult) -> None:
    row = _locked(recharge_id)
    if row is None:
        return
    status = payment_intent.get("status")
    if status == "requires_action":
        result.needs_action += recharge.requires_action(row, payment_intent, attempt)
        return
    result.charged += 1
    if row.attempts == attempt and row.status == "processing":
        # Stripe took it; the credits come with payment_intent.succeeded (maybe already here: then succeeded).
        row.status, row.payment_intent_id, row.updated_at = "confirming", payment_intent["id"], utcnow()


def _record_decline(recharge_id: int, attempt: int, declined: PaymentDeclined, result: PayResult) -> None:
    row = _locked(recharge_id)
    if row is None:
        return
    payment_intent = declined.payment_intent
    if declined.code == "authentication_required" or declined.decline_code == "authentication_required":
        result.needs_action += recharge.requires_action(row, payment_intent, attempt)
        return
    result.declined += 1
    code = declined.decline_code or declined.code
    recharge.record_failure(row, attempt, code, str(declined), payment_intent.get("id"))


def _deliver_test_mode_events() -> None:
    """Test mode's Stripe queues the events a payment makes; they go through the webhook code."""
    from . import testmode_cards, webhooks

    if not gateway.is_test_mode():
        return
    for payload, signature in testmode_cards.take_queued():
        status, body = webhooks.receive(payload, signature)
        if status != 200:
            log.warning("test-mode event not processed: %s", body)


def expire_unconfirmed(now: datetime, result: PayResult) -> None:
    """A recharge waiting for 3-D Secure longer than ``AUTO_RECHARGE_ACTION_HOURS`` counts as a failure:
    it stops holding the team's one slot in flight, and enough of them turn auto-recharge off."""
    hours = current_app.config["AUTO_RECHARGE_ACTION_HOURS"]
    waiting = db.session.scalars(
        select(AutoRecharge.id).where(
            AutoRecharge.status == "requires_action", AutoRecharge.updated_at <= now - timedelta(hours=hours)
        )
    ).all()
    for recharge_id in waiting:
        row = _locked(recharge_id)
        if row is not None and row.status == "requires_action":
            message = f"The payment was not confirmed within {hours} hours."
            result.declined += recharge.record_failure(row, row.attempts, "authentication_required", message, None)
        db.session.commit()


def pay_due(now: datetime | None = None, *, limit: int = 100) -> PayResult:
    """Pay every due recharge (up to ``limit``); returns what happened. Used by the job and the CLI."""
    result = PayResult()
    now = now or utcnow()
    expire_unconfirmed(now, result)
    for recharge_id in due_ids(now, limit):
        try:
            pay_one(recharge_id, now, result)
        except Exception:
            db.session.rollback()
            result.errors += 1
            log.exception("auto-recharge %s failed; the next run retries it", recharge_id)
    return result


def finish_on_session(team: Team, recharge_id: int, return_url: str) -> str:
    """The emailed link's page: confirm the PaymentIntent again on-session; returns where to send the
    browser (Stripe's 3-D Secure page, or back when nothing is left to do)."""
    row = db.session.scalar(select(AutoRecharge).where(AutoRecharge.id == recharge_id, AutoRecharge.team_id == team.id))
    if row is None or row.status != "requires_action" or not row.payment_intent_id:
        raise recharge.RechargeError("This payment needs nothing more from you.")
    settings = recharge.settings_of(team.id)
    params: Json = {"return_url": return_url, "payment_method": settings.payment_method_id if settings else None}
    key = f"auto-recharge:{row.id}:{row.attempts}:on-session"
    try:
        payment_intent = gateway.confirm_payment_intent(row.payment_intent_id, params, key)
    except PaymentDeclined as declined:
        raise recharge.RechargeError(f"The bank refused: {declined}") from declined
    next_action = payment_intent.get("next_action") or {}
    url = (next_action.get("redirect_to_url") or {}).get("url")
    return str(url or return_url)
