"""Stand-in behaviours for usage-based billing: Billing Meters, meter events, invoice payments.

As Stripe documents them (API reference, "Create a billing meter event"; the shapes of the published
fixtures `billing.meter` and `billing.meter_event`): a meter is found by its `event_name` (one active
meter per name); an event needs `event_name` and a `payload` with the customer and a numeric
`value`; an `identifier` is counted once, and a second event with it is refused with
`400 invalid_request_error "An event already exists with identifier …"` (not retryable), which is
what Stripe answers (langfuse/langfuse#16292 quotes it). `GET /v1/invoice_payments` finds the
invoice a payment intent paid (the basil API has no `charge.invoice`). Used by tests/stripe_standin.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.stripe_wire import Json, StripeApiError, _list_object, _required, load_fixture, new_id, now

if TYPE_CHECKING:
    from tests.stripe_standin import StripeStandIn


def create_meter(standin: StripeStandIn, params: Json) -> Json:
    event_name = _required(params, "event_name")
    for obj in standin.objects.values():
        if obj.get("object") == "billing.meter" and obj["event_name"] == event_name and obj["status"] == "active":
            raise StripeApiError(400, f"A meter with event_name {event_name} already exists.", param="event_name")
    meter = load_fixture("billing.meter")
    meter.update(
        id=new_id("mtr_", 24),
        created=now(),
        updated=now(),
        livemode=False,
        display_name=_required(params, "display_name"),
        event_name=event_name,
        default_aggregation={"formula": (params.get("default_aggregation") or {}).get("formula", "sum")},
        customer_mapping={
            "type": "by_id",
            "event_payload_key": (params.get("customer_mapping") or {}).get("event_payload_key", "stripe_customer_id"),
        },
        value_settings={"event_payload_key": (params.get("value_settings") or {}).get("event_payload_key", "value")},
    )
    return standin.put(meter)


def list_meters(standin: StripeStandIn, params: Json) -> Json:
    status = params.get("status")
    meters = [
        obj
        for obj in standin.objects.values()
        if obj.get("object") == "billing.meter" and (status is None or obj["status"] == status)
    ]
    return _list_object(meters, "/v1/billing/meters")


def create_meter_event(standin: StripeStandIn, params: Json) -> Json:
    event_name = _required(params, "event_name")
    payload = params.get("payload") or {}
    meter = next(
        (o for o in standin.objects.values() if o.get("object") == "billing.meter" and o["event_name"] == event_name),
        None,
    )
    customer_key = meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"
    value_key = meter["value_settings"]["event_payload_key"] if meter else "value"
    if not payload.get(customer_key):
        raise StripeApiError(400, f"Missing required param: payload[{customer_key}].", param=f"payload[{customer_key}]")
    try:
        float(payload.get(value_key, ""))
    except ValueError:
        raise StripeApiError(400, f"payload[{value_key}] must be a number.", param=f"payload[{value_key}]") from None
    identifier = params.get("identifier") or new_id("mev_", 20)
    if identifier in standin.meter_events:
        raise StripeApiError(400, f"An event already exists with identifier {identifier}.", param="identifier")
    timestamp = int(params.get("timestamp") or now())
    if timestamp < now() - 35 * 86400 or timestamp > now() + 300:
        raise StripeApiError(400, "The timestamp must be within the past 35 days.", param="timestamp")
    event = load_fixture("billing.meter_event")
    event.update(
        created=now(),
        event_name=event_name,
        identifier=identifier,
        livemode=False,
        payload={key: str(value) for key, value in payload.items()},
        timestamp=timestamp,
    )
    standin.meter_events[identifier] = event
    return event


def metered_total(standin: StripeStandIn, event_name: str, customer: str, start: int, end: int) -> int:
    """What the meter sums for `customer` over [start, end) (the quantity an invoice's metered line bills)."""
    return sum(
        int(float(event["payload"]["value"]))
        for event in standin.meter_events.values()
        if event["event_name"] == event_name
        and event["payload"].get("stripe_customer_id") == customer
        and start <= event["timestamp"] < end
    )


def list_invoice_payments(standin: StripeStandIn, params: Json) -> Json:
    payment = params.get("payment") or {}
    wanted = payment.get("payment_intent")
    found = [
        obj
        for obj in standin.objects.values()
        if obj.get("object") == "invoice_payment"
        and (params.get("invoice") in (None, obj["invoice"]))
        and (wanted is None or (obj.get("payment") or {}).get("payment_intent") == wanted)
    ]
    return _list_object(found, "/v1/invoice_payments")


def make_invoice_payment(invoice: str, payment_intent: str, amount: int) -> Json:
    """The basil link from an invoice to the payment intent that paid it."""
    obj = load_fixture("invoice_payment")
    obj.update(
        id=new_id("inpay_", 24),
        invoice=invoice,
        amount_paid=amount,
        amount_requested=amount,
        currency="usd",
        livemode=False,
        status="paid",
        created=now(),
        payment={"type": "payment_intent", "payment_intent": payment_intent},
    )
    return obj
