"""The one client of Stripe's API. Every create carries an idempotency key.

With no ``STRIPE_SECRET_KEY`` the calls go to ``testmode`` instead, which answers with objects of
the same shapes, so the rest of the app never asks which mode it is in.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import stripe
from flask import current_app

from .. import catalog
from ..extensions import db
from ..models import Team
from . import testmode
from .errors import BillingError

log = logging.getLogger(__name__)
Json = dict[str, Any]


def is_test_mode() -> bool:
    return bool(current_app.config["STRIPE_TEST_MODE"])


def client() -> stripe.StripeClient:
    config = current_app.config
    base = config.get("STRIPE_API_BASE")
    return stripe.StripeClient(
        config["STRIPE_SECRET_KEY"],
        base_addresses={"api": base} if base else None,
        max_network_retries=2,  # safe: every create below is idempotent
    )


def _call(description: str, function: Any, *args: Any, **kwargs: Any) -> Json:
    try:
        return function(*args, **kwargs).to_dict()
    except stripe.StripeError as error:
        log.warning("Stripe %s failed: %s", description, error)
        raise BillingError("Payments are unavailable right now. Please try again in a minute.") from error


def ensure_customer(team: Team, email: str) -> str:
    """The team's Stripe customer id, created on first use with the team id in its metadata."""
    if team.stripe_customer_id:
        return team.stripe_customer_id
    if is_test_mode():
        customer_id = testmode.customer_id(team.id)
    else:
        customer = _call(
            "customer create",
            client().v1.customers.create,
            params={"email": email, "name": team.name, "metadata": {"team_id": str(team.id)}},
            options={"idempotency_key": f"customer:team:{team.id}"},
        )
        customer_id = customer["id"]
    team.stripe_customer_id = customer_id
    db.session.flush()
    return customer_id


def price_id(kind: str, code: str, entry: catalog.Plan | catalog.Pack) -> str | None:
    """A configured Stripe price: STRIPE_PRICE_<KIND>_<CODE> in the environment, else the catalog's field."""
    return current_app.config.get(f"STRIPE_PRICE_{kind.upper()}_{code.upper()}") or entry.stripe_price_id


def _line_item(kind: str, code: str, entry: catalog.Plan | catalog.Pack, name: str, cents: int) -> Json:
    configured = price_id(kind, code, entry)
    if configured:
        return {"price": configured, "quantity": 1}
    price_data: Json = {"currency": catalog.CURRENCY, "unit_amount": cents, "product_data": {"name": name}}
    if kind == "plan":
        price_data["recurring"] = {"interval": "month"}
    return {"price_data": price_data, "quantity": 1}


def checkout_params(team: Team, customer_id: str, kind: str, code: str, user_id: int) -> Json:
    """The Checkout Session for a pack (``mode=payment``) or a plan (``mode=subscription``)."""
    base_url = current_app.config["BASE_URL"]
    metadata = {"team_id": str(team.id), "kind": kind, "code": code, "user_id": str(user_id)}
    params: Json = {
        "customer": customer_id,
        "client_reference_id": str(team.id),
        "metadata": metadata,
        "success_url": f"{base_url}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base_url}/billing/cancel",
    }
    if kind == "pack":
        pack = catalog.PACKS[code]
        params["mode"] = "payment"
        params["line_items"] = [_line_item("pack", code, pack, pack.product_name, pack.price_cents)]
        params["payment_intent_data"] = {"metadata": metadata}
    else:
        plan = catalog.PLANS[code]
        params["mode"] = "subscription"
        params["line_items"] = [
            _line_item(
                "plan",
                code,
                plan,
                plan.product_name,
                plan.monthly_price_cents,
            )
        ]
        params["subscription_data"] = {"metadata": {"team_id": str(team.id), "plan_code": code}}
    return params


def create_checkout(team: Team, email: str, kind: str, code: str, user_id: int, attempt: str) -> str:
    """Start Stripe Checkout; returns the URL to send the browser to.

    ``attempt`` makes the idempotency key: the same purchase click retried returns the same session.
    """
    customer_id = ensure_customer(team, email)
    params = checkout_params(team, customer_id, kind, code, user_id)
    if is_test_mode():
        return testmode.checkout_url(params)
    session = _call(
        "checkout create",
        client().v1.checkout.sessions.create,
        params=params,
        options={"idempotency_key": f"checkout:{team.id}:{kind}:{code}:{attempt}"},
    )
    return session["url"]


def retrieve_checkout_session(session_id: str) -> Json | None:
    """The session as Stripe has it now, or None when Stripe does not know it."""
    if is_test_mode():
        return testmode.retrieve_session(session_id)
    try:
        return client().v1.checkout.sessions.retrieve(session_id).to_dict()
    except stripe.InvalidRequestError:
        return None
    except stripe.StripeError as error:
        raise BillingError("Could not reach Stripe to confirm the payment. Refresh in a moment.") from error


def portal_url(team: Team, email: str, return_path: str = "/dashboard") -> str:
    """A Stripe billing portal session for the team's customer."""
    customer_id = ensure_customer(team, email)
    return_url = current_app.config["BASE_URL"] + return_path
    if is_test_mode():
        return testmode.portal_url()
    session = _call(
        "portal create",
        client().v1.billing_portal.sessions.create,
        params={"customer": customer_id, "return_url": return_url},
        # A portal session is single-use, so each click is its own create; the key makes retries safe.
        options={"idempotency_key": f"portal:{team.id}:{uuid.uuid4()}"},
    )
    return session["url"]
