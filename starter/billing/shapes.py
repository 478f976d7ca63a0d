"""Stripe-shaped objects and events as the current API sends them, for the built-in test mode.

Only the fields the app and a careful reader rely on; the shapes follow Stripe's published
fixtures (a subscription's period on ``items.data[]``, an invoice's subscription under ``parent``).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import stripe

Json = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_local_{secrets.token_hex(10)}"


def checkout_session(
    params: Json,
    session_id: str,
    *,
    paid: bool,
    subscription: str | None = None,
    invoice: str | None = None,
    payment_intent: str | None = None,
) -> Json:
    amount = sum(
        item["price_data"]["unit_amount"] * item.get("quantity", 1)
        for item in params["line_items"]
        if "price_data" in item
    )
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": params["mode"],
        "status": "complete" if paid else "open",
        "payment_status": "paid" if paid else "unpaid",
        "amount_subtotal": amount,
        "amount_total": amount,
        "currency": "usd",
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
    plan_code: str,
    unit_amount: int,
    start: int,
    end: int,
    *,
    metadata: Json,
    status: str = "active",
    cancel_at_period_end: bool = False,
) -> Json:
    item = {
        "id": new_id("si"),
        "object": "subscription_item",
        "subscription": sub_id,
        "current_period_start": start,
        "current_period_end": end,
        "quantity": 1,
        "price": {
            "id": f"price_local_{plan_code}",
            "object": "price",
            "lookup_key": f"plan_{plan_code}",
            "unit_amount": unit_amount,
            "currency": "usd",
            "recurring": {"interval": "month", "interval_count": 1},
        },
    }
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "metadata": metadata,
        "items": {"object": "list", "data": [item], "has_more": False},
        "livemode": False,
        "created": int(time.time()),
    }


def invoice(customer: str, sub: Json, amount_paid: int, billing_reason: str) -> Json:
    item = sub["items"]["data"][0]
    return {
        "id": new_id("in"),
        "object": "invoice",
        "customer": customer,
        "status": "paid",
        "billing_reason": billing_reason,
        "amount_due": amount_paid,
        "amount_paid": amount_paid,
        "currency": "usd",
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"subscription": sub["id"], "metadata": dict(sub["metadata"])},
        },
        "lines": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": new_id("il"),
                    "object": "line_item",
                    "amount": amount_paid,
                    "currency": "usd",
                    "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": sub["id"], "subscription_item": item["id"]},
                    },
                    "pricing": {"type": "price_details", "price_details": {"price": item["price"]["id"]}},
                }
            ],
        },
        "livemode": False,
        "created": int(time.time()),
    }


def event(event_type: str, obj: Json, event_id: str | None = None) -> Json:
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "type": event_type,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }
