"""Tests of the Stripe stand-in and webhook helpers themselves, through the real stripe SDK (no app code)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import stripe

from tests import stripe_standin
from tests.stripe_events import make_event, sign, signed_request
from tests.stripe_standin import (
    StripeStandIn,
    decode_form,
    deep_merge,
    make_charge,
    make_customer,
    make_dispute,
    make_invoice,
    make_subscription,
)

SECRET = "whsec_test_standin"
standin = stripe_standin.standin  # the fixture


@pytest.fixture
def client(standin: StripeStandIn) -> stripe.StripeClient:
    return stripe.StripeClient(api_key="sk_test_x", base_addresses={"api": standin.url})


def test_decode_form_nests_like_stripe() -> None:
    body = (
        "mode=payment&metadata[team_id]=3&metadata[0]=zero&expand[0]=line_items&expand[1]=customer"
        "&line_items[0][price_data][unit_amount]=500&line_items[0][price_data][product_data][name]=A+b"
        "&line_items[0][quantity]=2&line_items[1][price]=price_1&lookup_keys[]=x&lookup_keys[]=y&empty="
    )
    assert decode_form(body) == {
        "mode": "payment",
        "metadata": {"team_id": "3", "0": "zero"},
        "expand": ["line_items", "customer"],
        "line_items": [
            {"price_data": {"unit_amount": "500", "product_data": {"name": "A b"}}, "quantity": "2"},
            {"price": "price_1"},
        ],
        "lookup_keys": ["x", "y"],
        "empty": "",
    }
    assert decode_form(b"") == {}


def test_deep_merge_merges_dicts_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [2]}, "e": {"f": 1}}) == {"a": {"b": 1, "c": [2]}, "d": 1, "e": {"f": 1}}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 1}


def test_customer_and_checkout_session_through_the_sdk(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "a@example.com", "metadata": {"team_id": "3"}})
    assert customer.id.startswith("cus_") and customer.email == "a@example.com"
    assert customer.metadata["team_id"] == "3"

    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "customer": customer.id,
            "client_reference_id": "team-3",
            "success_url": "http://app.test/ok?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://app.test/cancel",
            "metadata": {"team_id": "3", "pack": "small"},
            "line_items": [
                {
                    "quantity": 2,
                    "price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "500 credits"}},
                }
            ],
        },
        options={"idempotency_key": "k1"},
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"{standin.url}/pay/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_total, session.amount_subtotal, session.currency) == (1000, 1000, "usd")
    assert session.customer == customer.id and session.client_reference_id == "team-3"
    assert session.metadata.to_dict() == {"team_id": "3", "pack": "small"}

    rec = standin.last("POST", "/v1/checkout/sessions")
    assert rec.params["mode"] == "payment"
    assert rec.params["metadata"] == {"team_id": "3", "pack": "small"}
    assert rec.params["line_items"] == [
        {
            "quantity": "2",
            "price_data": {"currency": "usd", "unit_amount": "500", "product_data": {"name": "500 credits"}},
        }
    ]
    assert rec.header("Idempotency-Key") == rec.headers["Idempotency-Key"] == "k1"
    assert rec.header("Authorization") == "Bearer sk_test_x"
    assert rec.header("Stripe-Version") == stripe.api_version
    assert rec.status == 200 and rec.response["id"] == session.id

    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.status == "open" and again.payment_intent is None

    done = standin.complete_checkout(session.id)
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    after = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent", "line_items"]})
    assert (after.status, after.payment_status) == ("complete", "paid")
    assert after.payment_intent.status == "succeeded" and after.payment_intent.amount == 1000
    assert after.line_items.data[0].quantity == 2
    assert after.customer_details.email == "a@example.com"


def test_idempotency_key_replays_and_rejects_different_params(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    first = client.v1.customers.create(params={"email": "x@example.com"}, options={"idempotency_key": "same"})
    second = client.v1.customers.create(params={"email": "x@example.com"}, options={"idempotency_key": "same"})
    assert first.id == second.id
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "y@example.com"}, options={"idempotency_key": "same"})
    assert len([o for o in standin.objects.values() if o["object"] == "customer"]) == 1


def test_subscription_checkout_completes_with_subscription_and_invoice(
    standin: StripeStandIn, client: stripe.StripeClient
) -> None:
    product = client.v1.products.create(params={"id": "plan_pro", "name": "Pro"})
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 2900,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
        }
    )
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "customer_email": "b@example.com",
            "subscription_data": {"metadata": {"team_id": "7", "plan": "pro"}},
            "success_url": "http://app.test/ok",
            "cancel_url": "http://app.test/cancel",
        }
    )
    assert session.amount_total == 2900 and session.customer is None

    done = standin.complete_checkout(session.id)
    sub = client.v1.subscriptions.retrieve(done["subscription"], params={"expand": ["latest_invoice"]})
    item = sub["items"].data[0]
    assert sub.status == "active" and sub.customer == done["customer"] == session_customer(standin, done)
    assert sub.metadata.to_dict() == {"team_id": "7", "plan": "pro"}
    assert item.price.id == price.id and item.current_period_end - item.current_period_start == 30 * 86400
    invoice = sub.latest_invoice
    assert invoice.id == done["invoice"] and invoice.billing_reason == "subscription_create"
    assert invoice.parent.subscription_details.subscription == sub.id
    assert invoice.lines.data[0].pricing.price_details.price == price.id
    assert invoice.lines.data[0].period.end == item.current_period_end


def session_customer(standin: StripeStandIn, session: dict) -> str:
    customer = standin.get(session["customer"])
    assert customer is not None and customer["email"] == "b@example.com"
    return customer["id"]


def test_subscription_mode_needs_a_recurring_price(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError, match="recurring price"):
        client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {"currency": "usd", "unit_amount": 100, "product_data": {"name": "x"}},
                    }
                ],
            }
        )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(params={"mode": "payment", "line_items": [{"price": "price_nope"}]})
    assert info.value.code == "resource_missing" and info.value.http_status == 400


def test_catalog_sync_endpoints(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Credits", "metadata": {"code": "credits"}})
    product = client.v1.products.update(product.id, params={"description": "Buy credits", "metadata": {"v": "2"}})
    assert product.metadata.to_dict() == {"code": "credits", "v": "2"}
    assert client.v1.products.retrieve(product.id).description == "Buy credits"

    old = client.v1.prices.create(
        params={"product": product.id, "unit_amount": 500, "currency": "usd", "lookup_key": "credits_500"}
    )
    assert old.type == "one_time" and old.recurring is None and old.unit_amount_decimal == Decimal("500")
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key"):
        client.v1.prices.create(
            params={"product": product.id, "unit_amount": 600, "currency": "usd", "lookup_key": "credits_500"}
        )
    new = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 600,
            "currency": "usd",
            "lookup_key": "credits_500",
            "transfer_lookup_key": True,
        }
    )
    found = client.v1.prices.list(params={"lookup_keys": ["credits_500", "other"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [new.id] and found.data[0].product.name == "Credits"
    assert standin.last("GET", "/v1/prices").params["lookup_keys"] == ["credits_500", "other"]

    archived = client.v1.prices.update(old.id, params={"active": False})
    assert archived.active is False and archived.lookup_key is None
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: unit_amount"):
        client.v1.prices.update(new.id, params={"unit_amount": 700})  # type: ignore[typeddict-unknown-key]


def test_billing_portal_session(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    customer = standin.put(make_customer(email="c@example.com"))
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": customer["id"], "return_url": "http://app.test/billing"}
    )
    assert portal.customer == customer["id"] and portal.return_url == "http://app.test/billing"
    assert portal.url == f"{standin.url}/portal/{portal.id}"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing_portal.sessions.create(params={"customer": "cus_missing"})


def test_factories_put_objects_the_sdk_can_read(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    start, end = 1_760_000_000, 1_762_592_000
    sub = standin.put(make_subscription("cus_1", "price_pro", "past_due", start, end, metadata={"plan": "pro"}))
    got = client.v1.subscriptions.retrieve(sub["id"])
    assert got.status == "past_due" and got.metadata["plan"] == "pro" and got.cancel_at_period_end is False
    assert got["items"].data[0].current_period_start == start and got["items"].data[0].price.id == "price_pro"

    inv = standin.put(make_invoice("cus_1", sub["id"], 2900, start, end, price_id="price_pro"))
    got_inv = client.v1.invoices.retrieve(inv["id"])
    assert got_inv.parent.subscription_details.subscription == sub["id"]
    assert (got_inv.amount_paid, got_inv.status, got_inv.billing_reason) == (2900, "paid", "subscription_cycle")
    assert got_inv.lines.data[0].period.start == start and got_inv.lines.data[0].pricing.type == "price_details"

    charge = standin.put(make_charge("pi_1", 1000, 400, customer="cus_1"))
    dispute = standin.put(make_dispute(charge["id"], "pi_1", 1000, "lost"))
    got_charge = client.v1.charges.retrieve(charge["id"])
    assert (got_charge.amount_refunded, got_charge.refunded, got_charge.payment_intent) == (400, False, "pi_1")
    assert client.v1.disputes.retrieve(dispute["id"]).status == "lost"
    assert make_charge("pi_2", 1000, 1000)["refunded"] is True
    overridden = make_subscription("cus_1", "price_x", items={"total_count": 1}, livemode=True)
    assert overridden["livemode"] is True and overridden["items"]["data"][0]["price"]["id"] == "price_x"


def test_unknown_objects_and_urls_are_stripe_shaped_404s(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert info.value.code == "resource_missing" and info.value.http_status == 404
    assert "cs_test_nope" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError, match="Unrecognized request URL"):
        client.v1.coupons.retrieve("co_1")
    assert standin.last("GET", "/v1/coupons").status == 404
    with pytest.raises(LookupError):
        standin.last("POST", "/v1/refunds")


def test_fail_next_gives_api_error_then_recovers(standin: StripeStandIn, client: stripe.StripeClient) -> None:
    standin.fail_next("POST", "/v1/checkout/sessions")
    params = {
        "mode": "payment",
        "line_items": [
            {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 100, "product_data": {"name": "x"}}}
        ],
    }
    with pytest.raises(stripe.APIError) as info:
        client.v1.checkout.sessions.create(params=params)
    assert info.value.http_status == 500 and info.value.error.type == "api_error"
    assert client.v1.checkout.sessions.create(params=params).status == "open"

    retrying = stripe.StripeClient(api_key="sk_test_x", base_addresses={"api": standin.url}, max_network_retries=1)
    standin.fail_next("POST", "/v1/customers", 503)
    assert retrying.v1.customers.create(params={"email": "r@example.com"}).email == "r@example.com"
    attempts = standin.find("POST", "/v1/customers")
    assert [a.status for a in attempts] == [503, 200]
    assert attempts[0].header("Idempotency-Key") == attempts[1].header("Idempotency-Key")

    standin.fail_next("GET", "/v1/customers", 429, code="rate_limit")
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.retrieve("cus_x")


def test_signed_event_verifies_with_the_sdk() -> None:
    session = {"id": "cs_test_1", "object": "checkout.session", "metadata": {"team_id": "3"}}
    event = make_event("checkout.session.completed", session)
    assert event["id"].startswith("evt_") and event["object"] == "event" and event["livemode"] is False
    assert event["data"] == {"object": session} and event["api_version"] == stripe.api_version
    assert abs(event["created"] - time.time()) < 5 and set(event["request"]) == {"id", "idempotency_key"}

    body, headers = signed_request(event, SECRET)
    verified = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], SECRET, tolerance=300)
    assert verified.type == "checkout.session.completed" and verified.data.object.metadata["team_id"] == "3"

    tampered = body.replace(b'"3"', b'"4"')
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, headers["Stripe-Signature"], SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_other", tolerance=300)
    stale = sign(body, SECRET, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(body, stale, SECRET, tolerance=300)


def test_event_previous_attributes_and_fixed_fields() -> None:
    event = make_event(
        "customer.subscription.updated",
        {"id": "sub_1", "status": "active"},
        event_id="evt_1",
        created=123,
        previous_attributes={"status": "past_due"},
        api_version="2025-01-01",
    )
    assert (event["id"], event["created"], event["api_version"]) == ("evt_1", 123, "2025-01-01")
    assert event["data"]["previous_attributes"] == {"status": "past_due"}
    body, headers = signed_request(event, SECRET, timestamp=1_700_000_000)
    assert json.loads(body) == event and headers["Stripe-Signature"].startswith("t=1700000000,v1=")
