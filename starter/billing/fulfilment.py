"""What a paid checkout grants, and what refunds and disputes take back.

``fulfil_checkout`` is shared by the webhook and the success page. Grants are keyed on the Stripe
object (``checkout:<session id>``), so whichever arrives first grants and the other replays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from .. import catalog, credits
from ..extensions import db
from ..models import LedgerEntry, Purchase, Team

log = logging.getLogger(__name__)
Json = dict[str, Any]
STRIPE = credits.Actor("stripe")


class Ignored(Exception):
    """An event that must change nothing (not ours, mismatched, stale); stored with this reason."""


@dataclass(frozen=True)
class Fulfilment:
    status: str  # granted, already_granted, processing, subscription
    credits: int = 0
    team_id: int | None = None


def team_for(customer_id: str | None, metadata: Json | None) -> Team:
    """The team a Stripe object belongs to: its customer must be the team named in its metadata."""
    team_ref = (metadata or {}).get("team_id")
    # Locked: every Stripe handler takes the team row before the ledger's balance row, the order the
    # monthly rollover takes them in, so the two never deadlock.
    team = (
        db.session.scalar(
            select(Team)
            .where(Team.stripe_customer_id == customer_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if customer_id
        else None
    )
    if team is None:
        raise Ignored(f"no team has customer {customer_id!r}")
    if team_ref is not None and str(team.id) != str(team_ref):
        raise Ignored(f"metadata names team {team_ref!r} but customer {customer_id} is team {team.id}")
    return team


def fulfil_checkout(session: Json) -> Fulfilment:
    """Grant a paid pack exactly once; a subscription checkout only links the subscription."""
    metadata = session.get("metadata") or {}
    team = team_for(session.get("customer"), metadata)
    if session.get("mode") == "subscription":
        if session.get("subscription") and not team.stripe_subscription_id:
            team.stripe_subscription_id = session["subscription"]
        return Fulfilment("subscription", team_id=team.id)
    if session.get("payment_status") != "paid":
        return Fulfilment("processing", team_id=team.id)  # a delayed method: async_payment_succeeded follows
    pack = catalog.pack(str(metadata.get("code")))
    if metadata.get("kind") != "pack" or pack is None:
        raise Ignored(f"unknown pack {metadata.get('code')!r}")
    if session.get("amount_total") != pack.price_cents or session.get("currency") != catalog.CURRENCY:
        raise Ignored(
            f"paid {session.get('amount_total')} {session.get('currency')} for {pack.code}, "
            f"which costs {pack.price_cents} {catalog.CURRENCY}"
        )
    receipt = credits.grant(
        team.id,
        pack.total_credits,
        source="purchase",
        key=f"checkout:{session['id']}",
        reference=session["id"],
        actor=STRIPE,
        description=f"{pack.name} purchased",
        meta={"pack": pack.code, "credits": pack.credits, "bonus": pack.bonus_credits, "session": session["id"]},
    )
    if receipt.replayed:
        return Fulfilment("already_granted", pack.total_credits, team.id)
    db.session.add(
        Purchase(
            team_id=team.id,
            pack_code=pack.code,
            credits=pack.total_credits,
            amount_cents=pack.price_cents,
            currency=catalog.CURRENCY,
            stripe_checkout_session_id=session["id"],
            stripe_payment_intent_id=session.get("payment_intent"),
            block_id=receipt.block_id,
        )
    )
    db.session.flush()
    log.info("Granted %s credits to team %s for %s", pack.total_credits, team.id, session["id"])
    return Fulfilment("granted", pack.total_credits, team.id)


def payment_failed(session: Json) -> None:
    """A delayed payment failed: nothing was granted, so nothing to undo; the stored event is the record."""
    log.info("Checkout %s: delayed payment failed", session.get("id"))


def _purchase_for(payment_intent: str | None) -> Purchase:
    purchase = (
        db.session.scalar(select(Purchase).where(Purchase.stripe_payment_intent_id == payment_intent).with_for_update())
        if payment_intent
        else None
    )
    if purchase is None:
        raise Ignored(f"no purchase for payment {payment_intent!r}")
    return purchase


def charge_refunded(charge: Json) -> None:
    """Claw back the credits of the refunded share of a purchase (cumulative, so retries and reorders are safe)."""
    purchase = _purchase_for(charge.get("payment_intent"))
    refunded = min(int(charge.get("amount_refunded") or 0), purchase.amount_cents)
    if refunded <= purchase.refunded_cents:
        return  # an older or repeated refund event: already accounted for
    share = purchase.credits * refunded // purchase.amount_cents
    already = purchase.credits * purchase.refunded_cents // purchase.amount_cents
    if share > already:
        credits.clawback(
            purchase.team_id,
            purchase.stripe_checkout_session_id,
            share - already,
            key=f"refund:{charge['id']}:{refunded}",
            actor=STRIPE,
            description="Refund: purchased credits taken back",
            meta={"charge": charge["id"], "refunded_cents": refunded},
        )
    purchase.refunded_cents = refunded
    purchase.status = "refunded" if refunded >= purchase.amount_cents else "partially_refunded"


def _dispute_key(dispute: Json) -> str:
    return f"dispute:{dispute['id']}"


def dispute_opened(dispute: Json) -> None:
    """Disputed funds are withdrawn when the dispute opens: take the purchase's credits back until it closes."""
    _hold_back_disputed(_purchase_for(dispute.get("payment_intent")), dispute)


def _hold_back_disputed(purchase: Purchase, dispute: Json) -> None:
    credits.clawback(
        purchase.team_id,
        purchase.stripe_checkout_session_id,
        purchase.credits,
        key=_dispute_key(dispute),
        actor=STRIPE,
        description="Dispute: purchased credits held back",
        meta={"dispute": dispute["id"]},
    )
    purchase.status = "disputed"


def dispute_closed(dispute: Json) -> None:
    """Lost: the clawback stands (made now if the opening event never came). Won: what was taken is reinstated."""
    purchase = _purchase_for(dispute.get("payment_intent"))
    if dispute.get("status") == "lost":
        _hold_back_disputed(purchase, dispute)  # same key: replays if the opening event already took them
        purchase.status = "dispute_lost"
        return
    if dispute.get("status") != "won":
        return
    taken = db.session.scalar(
        select(LedgerEntry.amount).where(
            LedgerEntry.team_id == purchase.team_id, LedgerEntry.idempotency_key == _dispute_key(dispute)
        )
    )
    if taken:
        credits.grant(
            purchase.team_id,
            -taken,
            source="refund",
            key=f"{_dispute_key(dispute)}:won",
            reference=purchase.stripe_checkout_session_id,
            actor=STRIPE,
            description="Dispute won: credits reinstated",
            meta={"dispute": dispute["id"]},
        )
    purchase.status = "paid"
