"""What a paid checkout grants: a pack once, or, for a subscription, the state Stripe has now.

``fulfil_checkout`` is shared by the webhook and the success page. Grants are keyed on the Stripe
object (``checkout:<session id>``), so whichever arrives first grants and the other replays.
Refunds and disputes are in ``reversals``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .. import catalog, credits
from ..extensions import db
from ..models import Purchase
from . import receipts, reversals, subscriptions
from .customers import team_for
from .errors import Ignored

log = logging.getLogger(__name__)
Json = dict[str, Any]
STRIPE = credits.Actor("stripe")


@dataclass(frozen=True)
class Fulfilment:
    status: str  # granted, already_granted, processing, subscription, card_saved
    credits: int = 0
    team_id: int | None = None


def fulfil_checkout(session: Json, notes: subscriptions.Notes | None = None) -> Fulfilment:
    """Grant a paid pack exactly once (and apply reversals waiting for it); a subscription checkout syncs."""
    metadata = session.get("metadata") or {}
    team = team_for(session.get("customer"), metadata)
    if session.get("mode") == "subscription":
        # The session is a snapshot; the subscription's state is read from Stripe, like every other event.
        subscriptions.sync_customer(team, notes or subscriptions.Notes())
        return Fulfilment("subscription", team_id=team.id)
    if session.get("mode") == "setup":
        return Fulfilment("card_saved", team_id=team.id)  # payment_method.attached records the card
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
    # A refund or dispute Stripe delivered before this checkout is waiting: apply it now.
    reversals.settle(team.id, session.get("payment_intent"))
    receipts.email_receipt(team, f"{pack.name} credit pack", pack.price_cents, pack.total_credits, session["id"])
    log.info("Granted %s credits to team %s for %s", pack.total_credits, team.id, session["id"])
    return Fulfilment("granted", pack.total_credits, team.id)


def payment_failed(session: Json) -> None:
    """A delayed payment failed: nothing was granted, so nothing to undo; the stored event is the record."""
    log.info("Checkout %s: delayed payment failed", session.get("id"))
