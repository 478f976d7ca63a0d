"""``flask billing sync``: Stripe products and prices from the catalog, idempotent by lookup key.

Each pack and paid plan gets a price with the lookup key ``pack_<code>`` or ``plan_<code>``. A
price that already matches is left alone; one whose amount changed is replaced (a new price takes
the lookup key over, since Stripe prices are immutable). It prints the STRIPE_PRICE_* lines that
make Checkout use these prices instead of inline ``price_data``.
"""

from __future__ import annotations

from typing import Any

from .. import catalog
from .gateway import StripeGateway, current

Json = dict[str, Any]


def _wanted() -> list[tuple[str, str, str, int, bool]]:
    """(kind, code, product name, unit amount, recurring) for everything we sell."""
    items = [("pack", p.code, p.product_name, p.price_cents, False) for p in catalog.PACKS.values()]
    items += [
        ("plan", p.code, p.product_name, p.monthly_price_cents, True) for p in catalog.PLANS.values() if not p.is_free
    ]
    return items


def sync() -> list[tuple[str, str, str]]:
    """Create or update products and prices; returns (setting name, price id, what happened)."""
    gateway = current()
    if not isinstance(gateway, StripeGateway):
        raise RuntimeError("flask billing sync needs STRIPE_SECRET_KEY")
    stripe = gateway.client.v1
    results = []
    for kind, code, name, amount, recurring in _wanted():
        lookup_key = f"{kind}_{code}"
        existing = stripe.prices.list(params={"lookup_keys": [lookup_key], "expand": ["data.product"]}).data
        price = existing[0] if existing else None
        matches = (
            price is not None
            and price.unit_amount == amount
            and price.currency == catalog.CURRENCY
            and bool(price.recurring) == recurring
        )
        if matches:
            product_id = price.product if isinstance(price.product, str) else price.product.id
            stripe.products.update(product_id, params={"name": name})
            results.append((f"STRIPE_PRICE_{kind.upper()}_{code.upper()}", price.id, "unchanged"))
            continue
        # Keyed on the price being replaced too: a key reused within Stripe's 24 hours would replay an
        # earlier create (say, after the amount changed and changed back) instead of creating the price.
        attempt = f"{lookup_key}:{amount}:{price.id if price is not None else 'new'}"
        product = stripe.products.create(
            params={"name": name, "metadata": {"kind": kind, "code": code, f"{kind}_code": code}},
            options={"idempotency_key": f"sync:product:{attempt}"},
        )
        params: Json = {
            "product": product.id,
            "currency": catalog.CURRENCY,
            "unit_amount": amount,
            "lookup_key": lookup_key,
            "transfer_lookup_key": True,
            "metadata": {"kind": kind, "code": code},
        }
        if recurring:
            params["recurring"] = {"interval": "month"}
        created = stripe.prices.create(params=params, options={"idempotency_key": f"sync:price:{attempt}"})
        if price is not None:
            stripe.prices.update(price.id, params={"active": False})
        results.append((f"STRIPE_PRICE_{kind.upper()}_{code.upper()}", created.id, "updated" if price else "created"))
    return results
