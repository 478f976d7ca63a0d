"""Test mode: Stripe Checkout and the billing portal without a Stripe account.

With no ``STRIPE_SECRET_KEY`` the checkout goes to our own page ("Test mode — no card is charged").
Paying there builds the events a real payment would produce, signs them with the webhook secret
and hands them to ``webhooks.receive``: the very code path Stripe's deliveries take.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import stripe
from flask import current_app, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from .. import catalog
from ..extensions import db
from ..models import StripeEvent, Team
from ..periods import add_months
from . import shapes
from .errors import BillingError

Json = dict[str, Any]


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="test-mode-checkout")


def customer_id(team_id: int) -> str:
    return f"cus_local_{team_id}"


def checkout_url(params: Json) -> str:
    token = _serializer().dumps({"session_id": shapes.new_id("cs"), "params": params})
    return url_for("billing.test_checkout", token=token)


def load_checkout(token: str) -> Json | None:
    """The checkout a test-mode link stands for; None if the link was tampered with."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    return data if isinstance(data, dict) and "params" in data else None


def portal_url() -> str:
    return url_for("billing.test_portal")


def retrieve_session(session_id: str) -> Json | None:
    """A test-mode session as 'Stripe' has it: the one its completion event carried."""
    event = db.session.get(StripeEvent, _completed_event_id(session_id))
    return event.payload["data"]["object"] if event is not None else None


def _completed_event_id(session_id: str) -> str:
    return f"evt_{session_id}_completed"


def deliver(events: list[Json]) -> None:
    """Sign each event with the webhook secret and send it through the webhook code path."""
    from .webhooks import receive

    secret = current_app.config["STRIPE_WEBHOOK_SECRET"]
    for event in events:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=int(time.time()))
        status, body = receive(payload.encode(), header)
        if status != 200:
            raise BillingError(f"The test payment could not be processed ({body.get('error', status)}).")


def _period(start: datetime) -> tuple[int, int]:
    return int(start.timestamp()), int(add_months(start, 1).timestamp())


def pay(checkout: Json) -> str:
    """Complete a test checkout as a successful payment; returns the success URL."""
    params, session_id = checkout["params"], checkout["session_id"]
    success_url = params["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
    completed = db.session.get(StripeEvent, _completed_event_id(session_id))
    if completed is not None and completed.processed_at is not None:
        return success_url  # paid already (a double submit): like Stripe, never a second subscription
    if params["mode"] == "payment":
        session = shapes.checkout_session(params, session_id, paid=True, payment_intent=f"pi_{session_id[3:]}")
        events = [shapes.event("checkout.session.completed", session, _completed_event_id(session_id))]
    else:
        plan = catalog.PLANS[params["metadata"]["code"]]
        start, end = _period(datetime.now(UTC))
        sub = shapes.subscription(
            shapes.new_id("sub"),
            params["customer"],
            plan.code,
            plan.monthly_price_cents,
            start,
            end,
            metadata=dict(params["subscription_data"]["metadata"]),
        )
        invoice = shapes.invoice(params["customer"], sub, plan.monthly_price_cents, "subscription_create")
        session = shapes.checkout_session(params, session_id, paid=True, subscription=sub["id"], invoice=invoice["id"])
        events = [
            shapes.event("customer.subscription.created", sub),
            shapes.event("checkout.session.completed", session, _completed_event_id(session_id)),
            shapes.event("invoice.paid", invoice),
        ]
    deliver(events)
    return success_url


def _current_subscription(team: Team, plan: catalog.Plan, *, new_period: bool, **changes: Any) -> Json:
    start = team.current_period_start or datetime.now(UTC)
    if new_period:
        start = datetime.now(UTC)
    begin, end = _period(start)
    if not new_period and team.current_period_end:
        end = int(team.current_period_end.timestamp())
    return shapes.subscription(
        team.stripe_subscription_id or shapes.new_id("sub"),
        team.stripe_customer_id or customer_id(team.id),
        plan.code,
        plan.monthly_price_cents,
        begin,
        end,
        metadata={"team_id": str(team.id), "plan_code": plan.code},
        **changes,
    )


def portal_action(team: Team, action: str, plan_code: str | None = None) -> None:
    """What the test-mode portal does: the same events Stripe's portal would send.

    Plan changes apply at once and start a new period (the policy in docs/billing.md); "renew"
    plays the monthly renewal invoice that Stripe would send at the period end.
    """
    if not team.stripe_subscription_id:
        raise BillingError("This team has no subscription to manage.")
    current = catalog.plan(team.plan_code) or catalog.FREE_PLAN
    if action == "cancel_at_period_end":
        events = [
            shapes.event(
                "customer.subscription.updated",
                _current_subscription(team, current, new_period=False, cancel_at_period_end=True),
            )
        ]
    elif action == "resume":
        events = [shapes.event("customer.subscription.updated", _current_subscription(team, current, new_period=False))]
    elif action == "cancel_now":
        events = [
            shapes.event(
                "customer.subscription.deleted",
                _current_subscription(team, current, new_period=False, status="canceled"),
            )
        ]
    elif action in ("change_plan", "renew"):
        plan = catalog.plan(plan_code or "") if action == "change_plan" else current
        if plan is None or plan.is_free:
            raise BillingError("Choose a paid plan.")
        sub = _current_subscription(team, plan, new_period=True)
        if action == "renew" and team.current_period_end:
            begin, end = _period(team.current_period_end)
            sub["items"]["data"][0].update(current_period_start=begin, current_period_end=end)
        reason = "subscription_update" if action == "change_plan" else "subscription_cycle"
        events = [
            shapes.event("customer.subscription.updated", sub),
            shapes.event("invoice.paid", shapes.invoice(sub["customer"], sub, plan.monthly_price_cents, reason)),
        ]
    else:
        raise BillingError("Unknown action.")
    deliver(events)
