"""Test mode's cards and PaymentIntents: Stripe's test card numbers, behaving as Stripe documents them.

- ``4242 4242 4242 4242`` pays, on-session and off-session.
- ``4000 0000 0000 9995`` is declined, ``insufficient_funds``, every time (nothing is saved).
- ``4000 0000 0000 0341`` can be saved (``mode=setup``), but every charge of it is declined.
- ``4000 0027 6000 3184`` asks for 3-D Secure on every payment: off-session that is
  ``authentication_required``; the customer finishes on-session (our test authentication page).
- ``4000 0025 0000 3155`` asks for 3-D Secure once, when it is saved; later off-session payments pass.

An off-session PaymentIntent answers as Stripe does: ``succeeded``, or a ``CardError``-like
``PaymentDeclined`` carrying the PaymentIntent (``requires_payment_method`` after a decline,
``requires_action`` when authentication is required), and queues the events Stripe would send
(``payment_intent.succeeded`` / ``payment_intent.payment_failed`` / ``payment_intent.requires_action``),
which go through the webhook code. The same idempotency key answers the same PaymentIntent.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app

from .. import catalog
from . import shapes
from .errors import BillingError, PaymentDeclined

Json = dict[str, Any]
QUEUE = "testmode.queue"


@dataclass(frozen=True)
class TestCard:
    number: str
    label: str
    checkout_decline: str | None = None  # decline code when paying at Checkout
    setup_decline: str | None = None  # decline code when saving it (mode=setup)
    off_session: str = "succeeds"  # succeeds, authenticate, or a decline code

    @property
    def last4(self) -> str:
        return self.number[-4:]


TEST_CARDS = {
    card.number: card
    for card in (
        TestCard("4242424242424242", "4242 4242 4242 4242: succeeds"),
        TestCard(
            "4000000000009995",
            "4000 0000 0000 9995: declined, insufficient funds",
            checkout_decline="insufficient_funds",
            setup_decline="insufficient_funds",
            off_session="insufficient_funds",
        ),
        TestCard(
            "4000000000000341",
            "4000 0000 0000 0341: can be saved, later charges are declined",
            checkout_decline="card_declined",
            off_session="card_declined",
        ),
        TestCard("4000002760003184", "4000 0027 6000 3184: 3-D Secure on every payment", off_session="authenticate"),
        TestCard("4000002500003155", "4000 0025 0000 3155: 3-D Secure once, when saved"),
    )
}
DEFAULT_CARD = "4242424242424242"
DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "card_declined": "Your card was declined.",
}


def card(number: str | None) -> TestCard:
    return TEST_CARDS.get(number or "", TEST_CARDS[DEFAULT_CARD])


def decline_message(code: str) -> str:
    return DECLINE_MESSAGES.get(code, "Your card was declined.")


def payment_method(customer: str, number: str) -> Json:
    """A card PaymentMethod attached to ``customer`` (what Checkout saves); the number itself is not kept,
    only which test card it was, as Stripe's test payment methods (``pm_card_…``) are."""
    test_card = card(number)
    return {
        "id": shapes.new_id("pm"),
        "object": "payment_method",
        "type": "card",
        "customer": customer,
        "card": {"brand": "visa", "last4": test_card.last4, "exp_month": 12, "exp_year": 2034, "funding": "credit"},
        "metadata": {"test_card": test_card.number},
        "livemode": False,
        "created": int(time.time()),
    }


def queue(events: list[Json]) -> None:
    from .testmode import sign

    current_app.extensions.setdefault(QUEUE, []).extend(sign(events))


def take_queued() -> list[tuple[bytes, str]]:
    return current_app.extensions.pop(QUEUE, [])


def _payment_intent(pi_id: str, params: Json, status: str) -> Json:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": int(params["amount"]),
        "amount_received": int(params["amount"]) if status == "succeeded" else 0,
        "currency": params.get("currency") or catalog.CURRENCY,
        "customer": params.get("customer"),
        "payment_method": params.get("payment_method"),
        "description": params.get("description"),
        "metadata": dict(params.get("metadata") or {}),
        "status": status,
        "last_payment_error": None,
        "next_action": None,
        "latest_charge": None,
        "client_secret": f"{pi_id}_secret_local",
        "livemode": False,
        "created": int(time.time()),
    }


def _decline(pi: Json, code: str, decline_code: str | None, message: str, status: str) -> PaymentDeclined:
    pi.update(status=status)
    pi["last_payment_error"] = {"type": "card_error", "code": code, "decline_code": decline_code, "message": message}
    return PaymentDeclined(message, code=code, decline_code=decline_code, payment_intent=pi)


def charge_off_session(params: Json, idempotency_key: str) -> Json:
    """``POST /v1/payment_intents`` with ``confirm=true, off_session=true`` on a saved card."""
    from .testmode import load, save

    pi_id = "pi_local_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    existing = load(pi_id)
    if existing is not None:  # Stripe's idempotency: the same key answers the first result again
        error = existing.get("last_payment_error")
        if error and existing["status"] in ("requires_payment_method", "requires_action"):
            raise PaymentDeclined(
                error["message"], code=error["code"], decline_code=error.get("decline_code"), payment_intent=existing
            )
        return existing
    method = load(params.get("payment_method"))
    if method is None or method.get("customer") != params.get("customer"):
        raise BillingError("No such payment method for this customer.")
    behaviour = card(method["metadata"].get("test_card")).off_session
    pi = _payment_intent(pi_id, params, "succeeded")
    if behaviour == "succeeds":
        pi["latest_charge"] = shapes.new_id("ch")
        save(pi)
        queue([shapes.event("payment_intent.succeeded", pi)])
        return pi
    if behaviour == "authenticate":
        declined = _decline(
            pi,
            "authentication_required",
            "authentication_required",
            "This payment requires authentication.",
            "requires_action",
        )
        pi["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {}}
        save(pi)
        queue([shapes.event("payment_intent.requires_action", pi)])
        raise declined
    declined = _decline(pi, "card_declined", behaviour, decline_message(behaviour), "requires_payment_method")
    save(pi)
    queue([shapes.event("payment_intent.payment_failed", pi)])
    raise declined


def confirm_on_session(pi_id: str, params: Json, authenticate_url: str) -> Json:
    """Confirm again with a ``return_url``: Stripe answers a redirect to its 3-D Secure page."""
    from .testmode import load, save

    pi = load(pi_id)
    if pi is None:
        raise BillingError("No such payment.")
    if pi["status"] in ("requires_action", "requires_payment_method"):
        pi.update(status="requires_action", last_payment_error=None)
        pi["next_action"] = {
            "type": "redirect_to_url",
            "redirect_to_url": {"url": authenticate_url, "return_url": params.get("return_url")},
        }
        save(pi)
    return pi


def authenticate(pi_id: str, complete: bool) -> Json | None:
    """The customer passed (or failed) 3-D Secure on the test page: the PaymentIntent and its event."""
    from .testmode import load, save

    pi = load(pi_id)
    if pi is None or pi["status"] != "requires_action":
        return pi
    pi["next_action"] = None
    if complete:
        pi.update(status="succeeded", amount_received=pi["amount"], latest_charge=shapes.new_id("ch"))
        queue([shapes.event("payment_intent.succeeded", save(pi))])
    else:
        message = "The customer did not complete authentication."
        _decline(pi, "payment_intent_authentication_failure", None, message, "requires_payment_method")
        queue([shapes.event("payment_intent.payment_failed", save(pi))])
    return pi
