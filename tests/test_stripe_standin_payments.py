"""The stand-in's off-session PaymentIntents behave as Stripe's do, through the real SDK (no app code):
test cards by their last four, a decline as a 402 ``CardError`` carrying the PaymentIntent, the same
answer for the same idempotency key, 3-D Secure by a redirect on an on-session confirmation."""

from __future__ import annotations

import pytest
import stripe

from tests import stripe_standin
from tests.stripe_factories import make_customer
from tests.stripe_standin import StripeStandIn
from tests.stripe_standin_payments import authenticate, make_payment_method

standin = stripe_standin.standin  # the fixture


@pytest.fixture
def client(standin: StripeStandIn) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_x", base_addresses={"api": standin.url}, max_network_retries=0)


def charge(client: stripe.StripeClient, customer: str, method: str, key: str) -> stripe.PaymentIntent:
    params = {"amount": 500, "currency": "usd", "customer": customer, "payment_method": method}
    params |= {"confirm": True, "off_session": True, "payment_method_types": ["card"]}
    return client.v1.payment_intents.create(params=params, options={"idempotency_key": key})  # type: ignore[arg-type]


def saved(standin: StripeStandIn, last4: str) -> tuple[str, str]:
    customer = standin.put(make_customer(email="a@example.com"))["id"]
    return customer, standin.put(make_payment_method(customer, last4))["id"]


def test_a_good_card_pays_off_session_with_a_charge_and_its_receipt(standin, client) -> None:
    customer, method = saved(standin, "4242")
    pi = charge(client, customer, method, "k1")
    assert (pi.status, pi.amount_received) == ("succeeded", 500)
    charge_obj = client.v1.charges.retrieve(pi.latest_charge)
    assert charge_obj.payment_intent == pi.id and charge_obj.receipt_url.startswith("https://pay.stripe.com/")


def test_a_decline_is_a_card_error_carrying_the_payment_intent_and_replays_for_its_key(standin, client) -> None:
    customer, method = saved(standin, "9995")
    with pytest.raises(stripe.CardError) as first:
        charge(client, customer, method, "k1")
    error = first.value.json_body["error"]
    assert (first.value.http_status, error["code"], error["decline_code"]) == (
        402,
        "card_declined",
        "insufficient_funds",
    )
    assert error["payment_intent"]["status"] == "requires_payment_method"
    with pytest.raises(stripe.CardError) as again:
        charge(client, customer, method, "k1")
    assert again.value.json_body["error"]["payment_intent"]["id"] == error["payment_intent"]["id"]
    assert len({r.response.get("error", {}).get("payment_intent", {}).get("id") for r in standin.requests}) == 1


def test_authentication_required_off_session_then_a_redirect_on_session(standin, client) -> None:
    customer, method = saved(standin, "3184")
    with pytest.raises(stripe.CardError) as declined:
        charge(client, customer, method, "k1")
    pi = declined.value.json_body["error"]["payment_intent"]
    assert (declined.value.code, pi["status"]) == ("authentication_required", "requires_action")
    confirmed = client.v1.payment_intents.confirm(pi["id"], params={"return_url": "https://example.com/back"})
    assert confirmed.next_action.type == "redirect_to_url"
    assert authenticate(standin, pi["id"])["status"] == "succeeded"
    assert client.v1.payment_intents.retrieve(pi["id"]).status == "succeeded"


def test_a_card_of_another_customer_is_refused(standin, client) -> None:
    _customer, method = saved(standin, "4242")
    other = standin.put(make_customer(email="b@example.com"))["id"]
    with pytest.raises(stripe.InvalidRequestError):
        charge(client, other, method, "k1")
