"""Stripe objects for tests, built from Stripe's published fixtures with the fields a test needs.

Today's shapes: a subscription's period on ``items.data[]``, an invoice's subscription under ``parent``.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.stripe_wire import (
    Json,
    _list_object,
    deep_merge,
    load_fixture,
    new_id,
    now,
)

# --------------------------------------------------------------------------------------- factories


def _base(kind: str, prefix: str, id_length: int = 24, **fields: Any) -> Json:
    obj = load_fixture(kind)
    obj.update(id=new_id(prefix, id_length), created=now(), livemode=False, metadata={})
    obj.update(fields)
    return obj


def make_customer(
    *, email: str | None = None, name: str | None = None, metadata: Json | None = None, **overrides: Any
) -> Json:
    obj = _base("customer", "cus_", 14, email=email, name=name, metadata=dict(metadata or {}), discount=None)
    return deep_merge(obj, overrides)


def make_product(name: str = "Credits", *, metadata: Json | None = None, **overrides: Any) -> Json:
    obj = _base(
        "product",
        "prod_",
        14,
        name=name,
        metadata=dict(metadata or {}),
        description=None,
        default_price=None,
        package_dimensions=None,
        type="service",
        updated=now(),
    )
    return deep_merge(obj, overrides)


def make_price(
    unit_amount: int | None = 2000,
    *,
    currency: str = "usd",
    product: str | None = None,
    lookup_key: str | None = None,
    interval: str | None = "month",
    interval_count: int = 1,
    metadata: Json | None = None,
    **overrides: Any,
) -> Json:
    recurring = (
        None
        if interval is None
        else {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "usage_type": "licensed",
            "trial_period_days": None,
        }
    )
    obj = _base(
        "price",
        "price_",
        24,
        unit_amount=unit_amount,
        currency=currency,
        unit_amount_decimal=None if unit_amount is None else str(unit_amount),
        product=product or new_id("prod_", 14),
        lookup_key=lookup_key,
        recurring=recurring,
        type="one_time" if recurring is None else "recurring",
        metadata=dict(metadata or {}),
        transform_quantity=None,
        custom_unit_amount=None,
    )
    return deep_merge(obj, overrides)


def make_checkout_session(**overrides: Any) -> Json:
    obj = _base(
        "checkout.session",
        "cs_test_",
        58,
        status="open",
        payment_status="unpaid",
        payment_intent=None,
        customer_details=None,
        expires_at=now() + 86400,
        shipping_cost=None,
        currency_conversion=None,
        collected_information=None,
        shipping_address_collection=None,
        after_expiration=None,
        payment_method_configuration_details=None,
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        custom_text={
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
    )
    obj["url"] = f"https://checkout.stripe.com/c/pay/{obj['id']}"
    return deep_merge(obj, overrides)


def _plan_for(price: Json) -> Json:
    recurring = price.get("recurring") or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": True,
        "amount": price.get("unit_amount"),
        "amount_decimal": price.get("unit_amount_decimal"),
        "billing_scheme": "per_unit",
        "created": price.get("created"),
        "currency": price.get("currency"),
        "interval": recurring.get("interval", "month"),
        "interval_count": recurring.get("interval_count", 1),
        "livemode": False,
        "metadata": {},
        "meter": None,
        "nickname": None,
        "product": price.get("product"),
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def make_subscription(
    customer: str,
    price_id: str | None = None,
    status: str = "active",
    period_start: int | None = None,
    period_end: int | None = None,
    *,
    metadata: Json | None = None,
    quantity: int = 1,
    price: Json | None = None,
    **overrides: Any,
) -> Json:
    """A subscription with one item; `current_period_start/end` live on `items.data[0]` (current API)."""
    start = period_start if period_start is not None else now()
    end = period_end if period_end is not None else start + 30 * 86400
    if price is None:
        price = make_price(**({"id": price_id} if price_id else {}))
    sub_id = new_id("sub_")
    item = _base(
        "subscription_item",
        "si_",
        14,
        subscription=sub_id,
        price=price,
        plan=_plan_for(price),
        quantity=quantity,
        current_period_start=start,
        current_period_end=end,
        created=start,
        discounts=[],
        tax_rates=[],
        billing_thresholds=None,
    )
    ended = status in ("canceled", "incomplete_expired")
    obj = _base(
        "subscription",
        "sub_",
        customer=customer,
        status=status,
        metadata=dict(metadata or {}),
        created=start,
        start_date=start,
        billing_cycle_anchor=start,
        billing_cycle_anchor_config=None,
        cancel_at=None,
        cancel_at_period_end=False,
        canceled_at=end if ended else None,
        ended_at=end if ended else None,
        trial_start=None,
        trial_end=None,
        pending_update=None,
        pause_collection=None,
        next_pending_invoice_item_invoice=None,
        latest_invoice=None,
        pending_invoice_item_interval=None,
        transfer_data=None,
        currency=price.get("currency", "usd"),
        billing_schedules=[],
        items=_list_object([item], f"/v1/subscription_items?subscription={sub_id}"),
    )
    obj["id"] = sub_id
    obj["items"]["total_count"] = 1
    return deep_merge(obj, overrides)


def make_invoice(
    customer: str,
    subscription_id: str | None,
    amount_paid: int,
    period_start: int,
    period_end: int,
    billing_reason: str = "subscription_cycle",
    *,
    status: str = "paid",
    price_id: str | None = None,
    subscription_item: str | None = None,
    currency: str = "usd",
    subscription_metadata: Json | None = None,
    **overrides: Any,
) -> Json:
    """An invoice naming its subscription under `parent.subscription_details.subscription`.

    `amount_paid` is the invoice amount; with a `status` other than "paid" it is due, not paid. The service
    period is on `lines.data[0].period`; like Stripe, the top-level `period_start/end` of a renewal invoice
    describe the *previous* period (ending at `period_start`), so do not read the period from there."""
    paid = status == "paid"
    inv_id = new_id("in_")
    previous = period_start
    if billing_reason == "subscription_cycle":
        previous = period_start - (period_end - period_start)
    line = load_fixture("invoice")["lines"]["data"][0]
    if subscription_id is None:
        line_parent: Json = {
            "type": "invoice_item_details",
            "subscription_item_details": None,
            "invoice_item_details": {
                "invoice_item": new_id("ii_"),
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
        }
    else:
        line_parent = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": subscription_item,
            },
        }
    line.update(
        id=new_id("il_"),
        invoice=inv_id,
        amount=amount_paid,
        subtotal=amount_paid,
        currency=currency,
        description="1 x Subscription",
        period={"start": period_start, "end": period_end},
        parent=line_parent,
        taxes=[],
        pretax_credit_amounts=[],
        pricing={
            "type": "price_details",
            "unit_amount_decimal": str(amount_paid),
            "price_details": {"price": price_id or new_id("price_"), "product": new_id("prod_", 14)},
        },
    )
    parent = (
        None
        if subscription_id is None
        else {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": dict(subscription_metadata or {}), "subscription": subscription_id},
        }
    )
    obj = _base(
        "invoice",
        "in_",
        customer=customer,
        status=status,
        billing_reason=billing_reason,
        currency=currency,
        created=period_start,
        effective_at=period_start,
        period_start=previous,
        period_end=period_start,
        amount_due=amount_paid,
        amount_paid=amount_paid if paid else 0,
        amount_remaining=0 if paid else amount_paid,
        subtotal=amount_paid,
        total=amount_paid,
        subtotal_excluding_tax=amount_paid,
        total_excluding_tax=amount_paid,
        amount_overpaid=0,
        attempted=paid,
        attempt_count=1 if paid else 0,
        due_date=None,
        next_payment_attempt=None,
        from_invoice=None,
        last_finalization_error=None,
        shipping_cost=None,
        parent=parent,
        webhooks_delivered_at=period_start,
        number=f"STANDIN-{secrets.randbelow(10**6):06d}",
        status_transitions={
            "finalized_at": period_start,
            "marked_uncollectible_at": None,
            "paid_at": period_start if paid else None,
            "voided_at": None,
        },
        lines={**_list_object([line], f"/v1/invoices/{inv_id}/lines"), "total_count": 1},
    )
    obj["id"] = inv_id
    return deep_merge(obj, overrides)


def make_payment_intent(
    amount: int,
    *,
    customer: str | None = None,
    status: str = "succeeded",
    latest_charge: str | None = None,
    currency: str = "usd",
    metadata: Json | None = None,
    **overrides: Any,
) -> Json:
    obj = _base(
        "payment_intent",
        "pi_",
        amount=amount,
        currency=currency,
        customer=customer,
        status=status,
        amount_received=amount if status == "succeeded" else 0,
        latest_charge=latest_charge,
        metadata=dict(metadata or {}),
        canceled_at=None,
        last_payment_error=None,
        next_action=None,
        processing=None,
        transfer_data=None,
    )
    obj["client_secret"] = f"{obj['id']}_secret_{new_id('', 25)}"
    return deep_merge(obj, overrides)


def make_charge(
    payment_intent: str | None,
    amount: int,
    amount_refunded: int = 0,
    refunded: bool | None = None,
    *,
    customer: str | None = None,
    currency: str = "usd",
    **overrides: Any,
) -> Json:
    obj = _base(
        "charge",
        "ch_",
        payment_intent=payment_intent,
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= amount if refunded is None else refunded,
        captured=True,
        paid=True,
        status="succeeded",
        disputed=False,
        customer=customer,
        currency=currency,
        description=None,
        source=None,
        transfer_data=None,
        balance_transaction=new_id("txn_"),
    )
    obj["refunds"] = _list_object([], f"/v1/charges/{obj['id']}/refunds")
    return deep_merge(obj, overrides)


def make_refund(
    charge: str, payment_intent: str | None, amount: int, status: str = "succeeded", **overrides: Any
) -> Json:
    obj = _base("refund", "re_", charge=charge, payment_intent=payment_intent, amount=amount, status=status)
    return deep_merge(obj, overrides)


def make_dispute(
    charge: str,
    payment_intent: str | None,
    amount: int,
    status: str = "needs_response",
    *,
    reason: str = "fraudulent",
    currency: str = "usd",
    **overrides: Any,
) -> Json:
    obj = _base(
        "dispute",
        "dp_",
        charge=charge,
        payment_intent=payment_intent,
        amount=amount,
        status=status,
        reason=reason,
        currency=currency,
        is_charge_refundable=False,
        evidence_details={
            "due_by": now() + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        },
    )
    return deep_merge(obj, overrides)


def make_invoice_line(
    invoice_id: str,
    price: Json,
    amount: int,
    period_start: int,
    period_end: int,
    *,
    subscription: str,
    subscription_item: str,
    proration: bool = False,
    credited_items: Json | None = None,
    description: str | None = None,
    quantity: int = 1,
) -> Json:
    """One line of a subscription invoice (today's shape: `parent.subscription_item_details`, `pricing`).

    A proration line comes from an invoice item (`subscription_item_details.invoice_item`) and says so with
    `proration: true`; a credit for unused time names what it credits in `proration_details.credited_items`."""
    line = load_fixture("invoice")["lines"]["data"][0]
    product = price.get("product")
    line.update(
        id=new_id("il_"),
        invoice=invoice_id,
        amount=amount,
        subtotal=amount,
        currency=price.get("currency", "usd"),
        description=description,
        discount_amounts=[],
        discounts=[],
        metadata={},
        period={"start": period_start, "end": period_end},
        quantity=quantity,
        subscription=None,
        taxes=[],
        pretax_credit_amounts=[],
        parent={
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": new_id("ii_") if proration else None,
                "proration": proration,
                "proration_details": {"credited_items": credited_items},
                "subscription": subscription,
                "subscription_item": subscription_item,
            },
        },
        pricing={
            "type": "price_details",
            "unit_amount_decimal": price.get("unit_amount_decimal"),
            "price_details": {
                "price": price["id"],
                "product": product["id"] if isinstance(product, dict) else product,
            },
        },
    )
    return line


def _fee(amount: int, currency: str) -> Json:
    return {
        "amount": amount,
        "application": None,
        "currency": currency,
        "description": "Dispute fee",
        "type": "stripe_fee",
    }


def make_balance_transaction(
    amount: int,
    *,
    source: str,
    description: str,
    reporting_category: str = "dispute",
    type_: str = "adjustment",
    fee: int = 0,
    currency: str = "usd",
    created: int | None = None,
) -> Json:
    """A balance transaction (fields of Stripe's `balance_transaction` fixture; it carries no metadata)."""
    at = now() if created is None else created
    return {
        "id": new_id("txn_"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": at,
        "balance_type": "payments",
        "created": at,
        "currency": currency,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": [_fee(fee, currency)] if fee else [],
        "net": amount - fee,
        "reporting_category": reporting_category,
        "source": source,
        "status": "available",
        "type": type_,
    }
