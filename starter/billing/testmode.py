"""Test mode: a stand-in for Stripe, so the app runs with no Stripe account (``BILLING_TEST_MODE=true``).

``TestModeGateway`` is the second implementation of the gateway's interface. It keeps the objects
Stripe would keep (sessions, subscriptions, invoices) in ``test_mode_objects`` and answers the same
calls, so "retrieve the latest object" works here as it does against Stripe. Paying on our checkout
page ("Test mode — no card is charged") or acting in the test portal changes those objects the way
Stripe does (``../shared/stripe/BEHAVIOUR.md``) and returns the signed events Stripe would send;
the blueprint delivers them to the very webhook code Stripe's deliveries reach.

How it follows Stripe: the portal changes the subscription item's *price*, never metadata; an
upgrade bills prorations and restarts the period (``billing_cycle_anchor=now``), its proration
line first; a downgrade waits for the period end; a failed renewal leaves the subscription past due.
A yearly price bills a year; monthly ↔ yearly follows the upgrade/downgrade rules (to yearly now,
to monthly at the year's end). Meter events are kept (one per identifier, as Stripe counts them)
and a renewal bills the metered item for the events of the period that ended.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import stripe
from flask import current_app, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select

from .. import catalog
from ..extensions import db
from ..models import Team, TestModeObject
from ..periods import add_months
from . import shapes, testmode_cards
from .errors import BillingError
from .gateway import Gateway

Json = dict[str, Any]
SignedEvent = tuple[bytes, str]


def save(obj: Json) -> Json:
    stored = db.session.get(TestModeObject, obj["id"])
    if stored is None:
        stored = TestModeObject(id=obj["id"], object=obj["object"], customer=obj.get("customer"), payload=obj)
        db.session.add(stored)
    stored.payload = json.loads(json.dumps(obj))  # a new value, so the JSON column sees the change
    db.session.flush()
    return obj


def load(object_id: str | None) -> Json | None:
    stored = db.session.get(TestModeObject, object_id) if object_id else None
    return json.loads(json.dumps(stored.payload)) if stored is not None else None


class TestModeGateway(Gateway):
    test_mode = True

    def create_customer(self, team: Team, email: str) -> str:
        return f"cus_local_{team.id}"

    def create_checkout(self, params: Json, idempotency_key: str) -> str:
        # Like Stripe's idempotency: the same key (a retried click) gives the same session.
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        token = _serializer().dumps({"session_id": f"cs_local_{digest}", "params": params})
        return url_for("billing.test_checkout", token=token)

    def retrieve_checkout_session(self, session_id: str) -> Json | None:
        return load(session_id)

    def create_portal(self, customer_id: str, return_url: str) -> str:
        return url_for("billing.test_portal")

    def list_subscriptions(self, customer_id: str) -> list[Json]:
        rows = db.session.scalars(
            select(TestModeObject)
            .where(TestModeObject.object == "subscription", TestModeObject.customer == customer_id)
            .order_by(TestModeObject.created_at.desc(), TestModeObject.id.desc())
        )
        return [json.loads(json.dumps(row.payload)) for row in rows]

    def retrieve_price(self, price_id: str) -> Json | None:
        if not price_id.startswith("price_local_"):
            return None
        code = price_id.removeprefix("price_local_")
        if code.startswith("overage_"):
            plan = catalog.plan(code.removeprefix("overage_"))
            return shapes.overage_price(plan) if plan and plan.has_overage else None
        interval = "year" if code.endswith("_yearly") else "month"
        plan = catalog.plan(code.removesuffix("_yearly"))
        if plan is None or (interval == "year" and not plan.sold_yearly):
            return None
        return shapes.price(plan, interval)

    def find_price(self, lookup_key: str) -> str | None:
        code = lookup_key.removeprefix("overage_")
        plan = catalog.plan(code) if lookup_key.startswith("overage_") else None
        return shapes.overage_price(plan)["id"] if plan and plan.has_overage else None

    def report_meter_event(self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int):
        # Like Stripe, an identifier counts once: a retried report changes nothing.
        object_id = f"mtrevt_{hashlib.sha256(identifier.encode()).hexdigest()[:32]}"
        if load(object_id) is None:
            event = {
                "id": object_id,
                "object": "billing.meter_event",
                "customer": customer_id,
                "event_name": event_name,
                "identifier": identifier,
                "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                "timestamp": timestamp,
                "created": int(time.time()),
                "livemode": False,
            }
            save(event)

    def invoice_of_payment(self, payment_intent: str) -> str | None:
        return None  # test mode has no refunds of invoices

    def set_cancel_at_period_end(self, subscription_id: str, cancel: bool) -> Json:
        """Like ``POST /v1/subscriptions/<id>``: the flag changes, ``customer.subscription.updated`` is queued."""
        sub = load(subscription_id)
        if sub is None or sub["status"] in ("canceled", "incomplete_expired"):
            raise BillingError("This team has no subscription to change.")
        _set_cancel_at_period_end(sub, cancel)
        testmode_cards.queue([shapes.event("customer.subscription.updated", save(sub))])
        return sub

    def retrieve_charge(self, charge_id: str) -> Json | None:
        return load(charge_id)

    def list_invoice_lines(self, invoice_id: str) -> list[Json]:
        return ((load(invoice_id) or {}).get("lines") or {}).get("data") or []

    def create_payment_intent(self, params: Json, idempotency_key: str) -> Json:
        return testmode_cards.charge_off_session(params, idempotency_key)

    def confirm_payment_intent(self, payment_intent_id: str, params: Json, idempotency_key: str) -> Json:
        token = _serializer().dumps({"payment_intent": payment_intent_id, "return_url": params.get("return_url")})
        url = url_for("payments.test_authenticate", token=token)
        return testmode_cards.confirm_on_session(payment_intent_id, params, url)

    def retrieve_payment_intent(self, payment_intent_id: str) -> Json | None:
        return load(payment_intent_id)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="test-mode-checkout")


def load_checkout(token: str) -> Json | None:
    """The checkout a test-mode link stands for; None if the link was tampered with."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    return data if isinstance(data, dict) and "params" in data else None


def sign(events: list[Json]) -> list[SignedEvent]:
    """Each event as Stripe would POST it: the JSON body and its ``Stripe-Signature`` header."""
    secret = current_app.config["STRIPE_WEBHOOK_SECRET"]
    signed = []
    for event in events:
        payload = json.dumps(event)
        signed.append((payload.encode(), stripe.WebhookSignature.generate_signature_header(payload, secret)))
    return signed


def _period(start: datetime, interval: str = "month") -> tuple[int, int]:
    return int(start.timestamp()), int(add_months(start, 12 if interval == "year" else 1).timestamp())


def _interval(price: Json) -> str:
    return (price.get("recurring") or {}).get("interval") or "month"


def metered_usage(customer: str, start: int, end: int) -> int:
    """What the Billing Meter summed for ``customer`` over [start, end): the credits a renewal bills."""
    rows = db.session.scalars(
        select(TestModeObject).where(
            TestModeObject.object == "billing.meter_event", TestModeObject.customer == customer
        )
    )
    return sum(
        int(row.payload["payload"]["value"])
        for row in rows
        if row.payload["event_name"] == catalog.OVERAGE_METER_EVENT and start <= row.payload["timestamp"] < end
    )


def load_authentication(token: str) -> Json | None:
    """The PaymentIntent a test 3-D Secure link stands for; None if the link was tampered with."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    return data if isinstance(data, dict) and "payment_intent" in data else None


def pay(checkout: Json, card_number: str | None = None) -> tuple[str, list[SignedEvent]]:
    """Complete a test checkout with a test card: (the success URL, the events to deliver).

    The card decides, as Stripe's test cards do (``testmode_cards``): a declining card raises
    ``BillingError`` and nothing happens; a card saved for later (``setup_future_usage``, ``mode=setup``,
    a subscription's card) is attached to the customer (``payment_method.attached``)."""
    params, session_id = checkout["params"], checkout["session_id"]
    success_url = params["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
    if (load(session_id) or {}).get("status") == "complete":
        return success_url, []  # paid already (a double submit): like Stripe, never a second subscription
    chosen = testmode_cards.card(card_number)
    decline = chosen.setup_decline if params["mode"] == "setup" else chosen.checkout_decline
    if decline:
        raise BillingError(f"{testmode_cards.decline_message(decline)} ({decline}, test card …{chosen.last4})")
    saves = params["mode"] in ("setup", "subscription") or (params.get("payment_intent_data") or {}).get(
        "setup_future_usage"
    )
    attached = []
    if saves:
        method = save(testmode_cards.payment_method(params["customer"], chosen.number))
        attached = [shapes.event("payment_method.attached", method)]
    if params["mode"] == "setup":
        session = shapes.checkout_session(params, session_id, paid=True)
        session.update(payment_status="no_payment_required", setup_intent=shapes.new_id("seti"))
        return success_url, sign([*attached, shapes.event("checkout.session.completed", save(session))])
    if params["mode"] == "payment":
        session = shapes.checkout_session(params, session_id, paid=True, payment_intent=f"pi_{session_id[3:]}")
        events = [*attached, shapes.event("checkout.session.completed", save(session))]
        return success_url, sign(events)
    plan = catalog.PLANS[params["metadata"]["code"]]
    interval = params["metadata"].get("interval", "month")
    start, end = _period(datetime.now(UTC), interval)
    metered = any(str(item.get("price", "")).startswith("price_local_overage_") for item in params["line_items"])
    sub = shapes.subscription(
        shapes.new_id("sub"),
        params["customer"],
        plan,
        start,
        end,
        metadata=dict(params["subscription_data"]["metadata"]),
        interval=interval,
        overage=metered,
    )
    sub["status"] = "incomplete"
    created = shapes.event("customer.subscription.created", sub)
    line = shapes.line(sub, sub["items"]["data"][0]["price"], plan.price_for(interval), start, end, proration=False)
    invoice = save(shapes.invoice(sub, [line], "subscription_create"))
    sub.update(status="active", latest_invoice=invoice["id"])
    session = shapes.checkout_session(params, session_id, paid=True, subscription=sub["id"], invoice=invoice["id"])
    events = [
        *attached,
        created,
        shapes.event("customer.subscription.updated", save(sub)),
        shapes.event("invoice.paid", invoice),
        shapes.event("checkout.session.completed", save(session)),
    ]
    return success_url, sign(events)


def _subscription_of(team: Team) -> Json:
    sub = load(team.stripe_subscription_id)
    if sub is None or sub["status"] in ("canceled", "incomplete_expired"):
        raise BillingError("This team has no subscription to manage.")
    return sub


def portal_action(team: Team, action: str, plan_code: str | None = None) -> list[SignedEvent]:
    """What the test portal does to the subscription, and the events Stripe would send for it."""
    sub = _subscription_of(team)
    if action == "cancel_at_period_end":
        _set_cancel_at_period_end(sub, True)
    elif action == "resume":
        _set_cancel_at_period_end(sub, False)
    elif action == "cancel_now":
        sub.update(status="canceled", cancel_at_period_end=False, canceled_at=int(time.time()))
        return sign([shapes.event("customer.subscription.deleted", save(sub))])
    elif action == "change_plan":
        return sign(_change_plan(sub, plan_code))
    elif action == "switch_interval":
        return sign(_switch_interval(sub))
    elif action == "renew":
        return sign(_renew(sub, paid=True))
    elif action == "renew_failed":
        return sign(_renew(sub, paid=False))
    elif action == "retry_payment":
        return sign(_retry(sub))
    else:
        raise BillingError("Unknown action.")
    return sign([shapes.event("customer.subscription.updated", save(sub))])


def _set_cancel_at_period_end(sub: Json, cancel: bool) -> None:
    """As Stripe has it: cancelling at the period end sets ``cancel_at`` to the period's end; resuming clears both."""
    end = sub["items"]["data"][0].get("current_period_end")
    sub.update(cancel_at_period_end=cancel, cancel_at=end if cancel else None)


def _change_plan(sub: Json, plan_code: str | None) -> list[Json]:
    plan = catalog.plan(plan_code or "")
    item = sub["items"]["data"][0]
    old_price = item["price"]
    if plan is None or plan.is_free:
        raise BillingError("Choose a paid plan.")
    interval = _interval(old_price)
    if interval == "year" and not plan.sold_yearly:
        raise BillingError(f"The {plan.name} plan is not sold yearly.")
    if old_price["id"] == shapes.price(plan, interval)["id"]:
        sub.pop("pending_price", None)  # choosing the current plan again cancels a scheduled downgrade
        return [shapes.event("customer.subscription.updated", save(sub))]
    if plan.price_for(interval) < old_price["unit_amount"]:
        # A downgrade waits for the period end (the portal's schedule); nothing else changes now.
        sub["pending_price"] = shapes.price(plan, interval)
        return [shapes.event("customer.subscription.updated", save(sub))]
    return _bill_change_now(sub, shapes.price(plan, interval))


def _switch_interval(sub: Json) -> list[Json]:
    """Monthly → yearly bills the year now (like an upgrade); yearly → monthly waits for the year's end."""
    item = sub["items"]["data"][0]
    plan = catalog.plan(item["price"]["product"]["metadata"]["plan_code"])
    if plan is None or not plan.sold_yearly:
        raise BillingError("This plan is not sold yearly.")
    if _interval(item["price"]) == "year":
        sub["pending_price"] = shapes.price(plan, "month")
        return [shapes.event("customer.subscription.updated", save(sub))]
    # Stripe bills every item on one interval: the metered monthly overage item leaves the subscription,
    # its usage so far billed on the change's invoice.
    metered = sub["items"]["data"][1:]
    sub["items"]["data"] = [item]
    return _bill_change_now(sub, shapes.price(plan, "year"), metered=metered)


def _bill_change_now(sub: Json, new_price: Json, *, metered: list[Json] | None = None) -> list[Json]:
    item = sub["items"]["data"][0]
    old_price = item["price"]
    # An upgrade bills at once: credit for the unused time on the old price, then a full new period;
    # the cycle restarts, so the metered usage of the cut-short period is billed on this invoice too.
    now = int(time.time())
    cut_short = sub["items"]["data"][1:] if metered is None else metered
    # Up to the change; from its second on, usage belongs to the new period (billed at its end).
    usage = _metered_lines(sub, cut_short, item["current_period_start"], now)
    unused = -round(
        old_price["unit_amount"]
        * max(item["current_period_end"] - now, 0)
        / max(item["current_period_end"] - item["current_period_start"], 1)
    )
    start, end = _period(datetime.fromtimestamp(now, UTC), _interval(new_price))
    credit = shapes.line(sub, old_price, unused, now, item["current_period_end"], proration=True)
    item.update(price=new_price, current_period_start=start, current_period_end=end)
    sub.pop("pending_price", None)
    full = shapes.line(sub, item["price"], new_price["unit_amount"], start, end, proration=False)
    for each in sub["items"]["data"][1:]:
        each.update(current_period_start=start, current_period_end=end)
    invoice = save(shapes.invoice(sub, [credit, full, *usage], "subscription_update"))
    sub["latest_invoice"] = invoice["id"]
    return [shapes.event("customer.subscription.updated", save(sub)), shapes.event("invoice.paid", invoice)]


def _renew(sub: Json, *, paid: bool) -> list[Json]:
    """The period end: a cancelling subscription ends; otherwise the next period is invoiced."""
    item = sub["items"]["data"][0]
    if sub.get("cancel_at_period_end"):
        sub.update(status="canceled", canceled_at=int(time.time()))
        return [shapes.event("customer.subscription.deleted", save(sub))]
    ended = (item["current_period_start"], item["current_period_end"])
    if sub.get("pending_price"):
        item["price"] = sub.pop("pending_price")
    start, end = _period(datetime.fromtimestamp(item["current_period_end"], UTC), _interval(item["price"]))
    for each in sub["items"]["data"]:
        each.update(current_period_start=start, current_period_end=end)
    lines = [shapes.line(sub, item["price"], item["price"]["unit_amount"], start, end, proration=False)]
    lines += _metered_lines(sub, sub["items"]["data"][1:], *ended)
    invoice = save(shapes.invoice(sub, lines, "subscription_cycle", paid=paid))
    sub["latest_invoice"] = invoice["id"]
    sub["status"] = "active" if paid else "past_due"
    kind = "invoice.paid" if paid else "invoice.payment_failed"
    return [shapes.event("customer.subscription.updated", save(sub)), shapes.event(kind, invoice)]


def _metered_lines(sub: Json, metered: list[Json], start: int, end: int) -> list[Json]:
    """Metered usage is billed in arrears: one line per metered item for what the meter summed from
    ``start`` to ``end`` (the period that ended, or was cut short by a change)."""
    lines = []
    for each in metered:
        used = metered_usage(sub["customer"], start, end)
        plan = catalog.plan(each["price"]["product"]["metadata"]["overage_plan_code"])
        if used and plan is not None:
            lines.append(
                shapes.line(
                    sub,
                    each["price"],
                    plan.overage_cents(used),
                    start,
                    end,
                    proration=False,
                    item=each,
                    quantity=used,
                    description=f"Overage: {used:,} credits at {each['price']['unit_amount_decimal']} cents each",
                )
            )
    return lines


def _retry(sub: Json) -> list[Json]:
    invoice = load(sub.get("latest_invoice"))
    if invoice is None or invoice["status"] != "open":
        raise BillingError("There is no failed payment to retry.")
    invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
    sub["status"] = "active"
    return [shapes.event("invoice.paid", save(invoice)), shapes.event("customer.subscription.updated", save(sub))]
