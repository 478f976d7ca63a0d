"""Auto-recharge: the settings and guardrails, the card on file, and what Stripe's answers do.

A spend that crosses the threshold records a due recharge in its own transaction
(``credits.recharge_due``). ``recharge_job`` pays it later, outside any spend, with an off-session
PaymentIntent (an idempotency key per attempt). Credits come only from ``payment_intent.succeeded``
(``payment_succeeded``), keyed on the PaymentIntent, in whatever order and however often it arrives;
the recharge becomes a ``Purchase`` like a pack, so refunds and disputes claw it back through
``reversals``. Guardrails: the monthly cap (counting recharges in flight), backoff after a decline,
auto-off after ``AUTO_RECHARGE_MAX_FAILURES`` failures in a row (owners are emailed), and 3-D Secure
by an emailed link that finishes the payment on-session.

The card on file is learnt from Stripe: ``payment_method.attached`` (Checkout saving a card with
``setup_future_usage=off_session``, a ``mode=setup`` session, a subscription's card) records the
newest card of the team's customer; ``payment_method.detached`` forgets it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from .. import catalog, credits, mail
from ..credits.recharge_due import COUNTED, lock_account, month_start, record_due, set_threshold
from ..extensions import db
from ..models import (
    RECHARGE_IN_FLIGHT,
    AutoRecharge,
    AutoRechargeSettings,
    CreditBalance,
    Membership,
    Purchase,
    Team,
    User,
    utcnow,
)
from . import receipts, reversals
from .customers import team_for
from .errors import BillingError, Ignored

log = logging.getLogger(__name__)
Json = dict[str, Any]
STRIPE = credits.Actor("stripe")
KIND = "auto_recharge"  # the PaymentIntent's metadata kind


class RechargeError(BillingError):
    """A refused auto-recharge setting; the message is safe to show."""


# -- settings ----------------------------------------------------------------------------------------


def lock_team(team_id: int) -> Team | None:
    """Lock the team row, then its balance row: auto-recharge's bookkeeping takes them in that order
    before any recharge or settings row (team → balance → recharge → settings), as the ledger's own
    callers do (team → balance) and a spend does (balance → the recharge it inserts), so none deadlock."""
    team = db.session.scalar(
        select(Team)
        .where(Team.id == team_id)
        .with_for_update(key_share=True)  # as team_for: never blocks a spend's foreign-key check
        .execution_options(populate_existing=True)
    )
    lock_account(team_id)
    return team


def settings_of(team_id: int, *, lock: bool = False) -> AutoRechargeSettings | None:
    query = select(AutoRechargeSettings).where(AutoRechargeSettings.team_id == team_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return db.session.scalar(query)


def _settings_for_update(team_id: int) -> AutoRechargeSettings:
    settings = settings_of(team_id, lock=True)
    if settings is None:
        settings = AutoRechargeSettings(team_id=team_id, enabled=False, threshold=0, monthly_cap_cents=0)
        db.session.add(settings)
        db.session.flush()
    return settings


def configure(
    team: Team, *, enabled: bool, threshold: int, pack_code: str, monthly_cap_cents: int, now: datetime | None = None
) -> AutoRechargeSettings:
    """Turn auto-recharge on or off with its threshold, pack and monthly cap. The caller commits.

    Turning it on needs a card on file and a cap that allows at least one pack. If the balance is
    below the threshold already, the first recharge is due at once. Turning it off cancels what has
    not reached Stripe yet (due, retrying, waiting for authentication).
    """
    now = now or utcnow()
    pack = catalog.pack(pack_code)
    if pack is None:
        raise RechargeError("Choose a pack from the list.")
    if not 0 <= threshold <= credits.MAX_AMOUNT or not 0 <= monthly_cap_cents <= 100_000_000:
        raise RechargeError("The threshold or the cap is out of range.")
    lock_team(team.id)
    settings = _settings_for_update(team.id)
    if enabled and not settings.payment_method_id:
        raise RechargeError("Save a card first: buy a pack with Checkout, or add a card below.")
    if enabled and monthly_cap_cents < pack.price_cents:
        raise RechargeError(f"The monthly cap must allow at least one {pack.name} ({pack.price_cents / 100:,.2f}).")
    was_on = settings.enabled
    settings.threshold, settings.pack_code, settings.monthly_cap_cents = threshold, pack.code, monthly_cap_cents
    settings.pack_price_cents, settings.pack_credits = pack.price_cents, pack.total_credits
    settings.enabled, settings.updated_at = enabled, now
    if enabled and not was_on:
        settings.consecutive_failures, settings.disabled_reason = 0, None
    set_threshold(team.id, threshold if enabled else None)
    if not enabled:
        _cancel_waiting(team.id, now)
    else:
        balance = db.session.get(CreditBalance, team.id)
        if balance is not None and balance.balance < threshold:
            db.session.flush()
            record_due(team.id, balance.balance, now)
    return settings


def _cancel_waiting(team_id: int, now: datetime) -> None:
    for recharge in db.session.scalars(
        select(AutoRecharge).where(
            AutoRecharge.team_id == team_id, AutoRecharge.status.in_(("due", "retrying", "requires_action"))
        )
    ):
        recharge.status, recharge.updated_at = "canceled", now


def turn_off(team_id: int, reason: str, now: datetime) -> None:
    """The guardrail: auto-recharge off (threshold cleared), with the reason shown on its page."""
    settings = _settings_for_update(team_id)
    settings.enabled, settings.disabled_reason, settings.updated_at = False, reason, now
    set_threshold(team_id, None)
    _cancel_waiting(team_id, now)


# -- the card on file ---------------------------------------------------------------------------------


def card_attached(payment_method: Json) -> None:
    """``payment_method.attached``: the team's newest card becomes the one auto-recharge charges."""
    if payment_method.get("type") != "card":
        raise Ignored(f"payment method {payment_method.get('id')} is not a card")
    team = team_for(payment_method.get("customer"), None)
    settings = _settings_for_update(team.id)
    created = int(payment_method.get("created") or 0)
    if settings.payment_method_id == payment_method["id"]:
        return
    if settings.payment_method_created is not None and created < settings.payment_method_created:
        return  # a late delivery of an older card: the newer one stays on file (same second: the latest heard)
    card = payment_method.get("card") or {}
    settings.payment_method_id, settings.payment_method_created = payment_method["id"], created
    settings.card_brand, settings.card_last4 = str(card.get("brand") or "card")[:32], str(card.get("last4") or "")[:4]
    settings.consecutive_failures, settings.updated_at = 0, utcnow()


def card_detached(payment_method: Json) -> None:
    """``payment_method.detached``: the event names no customer, so find the team by the card."""
    settings = db.session.scalar(
        select(AutoRechargeSettings).where(AutoRechargeSettings.payment_method_id == payment_method.get("id"))
    )
    if settings is None:
        raise Ignored(f"payment method {payment_method.get('id')} is not on file")
    team = db.session.get(Team, settings.team_id)
    team_for(team.stripe_customer_id if team else None, None)
    settings = _settings_for_update(settings.team_id)
    settings.payment_method_id = settings.card_brand = settings.card_last4 = None
    if settings.enabled:
        turn_off(settings.team_id, "the card on file was removed", utcnow())


# -- what the dashboard and the page show ------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    settings: AutoRechargeSettings | None
    month_total_cents: int
    in_flight: AutoRecharge | None
    last: AutoRecharge | None

    @property
    def enabled(self) -> bool:
        return bool(self.settings and self.settings.enabled)

    @property
    def cap_reached(self) -> bool:
        s = self.settings
        return bool(s and s.enabled and self.month_total_cents + s.pack_price_cents > s.monthly_cap_cents)


def summary(team_id: int, now: datetime | None = None) -> Summary:
    now = now or utcnow()
    rows = list(
        db.session.scalars(
            select(AutoRecharge)
            .where(AutoRecharge.team_id == team_id)
            .order_by(AutoRecharge.created_at.desc(), AutoRecharge.id.desc())
            .limit(50)
        )
    )
    total = sum(r.amount_cents for r in rows if r.status in COUNTED and r.created_at >= month_start(now))
    in_flight = next((r for r in rows if r.status in RECHARGE_IN_FLIGHT), None)
    return Summary(settings_of(team_id), total, in_flight, rows[0] if rows else None)


def find(team_id: int, recharge_id: int) -> AutoRecharge | None:
    """One of the team's recharges (another team's is simply not found)."""
    return db.session.scalar(
        select(AutoRecharge).where(AutoRecharge.id == recharge_id, AutoRecharge.team_id == team_id)
    )


def recharges_of(team_id: int, limit: int = 20) -> list[AutoRecharge]:
    return list(
        db.session.scalars(
            select(AutoRecharge)
            .where(AutoRecharge.team_id == team_id)
            .order_by(AutoRecharge.created_at.desc(), AutoRecharge.id.desc())
            .limit(limit)
        )
    )


# -- what Stripe says about a payment ------------------------------------------------------------------


def _recharge_of(payment_intent: Json) -> tuple[Team, AutoRecharge] | None:
    metadata = payment_intent.get("metadata") or {}
    if metadata.get("kind") != KIND:
        return None
    team = team_for(payment_intent.get("customer"), metadata)
    lock_account(team.id)  # before the recharge row: see lock_team
    recharge_id = str(metadata.get("auto_recharge_id") or "")
    recharge = db.session.scalar(
        select(AutoRecharge)
        .where(AutoRecharge.id == (int(recharge_id) if recharge_id.isdigit() else 0), AutoRecharge.team_id == team.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if recharge is None:
        raise Ignored(f"payment intent {payment_intent.get('id')}: no such auto-recharge")
    return team, recharge


def _attempt_of(payment_intent: Json) -> int:
    value = str((payment_intent.get("metadata") or {}).get("attempt") or "0")
    return int(value) if value.isdigit() else 0


def payment_succeeded(payment_intent: Json) -> None:
    """``payment_intent.succeeded``: grant the recharge's pack once, keyed on the PaymentIntent."""
    found = _recharge_of(payment_intent)
    if found is None:
        return  # a Checkout payment: checkout.session.completed grants it
    team, recharge = found
    received = int(payment_intent.get("amount_received") or payment_intent.get("amount") or 0)
    if received != recharge.amount_cents or payment_intent.get("currency") != recharge.currency:
        raise Ignored(f"paid {received} {payment_intent.get('currency')} for a {recharge.amount_cents} recharge")
    pack = catalog.pack(recharge.pack_code)
    name = pack.name if pack else recharge.pack_code
    pi_id = payment_intent["id"]
    receipt = credits.grant(
        team.id,
        recharge.credits,
        source="purchase",
        key=f"recharge:{pi_id}",
        reference=pi_id,
        actor=STRIPE,
        description=f"Auto-recharge: {name}",
        meta={"auto_recharge": recharge.id, "pack": recharge.pack_code, "payment_intent": pi_id},
    )
    now = utcnow()
    if not receipt.replayed:
        db.session.add(
            Purchase(
                team_id=team.id,
                pack_code=recharge.pack_code,
                credits=recharge.credits,
                amount_cents=recharge.amount_cents,
                currency=recharge.currency,
                # A recharge has no Checkout Session: its PaymentIntent is the reference its block carries.
                stripe_checkout_session_id=pi_id,
                stripe_payment_intent_id=pi_id,
                block_id=receipt.block_id,
            )
        )
        db.session.flush()
        reversals.settle(team.id, pi_id)  # a refund delivered before this success is applied now
        receipts.email_receipt(team, f"Auto-recharge: {name}", recharge.amount_cents, recharge.credits, pi_id)
    recharge.status, recharge.payment_intent_id, recharge.updated_at = "succeeded", pi_id, now
    recharge.succeeded_at = recharge.succeeded_at or now
    recharge.failure_code = recharge.failure_message = None
    settings = _settings_for_update(team.id)
    settings.consecutive_failures = 0


def payment_failed(payment_intent: Json) -> None:
    """``payment_intent.payment_failed``: the attempt failed (the job may have heard it first)."""
    found = _recharge_of(payment_intent)
    if found is None:
        return
    _team, recharge = found
    error = payment_intent.get("last_payment_error") or {}
    if error.get("code") == "authentication_required" or error.get("decline_code") == "authentication_required":
        requires_action(recharge, payment_intent, _attempt_of(payment_intent))
        return
    record_failure(
        recharge,
        _attempt_of(payment_intent),
        str(error.get("decline_code") or error.get("code") or "card_declined"),
        str(error.get("message") or "The card was declined."),
        payment_intent.get("id"),
    )


def payment_requires_action(payment_intent: Json) -> None:
    """``payment_intent.requires_action``: 3-D Secure; the customer finishes the payment on-session."""
    found = _recharge_of(payment_intent)
    if found is not None:
        requires_action(found[1], payment_intent, _attempt_of(payment_intent))


def backoff(failures: int) -> timedelta:
    steps = current_app.config["AUTO_RECHARGE_BACKOFF_SECONDS"]
    return timedelta(seconds=steps[min(failures, len(steps)) - 1])


def record_failure(recharge: AutoRecharge, attempt: int, code: str, message: str, pi_id: str | None) -> bool:
    """Count a declined attempt once (the job's answer and the webhook both report it): retry later
    with backoff, or, after the last allowed failure in a row, turn auto-recharge off and email the owners."""
    if recharge.attempts != attempt or recharge.status not in ("processing", "confirming", "requires_action"):
        return False  # this attempt's outcome is recorded already
    now = utcnow()
    settings = _settings_for_update(recharge.team_id)
    settings.consecutive_failures += 1
    settings.last_failure, settings.last_failure_at = f"{message} ({code})"[:255], now
    recharge.failure_code, recharge.failure_message, recharge.updated_at = code[:64], message[:255], now
    if pi_id:
        recharge.payment_intent_id = pi_id
    if settings.consecutive_failures >= current_app.config["AUTO_RECHARGE_MAX_FAILURES"]:
        recharge.status = "failed"
        turn_off(recharge.team_id, f"{settings.consecutive_failures} payments in a row failed", now)
        _email_team(
            recharge.team_id,
            "Auto-recharge was turned off",
            "auto_recharge_disabled",
            roles=("owner",),
            failures=settings.consecutive_failures,
            message=message,
        )
    else:
        recharge.status, recharge.next_attempt_at = "retrying", now + backoff(settings.consecutive_failures)
    return True


def requires_action(recharge: AutoRecharge, payment_intent: Json, attempt: int) -> bool:
    """The bank wants 3-D Secure: keep the recharge in flight and email a link to finish it (once)."""
    if recharge.attempts != attempt or recharge.status not in ("processing", "confirming"):
        return False
    now = utcnow()
    recharge.status, recharge.payment_intent_id, recharge.updated_at = "requires_action", payment_intent["id"], now
    recharge.failure_code, recharge.failure_message = "authentication_required", "Your bank asks you to confirm."
    _email_team(
        recharge.team_id,
        "Confirm your auto-recharge payment",
        "auto_recharge_action",
        roles=("owner", "admin"),
        recharge=recharge,
        link=receipts.absolute_url("payments.auto_recharge_confirm", recharge_id=recharge.id),
    )
    return True


def _email_team(team_id: int, subject: str, template: str, *, roles: tuple[str, ...], **context: Any) -> None:
    team = db.session.get(Team, team_id)
    emails = db.session.scalars(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id, Membership.role.in_(roles))
        .order_by(User.id)
    )
    for email in emails:
        mail.send(email, subject, template, team=team, **context)
