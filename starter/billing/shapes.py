"""Stripe-shaped objects and events as the current API sends them, for the built-in test mode.

Only the fields the app and a careful reader rely on; the shapes follow Stripe's published
fixtures (a subscription's period on ``items.data[]``, an invoice's subscription under ``parent``,
line items with ``pricing`` and a ``proration`` flag).
"""

from __future__ import annotations

import copy
import secrets
import time
from decimal import Decimal
from typing import Any

import stripe

from .. import catalog

Json = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_local_{secrets.token_hex(10)}"


METER_ID = "mtr_local_overage"


def price(plan: catalog.Plan, interval: str = "month") -> Json:
    """A plan's recurring price, as ``flask billing sync`` makes them: lookup key and product metadata."""
    suffix = "_yearly" if interval == "year" else ""
    return {
        "id": f"price_local_{plan.code}{suffix}",
        "object": "price",
        "lookup_key": f"plan_{plan.code}{suffix}",
        "unit_amount": plan.price_for(interval),
        "currency": catalog.CURRENCY,
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed", "meter": None},
        "product": {
            "id": f"prod_local_{plan.code}",
            "object": "product",
            "name": plan.product_name,
            "metadata": {"plan_code": plan.code},
        },
    }


def unit_amount_decimal(plan: catalog.Plan) -> str:
    """The overage price per credit in cents, as Stripe writes a decimal unit amount ("0.12")."""
    return format((Decimal(plan.overage_cents_per_1000 or 0) / 1000).normalize(), "f")


def overage_price(plan: catalog.Plan) -> Json:
    """A plan's metered overage price: per credit, summed by the Billing Meter over the period."""
    return {
        "id": f"price_local_overage_{plan.code}",
        "object": "price",
        "lookup_key": f"overage_{plan.code}",
        "billing_scheme": "per_unit",
        "unit_amount": None,
        "unit_amount_decimal": unit_amount_decimal(plan),
        "currency": catalog.CURRENCY,
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered", "meter": METER_ID},
        "product": {
            "id": f"prod_local_overage_{plan.code}",
            "object": "product",
            "name": f"{plan.name} plan: overage credits",
            "metadata": {"overage_plan_code": plan.code},
        },
    }


def checkout_session(
    params: Json,
    session_id: str,
    *,
    paid: bool,
    subscription: str | None = None,
    invoice: str | None = None,
    payment_intent: str | None = None,
) -> Json:
    metadata = params.get("metadata") or {}
    entry = (
        catalog.pack(metadata.get("code", ""))
        if params["mode"] == "payment"
        else catalog.plan(metadata.get("code", ""))
    )
    # What the line items cost: inline price_data, or the catalog price a configured price id stands for.
    # A metered line (no quantity) costs nothing now: Stripe bills its usage at the period end.
    interval = metadata.get("interval", "month")

    def cost(item: Json) -> int:
        if "price_data" in item:
            return item["price_data"]["unit_amount"] * item.get("quantity", 1)
        if "quantity" not in item:
            return 0
        return entry.price_for(interval) if isinstance(entry, catalog.Plan) else getattr(entry, "price_cents", 0)

    amount = sum(cost(item) for item in params.get("line_items") or [])  # none in mode=setup
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": params["mode"],
        "status": "complete" if paid else "open",
        "payment_status": "paid" if paid else "unpaid",
        "amount_subtotal": amount,
        "amount_total": amount,
        "currency": catalog.CURRENCY,
        "customer": params["customer"],
        "client_reference_id": params.get("client_reference_id"),
        "metadata": dict(params.get("metadata", {})),
        "payment_intent": payment_intent,
        "subscription": subscription,
        "invoice": invoice,
        "success_url": params["success_url"],
        "cancel_url": params["cancel_url"],
        "livemode": False,
        "created": int(time.time()),
    }


def subscription(
    sub_id: str,
    customer: str,
    plan: catalog.Plan,
    start: int,
    end: int,
    *,
    metadata: Json,
    interval: str = "month",
    overage: bool = False,
) -> Json:
    item = {
        "id": new_id("si"),
        "object": "subscription_item",
        "subscription": sub_id,
        "current_period_start": start,
        "current_period_end": end,
        "quantity": 1,
        "price": price(plan, interval),
    }
    items = [item]
    if overage:  # metered: no quantity, Stripe bills what the meter summed over the period
        items.append({**item, "id": new_id("si"), "price": overage_price(plan)})
        del items[1]["quantity"]
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "cancel_at_period_end": False,
        "metadata": metadata,
        "items": {"object": "list", "data": items, "has_more": False},
        "latest_invoice": None,
        "livemode": False,
        "created": int(time.time()),
    }


def line(
    sub: Json,
    line_price: Json,
    amount: int,
    start: int,
    end: int,
    *,
    proration: bool,
    item: Json | None = None,
    quantity: int = 1,
    description: str | None = None,
) -> Json:
    """An invoice line of a subscription item; proration lines bill the unused or remaining time of a change."""
    item = item or sub["items"]["data"][0]
    return {
        "id": new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": catalog.CURRENCY,
        "description": description or ("Unused time on " if amount < 0 else "") + line_price["product"]["name"],
        "quantity": quantity,
        "period": {"start": start, "end": end},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {
                "subscription": sub["id"],
                "subscription_item": item["id"],
                "proration": proration,
            },
        },
        "pricing": {
            "type": "price_details",
            "price_details": {"price": line_price["id"], "product": line_price["product"]["id"]},
        },
    }


def invoice(sub: Json, lines: list[Json], billing_reason: str, *, paid: bool = True) -> Json:
    total = max(sum(entry["amount"] for entry in lines), 0)
    return {
        "id": new_id("in"),
        "object": "invoice",
        "customer": sub["customer"],
        "status": "paid" if paid else "open",
        "billing_reason": billing_reason,
        "amount_due": total,
        "amount_paid": total if paid else 0,
        "amount_remaining": 0 if paid else total,
        "currency": catalog.CURRENCY,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            # A snapshot of the subscription's metadata when the invoice was made: it goes stale.
            "subscription_details": {"subscription": sub["id"], "metadata": dict(sub["metadata"])},
        },
        "lines": {"object": "list", "has_more": False, "data": lines},
        "livemode": False,
        "created": int(time.time()),
    }


def event(event_type: str, obj: Json, event_id: str | None = None) -> Json:
    """An event carrying a snapshot of ``obj``: later changes to the object do not show in it."""
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "type": event_type,
        "data": {"object": copy.deepcopy(obj)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }
