"""The stand-in's PaymentIntents and PaymentMethods, as Stripe runs off-session payments on a saved card.

Saved cards behave as Stripe's test cards do (docs.stripe.com/testing), told apart by their last four digits:
``4242`` and ``3155`` (authenticated when saved) pay off-session; ``9995`` is declined ``insufficient_funds``;
``0341`` attaches but every charge is declined; ``3184`` wants 3-D Secure on every payment, which off-session
is ``authentication_required``. ``POST /v1/payment_intents`` with ``confirm=true`` charges at once: a decline
answers 402 with a ``card_error`` carrying the PaymentIntent (the SDK raises ``CardError``), which stays stored
(``requires_payment_method``, or ``requires_action`` for authentication, with ``last_payment_error``).
Confirming again with a ``return_url`` answers ``next_action.redirect_to_url``; ``authenticate`` plays the
customer on Stripe's 3-D Secure page. Tests build the events (``payment_intent.succeeded`` …) from the stored
objects and deliver them in whatever order they want.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.stripe_factories import _base, make_charge
from tests.stripe_wire import Json, StripeApiError, _missing, _required, _to_bool, _to_int, deep_merge, new_id

DECLINES = {
    "9995": ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "0341": ("card_declined", "generic_decline", "Your card was declined."),
}
AUTHENTICATE_ALWAYS = {"3184"}


def make_payment_method(customer: str | None, last4: str = "4242", **overrides: Any) -> Json:
    obj = _base("payment_method", "pm_", customer=customer, type="card")
    obj["card"].update(last4=last4, brand="visa", display_brand="visa", wallet=None)
    return deep_merge(obj, overrides)


def _payment_intent(standin: Any, params: Json) -> Json:
    amount = _to_int(_required(params, "amount"), 0)
    if not amount or amount < 50:
        raise StripeApiError(400, "Amount must be at least $0.50 usd", code="amount_too_small", param="amount")
    obj = _base(
        "payment_intent",
        "pi_",
        amount=amount,
        currency=_required(params, "currency"),
        customer=params.get("customer"),
        payment_method=params.get("payment_method"),
        description=params.get("description"),
        metadata=dict(params.get("metadata") or {}),
        status="requires_payment_method" if not params.get("payment_method") else "requires_confirmation",
        amount_received=0,
        latest_charge=None,
        last_payment_error=None,
        next_action=None,
        canceled_at=None,
        processing=None,
        transfer_data=None,
        setup_future_usage=None,
    )
    obj["client_secret"] = f"{obj['id']}_secret_{new_id('', 25)}"
    return obj


def _card_error(pi: Json, method: Json, code: str, decline_code: str | None, message: str) -> StripeApiError:
    error = StripeApiError(402, message, type_="card_error", code=code)
    error.body["error"].update(
        decline_code=decline_code, payment_intent=copy.deepcopy(pi), payment_method=copy.deepcopy(method)
    )
    return error


def _charge(standin: Any, pi: Json, method: Json, *, off_session: bool) -> Json:
    last4 = method["card"]["last4"]
    pi["payment_method"] = method["id"]
    if last4 in DECLINES:
        code, decline_code, message = DECLINES[last4]
        pi.update(status="requires_payment_method", last_payment_error={"type": "card_error", "code": code,
                  "decline_code": decline_code, "message": message, "payment_method": method})  # fmt: skip
        standin.put(pi)
        raise _card_error(pi, method, code, decline_code, message)
    if off_session and last4 in AUTHENTICATE_ALWAYS:
        message = "Your card was declined. This transaction requires authentication."
        pi.update(
            status="requires_action",
            next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}},
            last_payment_error={"type": "card_error", "code": "authentication_required",
                                "decline_code": "authentication_required", "message": message},
        )  # fmt: skip
        standin.put(pi)
        raise _card_error(pi, method, "authentication_required", "authentication_required", message)
    return _succeed(standin, pi)


def _succeed(standin: Any, pi: Json) -> Json:
    charge = make_charge(pi["id"], pi["amount"], customer=pi.get("customer"), currency=pi["currency"])
    charge["receipt_url"] = f"https://pay.stripe.com/receipts/payment/{charge['id']}"
    standin.put(charge)
    pi.update(status="succeeded", amount_received=pi["amount"], latest_charge=charge["id"], next_action=None,
              last_payment_error=None)  # fmt: skip
    return standin.put(pi)


def _method_for(standin: Any, pi: Json, method_id: str) -> Json:
    method = standin.objects.get(method_id)
    if method is None or method.get("object") != "payment_method":
        raise _missing("payment_method", method_id, param="payment_method", status=400)
    if pi.get("customer") and method.get("customer") != pi["customer"]:
        raise StripeApiError(
            400,
            f"The provided PaymentMethod {method_id} does not belong to the Customer {pi['customer']}.",
            param="payment_method",
        )
    return method


def create_payment_intent(standin: Any, params: Json) -> Json:
    pi = _payment_intent(standin, params)
    if params.get("off_session") is not None and not _to_bool(params.get("confirm")):
        raise StripeApiError(400, "You can only pass in `off_session` when `confirm` is true.", param="off_session")
    if not _to_bool(params.get("confirm")):
        return standin._render(standin.put(pi), params)
    method = _method_for(standin, pi, _required(params, "payment_method"))
    return standin._render(_charge(standin, pi, method, off_session=bool(_to_bool(params.get("off_session")))), params)


def confirm_payment_intent(standin: Any, params: Json, pi_id: str) -> Json:
    pi = standin._require("payment_intent", pi_id)
    if pi["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
        raise StripeApiError(
            400,
            f"This PaymentIntent's status is {pi['status']}, so it cannot be confirmed.",
            code="payment_intent_unexpected_state",
        )
    method = _method_for(standin, pi, params.get("payment_method") or pi.get("payment_method") or "")
    if method["card"]["last4"] in AUTHENTICATE_ALWAYS and params.get("return_url"):
        pi.update(
            status="requires_action",
            payment_method=method["id"],
            last_payment_error=None,
            next_action={"type": "redirect_to_url", "redirect_to_url": {
                "url": f"{standin.url}/3ds/{pi_id}", "return_url": params["return_url"]}},
        )  # fmt: skip
        return standin._render(standin.put(pi), params)
    return standin._render(_charge(standin, pi, method, off_session=False), params)


def authenticate(standin: Any, pi_id: str, *, success: bool = True) -> Json:
    """The customer on Stripe's 3-D Secure page: the PaymentIntent succeeds, or fails authentication."""
    with standin.lock:
        pi = standin._require("payment_intent", pi_id)
        if success:
            return copy.deepcopy(_succeed(standin, pi))
        pi.update(status="requires_payment_method", next_action=None, last_payment_error={
            "type": "card_error", "code": "payment_intent_authentication_failure",
            "message": "The provided PaymentMethod has failed authentication."})  # fmt: skip
        return copy.deepcopy(standin.put(pi))
