"""Refunds and disputes: what a payment lost, and the credits that follow the money.

The rule (docs/billing.md): the money taken back from a pack's payment is its cumulative refunds
plus every dispute whose funds were withdrawn and not reinstated, never more than was paid. The
credits owed back are the pack's credits in that proportion. ``settle`` moves the ledger to that
figure: a clawback when it grew (taking what remains, the rest recorded as a shortfall), a
reinstatement of what was actually taken when it shrank (purchased credits again). Inquiries
withdraw no funds, so they move nothing; a refund after a lost dispute cannot take the money twice.

Reversals are stored by payment intent, because Stripe can deliver them before the checkout they
reverse; fulfilment calls ``settle`` once the purchase exists. Their fields only grow, so events
merge to the same state in any order.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from .. import credits, yearly
from ..extensions import db
from ..models import InvoiceRecord, PaymentReversal, Purchase, Team, utcnow
from . import gateway
from .customers import team_for
from .errors import Ignored

log = logging.getLogger(__name__)
Json = dict[str, Any]
STRIPE = credits.Actor("stripe")
# Dispute statuses in the order Stripe moves through them: a stale event never moves one back.
DISPUTE_STAGES = {
    "warning_needs_response": 1,
    "warning_under_review": 2,
    "warning_closed": 3,
    "needs_response": 1,
    "under_review": 2,
    "prevented": 3,
    "won": 3,
    "lost": 3,
}


def _reversal(team: Team, payment_intent: str, kind: str, stripe_id: str) -> PaymentReversal:
    reversal = db.session.scalar(
        select(PaymentReversal).where(PaymentReversal.kind == kind, PaymentReversal.stripe_id == stripe_id)
    )
    if reversal is None:
        reversal = PaymentReversal(team_id=team.id, payment_intent=payment_intent, kind=kind, stripe_id=stripe_id)
        db.session.add(reversal)
    reversal.updated_at = utcnow()
    return reversal


def charge_refunded(charge: Json) -> None:
    """``charge.refunded``: ``amount_refunded`` is cumulative, so the largest seen is the truth."""
    team = team_for(charge.get("customer"), None)
    if not charge.get("payment_intent"):
        raise Ignored(f"charge {charge.get('id')} has no payment intent")
    reversal = _reversal(team, charge["payment_intent"], "refund", charge["id"])
    reversal.amount_cents = max(reversal.amount_cents or 0, int(charge.get("amount_refunded") or 0))
    settle(team.id, charge["payment_intent"])
    # Not a pack: perhaps a subscription invoice (its receipt says so), a yearly one ending its monthly
    # credits (docs/billing.md).
    invoice_id = _settle_invoice(team, charge["payment_intent"])
    if invoice_id:
        key = f"yearly-refund:{charge['id']}:{reversal.amount_cents}"
        yearly.refund_year(team, invoice_id, key=key)


def _settle_invoice(team: Team, payment_intent: str) -> str | None:
    """The subscription invoice a payment intent paid (None for a pack); its receipt's status follows the
    payment's refunds and disputes, as a pack's does."""
    if db.session.scalar(select(Purchase.id).where(Purchase.stripe_payment_intent_id == payment_intent)):
        return None
    invoice_id = gateway.invoice_of_payment(payment_intent)
    if not invoice_id:
        return None
    record = db.session.scalar(
        select(InvoiceRecord).where(InvoiceRecord.stripe_invoice_id == invoice_id, InvoiceRecord.team_id == team.id)
    )
    if record is not None:
        db.session.flush()
        found = list(
            db.session.scalars(select(PaymentReversal).where(PaymentReversal.payment_intent == payment_intent))
        )
        refunded = max([r.amount_cents for r in found if r.kind == "refund"], default=0)
        record.status = _status(record.amount_cents, found, refunded)
    return invoice_id


def _funds(dispute: Json, event_type: str) -> tuple[bool, bool]:
    """(withdrawn, reinstated): from the event's type, or the dispute's balance transactions."""
    amounts = [
        int(bt.get("amount") or 0) if isinstance(bt, dict) else 0 for bt in dispute.get("balance_transactions") or []
    ]
    reinstated = event_type == "charge.dispute.funds_reinstated" or any(amount > 0 for amount in amounts)
    withdrawn = reinstated or event_type == "charge.dispute.funds_withdrawn" or any(a < 0 for a in amounts)
    return withdrawn, reinstated


def dispute_changed(dispute: Json, event_type: str) -> None:
    """Any ``charge.dispute.*`` event: record its stage and money movement, then settle the payment."""
    charge = dispute.get("charge")
    if isinstance(charge, str):
        charge = gateway.retrieve_charge(charge)  # a dispute names no customer; its charge does
    if not charge:
        raise Ignored(f"dispute {dispute.get('id')}: its charge is unknown")
    payment_intent = dispute.get("payment_intent") or charge.get("payment_intent")
    if not payment_intent:
        raise Ignored(f"dispute {dispute.get('id')} has no payment intent")
    team = team_for(charge.get("customer"), None)
    reversal = _reversal(team, payment_intent, "dispute", dispute["id"])
    reversal.amount_cents = int(dispute.get("amount") or 0)
    status = dispute.get("status")
    if DISPUTE_STAGES.get(status, 0) >= DISPUTE_STAGES.get(reversal.status or "", 0):
        reversal.status = status
    withdrawn, reinstated = _funds(dispute, event_type)
    reversal.funds_withdrawn = bool(reversal.funds_withdrawn) or withdrawn
    reversal.funds_reinstated = bool(reversal.funds_reinstated) or reinstated
    settle(team.id, payment_intent)
    _settle_invoice(team, payment_intent)


def settle(team_id: int, payment_intent: str | None) -> None:
    """Move the purchase's clawed-back credits to what its reversals say; nothing yet without a purchase.

    The caller holds the team's lock (``team_for``), so the purchase and its reversals change one at a time.
    """
    purchase = (
        db.session.scalar(select(Purchase).where(Purchase.stripe_payment_intent_id == payment_intent))
        if payment_intent
        else None
    )
    if purchase is None or purchase.team_id != team_id:
        return  # kept: fulfilment settles it when the checkout arrives
    db.session.flush()
    found = list(db.session.scalars(select(PaymentReversal).where(PaymentReversal.payment_intent == payment_intent)))
    # One charge per payment intent: its cumulative refund is the largest figure on record.
    refunded = max([r.amount_cents for r in found if r.kind == "refund"], default=0)
    disputed = sum(
        r.amount_cents for r in found if r.kind == "dispute" and r.funds_withdrawn and not r.funds_reinstated
    )
    money_back = min(purchase.amount_cents, refunded + disputed)
    target = purchase.credits * money_back // purchase.amount_cents if purchase.amount_cents else 0
    meta = {"refunded_cents": refunded, "money_back_cents": money_back, "payment_intent": payment_intent}
    if target > purchase.clawback_target:
        purchase.reversal_seq += 1
        receipt = credits.clawback(
            team_id,
            purchase.stripe_checkout_session_id,
            target - purchase.clawback_target,
            key=f"reversal:{purchase.id}:{purchase.reversal_seq}",
            actor=STRIPE,
            description="Refund or dispute: purchased credits taken back",
            meta=meta,
        )
        purchase.clawed_back += -receipt.amount
    elif target < purchase.clawback_target:
        give_back = purchase.clawed_back - min(purchase.clawed_back, target)
        if give_back:
            purchase.reversal_seq += 1
            credits.grant(
                team_id,
                give_back,
                source="purchase",  # the pack's own credits, back where they were
                key=f"reversal:{purchase.id}:{purchase.reversal_seq}",
                reference=purchase.stripe_checkout_session_id,  # so a later clawback can reach these too
                actor=STRIPE,
                description="Dispute won: credits reinstated",
                meta=meta,
            )
            purchase.clawed_back -= give_back
    purchase.clawback_target = target
    purchase.refunded_cents = refunded
    purchase.status = _status(purchase.amount_cents, found, refunded)


def _status(amount_cents: int, found: list[PaymentReversal], refunded: int) -> str:
    disputes = [r for r in found if r.kind == "dispute"]
    if any(r.status == "lost" for r in disputes):
        return "dispute_lost"
    if any(r.status in ("needs_response", "under_review") for r in disputes):
        return "disputed"
    if refunded >= amount_cents:
        return "refunded"
    return "partially_refunded" if refunded else "paid"
