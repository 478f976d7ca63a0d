"""``flask billing sync``: Stripe products and prices from the catalog, idempotent by lookup key.

Each pack and paid plan gets a price with the lookup key ``pack_<code>`` or ``plan_<code>``, a
plan sold yearly a yearly one (``plan_<code>_yearly``), and a plan with overage a **metered** price
(``overage_<code>``: per credit, ``recurring.usage_type=metered``) on the Billing Meter whose event
name is ``catalog.OVERAGE_METER_EVENT`` (created once, found again by that name). A price that
already matches is left alone; one whose amount changed is replaced (a new price takes the lookup
key over, since Stripe prices are immutable). It prints the STRIPE_PRICE_* lines that make
Checkout use these prices instead of inline ``price_data``.
"""

from __future__ import annotations

from typing import Any

from .. import catalog
from .gateway import StripeGateway, current
from .shapes import unit_amount_decimal

Json = dict[str, Any]


def _wanted() -> list[tuple[str, str, str, int, str | None]]:
    """(kind, code, product name, unit amount, interval or None) for everything sold at a fixed price."""
    items: list[tuple[str, str, str, int, str | None]] = [
        ("pack", p.code, p.product_name, p.price_cents, None) for p in catalog.PACKS.values()
    ]
    for plan in catalog.PLANS.values():
        if not plan.is_free:
            items.append(("plan", plan.code, plan.product_name, plan.monthly_price_cents, "month"))
        if plan.sold_yearly:
            items.append(("plan", f"{plan.code}_yearly", plan.product_name, plan.price_for("year"), "year"))
    return items


def _meter(stripe: Any) -> Any:
    """The overage Billing Meter: found by its event name (meters are immutable), else created."""
    for meter in stripe.billing.meters.list(params={"status": "active", "limit": 100}).data:
        if meter.event_name == catalog.OVERAGE_METER_EVENT:
            return meter
    return stripe.billing.meters.create(
        params={
            "display_name": "Overage credits",
            "event_name": catalog.OVERAGE_METER_EVENT,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        },
        options={"idempotency_key": f"sync:meter:{catalog.OVERAGE_METER_EVENT}"},
    )


def _sync_overage(stripe: Any, plan: catalog.Plan, meter_id: str) -> tuple[str, str, str]:
    """The plan's metered overage price on the meter: per credit, so Stripe bills the credits the meter sums."""
    lookup_key = f"overage_{plan.code}"
    decimal = unit_amount_decimal(plan)
    existing = stripe.prices.list(params={"lookup_keys": [lookup_key]}).data
    price = existing[0].to_dict() if existing else None
    recurring = (price or {}).get("recurring") or {}
    if (
        price is not None
        and price["currency"] == catalog.CURRENCY
        and recurring.get("usage_type") == "metered"
        and recurring.get("meter") == meter_id
        and str(price["unit_amount_decimal"]) == decimal
    ):
        return f"STRIPE_PRICE_OVERAGE_{plan.code.upper()}", price["id"], "unchanged"
    attempt = f"{lookup_key}:{decimal}:{meter_id}:{price['id'] if price is not None else 'new'}"
    product = stripe.products.create(
        params={
            "name": f"{plan.name} plan: overage credits",
            "unit_label": "credit",
            "metadata": {"kind": "overage", "overage_plan_code": plan.code},
        },
        options={"idempotency_key": f"sync:product:{attempt}"},
    )
    created = stripe.prices.create(
        params={
            "product": product.id,
            "currency": catalog.CURRENCY,
            "unit_amount_decimal": decimal,
            "billing_scheme": "per_unit",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
            "lookup_key": lookup_key,
            "transfer_lookup_key": True,
            "metadata": {"kind": "overage", "code": plan.code},
        },
        options={"idempotency_key": f"sync:price:{attempt}"},
    )
    if price is not None:
        stripe.prices.update(price["id"], params={"active": False})
    return f"STRIPE_PRICE_OVERAGE_{plan.code.upper()}", created.id, "updated" if price else "created"


def sync() -> list[tuple[str, str, str]]:
    """Create or update products and prices; returns (setting name, price id, what happened)."""
    gateway = current()
    if not isinstance(gateway, StripeGateway):
        raise RuntimeError("flask billing sync needs STRIPE_SECRET_KEY")
    stripe = gateway.client.v1
    results = []
    for kind, code, name, amount, interval in _wanted():
        recurring = interval is not None
        lookup_key = f"{kind}_{code}"
        existing = stripe.prices.list(params={"lookup_keys": [lookup_key], "expand": ["data.product"]}).data
        price = existing[0] if existing else None
        matches = (
            price is not None
            and price.unit_amount == amount
            and price.currency == catalog.CURRENCY
            and bool(price.recurring) == recurring
            and (not recurring or price.recurring.interval == interval)
        )
        if matches:
            product_id = price.product if isinstance(price.product, str) else price.product.id
            stripe.products.update(product_id, params={"name": name})
            results.append((f"STRIPE_PRICE_{kind.upper()}_{code.upper()}", price.id, "unchanged"))
            continue
        plan_code = code.removesuffix("_yearly")
        # Keyed on the price being replaced too: a key reused within Stripe's 24 hours would replay an
        # earlier create (say, after the amount changed and changed back) instead of creating the price.
        attempt = f"{lookup_key}:{amount}:{price.id if price is not None else 'new'}"
        product = stripe.products.create(
            params={"name": name, "metadata": {"kind": kind, "code": plan_code, f"{kind}_code": plan_code}},
            options={"idempotency_key": f"sync:product:{attempt}"},
        )
        params: Json = {
            "product": product.id,
            "currency": catalog.CURRENCY,
            "unit_amount": amount,
            "lookup_key": lookup_key,
            "transfer_lookup_key": True,
            "metadata": {"kind": kind, "code": plan_code},
        }
        if recurring:
            params["recurring"] = {"interval": interval}
        created = stripe.prices.create(params=params, options={"idempotency_key": f"sync:price:{attempt}"})
        if price is not None:
            stripe.prices.update(price.id, params={"active": False})
        results.append((f"STRIPE_PRICE_{kind.upper()}_{code.upper()}", created.id, "updated" if price else "created"))
    overage_plans = [plan for plan in catalog.PLANS.values() if plan.has_overage]
    if overage_plans:
        meter = _meter(stripe)
        results += [_sync_overage(stripe, plan, meter.id) for plan in overage_plans]
    return results
