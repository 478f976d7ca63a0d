"""The one door to Stripe: an interface with two implementations, chosen once when the app starts.

- ``StripeGateway``: the official SDK's ``StripeClient`` (pointed at ``STRIPE_API_BASE`` when set).
- ``testmode.TestModeGateway``: the built-in stand-in (``BILLING_TEST_MODE=true``, no key), which keeps
  Stripe-shaped objects in our database and answers the same calls.
- ``NotConfigured``: neither a key nor the opt-in: every call refuses, so a forgotten key never means
  free credits.

The rest of billing calls the module functions below; they never ask which implementation runs,
and nothing here imports fulfilment, subscriptions or webhooks: data flows one way.
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
from .errors import BillingError, BillingNotConfigured, MeterEventRefused, PaymentDeclined

log = logging.getLogger(__name__)
Json = dict[str, Any]
EXTENSION = "billing.gateway"


class Gateway:
    """What billing asks of Stripe. Each method answers plain dicts in Stripe's current shapes."""

    test_mode = False
    configured = True

    def create_customer(self, team: Team, email: str) -> str:
        raise NotImplementedError

    def create_checkout(self, params: Json, idempotency_key: str) -> str:
        """A Checkout Session for ``params``; returns the URL to send the browser to."""
        raise NotImplementedError

    def retrieve_checkout_session(self, session_id: str) -> Json | None:
        raise NotImplementedError

    def create_portal(self, customer_id: str, return_url: str) -> str:
        raise NotImplementedError

    def list_subscriptions(self, customer_id: str) -> list[Json]:
        """Every subscription of the customer, any status, newest first (items carry their prices)."""
        raise NotImplementedError

    def retrieve_price(self, price_id: str) -> Json | None:
        """The price with its product expanded, or None when Stripe does not know it."""
        raise NotImplementedError

    def retrieve_charge(self, charge_id: str) -> Json | None:
        raise NotImplementedError

    def list_invoice_lines(self, invoice_id: str) -> list[Json]:
        """Every line of an invoice (an event carries only the first page)."""
        raise NotImplementedError

    def create_payment_intent(self, params: Json, idempotency_key: str) -> Json:
        """A PaymentIntent; off-session with ``confirm=True`` it is charged at once. A decline raises
        ``PaymentDeclined`` carrying the PaymentIntent Stripe left behind."""
        raise NotImplementedError

    def confirm_payment_intent(self, payment_intent_id: str, params: Json, idempotency_key: str) -> Json:
        """Confirm again on-session (3-D Secure): with a ``return_url`` Stripe answers a redirect to authenticate."""
        raise NotImplementedError

    def retrieve_payment_intent(self, payment_intent_id: str) -> Json | None:
        """The PaymentIntent with its latest charge expanded (for the receipt link)."""
        raise NotImplementedError

    def find_price(self, lookup_key: str) -> str | None:
        """The id of the active price with ``lookup_key`` (what ``flask billing sync`` made), or None."""
        raise NotImplementedError

    def report_meter_event(self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int):
        """Send one Billing Meter event; ``identifier`` makes a repeat count once. Raises ``BillingError``."""
        raise NotImplementedError

    def invoice_of_payment(self, payment_intent: str) -> str | None:
        """The invoice a payment intent paid (``GET /v1/invoice_payments``), or None."""
        raise NotImplementedError

    def set_cancel_at_period_end(self, subscription_id: str, cancel: bool) -> Json:
        """Cancel at the period end, or undo that (the portal's "renew"); returns the updated subscription."""
        raise NotImplementedError


class NotConfigured(Gateway):
    """No ``STRIPE_SECRET_KEY`` and no ``BILLING_TEST_MODE=true``: payments are refused, nothing is granted."""

    configured = False

    def create_customer(self, team: Team, email: str) -> str:
        raise BillingNotConfigured()

    def create_checkout(self, params: Json, idempotency_key: str) -> str:
        raise BillingNotConfigured()

    def retrieve_checkout_session(self, session_id: str) -> Json | None:
        raise BillingNotConfigured()

    def create_portal(self, customer_id: str, return_url: str) -> str:
        raise BillingNotConfigured()

    def list_subscriptions(self, customer_id: str) -> list[Json]:
        raise BillingNotConfigured()

    def retrieve_price(self, price_id: str) -> Json | None:
        raise BillingNotConfigured()

    def retrieve_charge(self, charge_id: str) -> Json | None:
        raise BillingNotConfigured()

    def list_invoice_lines(self, invoice_id: str) -> list[Json]:
        raise BillingNotConfigured()

    def create_payment_intent(self, params: Json, idempotency_key: str) -> Json:
        raise BillingNotConfigured()

    def confirm_payment_intent(self, payment_intent_id: str, params: Json, idempotency_key: str) -> Json:
        raise BillingNotConfigured()

    def retrieve_payment_intent(self, payment_intent_id: str) -> Json | None:
        raise BillingNotConfigured()

    def find_price(self, lookup_key: str) -> str | None:
        raise BillingNotConfigured()

    def report_meter_event(self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int):
        raise BillingNotConfigured()

    def invoice_of_payment(self, payment_intent: str) -> str | None:
        raise BillingNotConfigured()

    def set_cancel_at_period_end(self, subscription_id: str, cancel: bool) -> Json:
        raise BillingNotConfigured()


class StripeGateway(Gateway):
    """Real Stripe through the official SDK. Every create carries an idempotency key."""

    def __init__(self, secret_key: str, api_base: str | None) -> None:
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=2,  # safe: every create below is idempotent
        )

    @staticmethod
    def _call(description: str, function: Any, *args: Any, **kwargs: Any) -> Json:
        try:
            return function(*args, **kwargs).to_dict()
        except stripe.StripeError as error:
            log.warning("Stripe %s failed: %s", description, error)
            raise BillingError("Payments are unavailable right now. Please try again in a minute.") from error

    def _retrieve(self, description: str, function: Any, *args: Any, **kwargs: Any) -> Json | None:
        try:
            return function(*args, **kwargs).to_dict()
        except stripe.InvalidRequestError:
            return None
        except stripe.StripeError as error:
            log.warning("Stripe %s failed: %s", description, error)
            raise BillingError("Could not reach Stripe. Try again in a moment.") from error

    def create_customer(self, team: Team, email: str) -> str:
        customer = self._call(
            "customer create",
            self.client.v1.customers.create,
            params={"email": email, "name": team.name, "metadata": {"team_id": str(team.id)}},
            options={"idempotency_key": f"customer:team:{team.id}"},
        )
        return customer["id"]

    def create_checkout(self, params: Json, idempotency_key: str) -> str:
        session = self._call(
            "checkout create",
            self.client.v1.checkout.sessions.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return session["url"]

    def retrieve_checkout_session(self, session_id: str) -> Json | None:
        return self._retrieve("checkout retrieve", self.client.v1.checkout.sessions.retrieve, session_id)

    def create_portal(self, customer_id: str, return_url: str) -> str:
        session = self._call(
            "portal create",
            self.client.v1.billing_portal.sessions.create,
            params={"customer": customer_id, "return_url": return_url},
            # A portal session is single-use, so each click is its own create; the key makes retries safe.
            options={"idempotency_key": f"portal:{customer_id}:{uuid.uuid4()}"},
        )
        return session["url"]

    def list_subscriptions(self, customer_id: str) -> list[Json]:
        listing = self._call(
            "subscription list",
            self.client.v1.subscriptions.list,
            params={"customer": customer_id, "status": "all", "limit": 100},
        )
        return list(listing.get("data") or [])

    def retrieve_price(self, price_id: str) -> Json | None:
        return self._retrieve(
            "price retrieve", self.client.v1.prices.retrieve, price_id, params={"expand": ["product"]}
        )

    def retrieve_charge(self, charge_id: str) -> Json | None:
        return self._retrieve("charge retrieve", self.client.v1.charges.retrieve, charge_id)

    def list_invoice_lines(self, invoice_id: str) -> list[Json]:
        lines: list[Json] = []
        params: Json = {"limit": 100}
        while True:
            page = self._call("invoice lines", self.client.v1.invoices.line_items.list, invoice_id, params=params)
            lines += page.get("data") or []
            if not page.get("has_more") or not lines:
                return lines
            params = {"limit": 100, "starting_after": lines[-1]["id"]}

    def _charge(self, description: str, function: Any, *args: Any, **kwargs: Any) -> Json:
        try:
            return function(*args, **kwargs).to_dict()
        except stripe.CardError as error:
            body = (error.json_body or {}).get("error") or {}
            raise PaymentDeclined(
                str(body.get("message") or error.user_message or "The card was declined."),
                code=str(body.get("code") or error.code or "card_declined"),
                decline_code=body.get("decline_code"),
                payment_intent=body.get("payment_intent"),
            ) from error
        except stripe.StripeError as error:
            log.warning("Stripe %s failed: %s", description, error)
            raise BillingError("Payments are unavailable right now. Please try again in a minute.") from error

    def create_payment_intent(self, params: Json, idempotency_key: str) -> Json:
        return self._charge(
            "payment intent create",
            self.client.v1.payment_intents.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )

    def confirm_payment_intent(self, payment_intent_id: str, params: Json, idempotency_key: str) -> Json:
        return self._charge(
            "payment intent confirm",
            self.client.v1.payment_intents.confirm,
            payment_intent_id,
            params=params,
            options={"idempotency_key": idempotency_key},
        )

    def retrieve_payment_intent(self, payment_intent_id: str) -> Json | None:
        return self._retrieve(
            "payment intent retrieve",
            self.client.v1.payment_intents.retrieve,
            payment_intent_id,
            params={"expand": ["latest_charge"]},
        )

    def find_price(self, lookup_key: str) -> str | None:
        listing = self._call(
            "price lookup", self.client.v1.prices.list, params={"lookup_keys": [lookup_key], "active": True}
        )
        prices = listing.get("data") or []
        return prices[0]["id"] if prices else None

    def report_meter_event(self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int):
        try:
            self.client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "identifier": identifier,
                    "timestamp": timestamp,
                    "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                },
                # Within 24 hours a retry replays the first answer; after that Stripe's identifier check holds.
                options={"idempotency_key": f"meter:{identifier}"},
            )
        except stripe.InvalidRequestError as error:
            # Stripe refuses an identifier it already counted ("An event already exists with identifier …",
            # not retryable): that is proof the usage was delivered, so it is a success, not a failure.
            if "already exists with identifier" in str(error.user_message or error):
                log.info("Meter event %s was already delivered", identifier)
                return
            log.warning("Stripe meter event failed: %s", error)
            raise MeterEventRefused("Stripe refused the usage report.") from error
        except stripe.StripeError as error:
            log.warning("Stripe meter event failed: %s", error)
            raise BillingError("Could not reach Stripe to report usage.") from error

    def invoice_of_payment(self, payment_intent: str) -> str | None:
        listing = self._call(
            "invoice payments",
            self.client.v1.invoice_payments.list,
            params={"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 1},
        )
        payments = listing.get("data") or []
        invoice = payments[0].get("invoice") if payments else None
        return invoice.get("id") if isinstance(invoice, dict) else invoice

    def set_cancel_at_period_end(self, subscription_id: str, cancel: bool) -> Json:
        return self._call(
            "subscription update",
            self.client.v1.subscriptions.update,
            subscription_id,
            params={"cancel_at_period_end": cancel},
            # The same change twice is the same state; the key makes the SDK's retries of one click safe.
            options={"idempotency_key": f"subscription:{subscription_id}:cancel_at_period_end:{cancel}:{uuid.uuid4()}"},
        )


def current() -> Gateway:
    return current_app.extensions[EXTENSION]


def is_test_mode() -> bool:
    return current().test_mode


def is_configured() -> bool:
    return current().configured


def ensure_customer(team: Team, email: str) -> str:
    """The team's Stripe customer id, created on first use with the team id in its metadata.

    Commits: the id must survive whatever fails next (a Checkout create, a portal create), or every
    retry would create the customer again, and after the idempotency key's 24 hours, a second one.
    """
    if team.stripe_customer_id:
        return team.stripe_customer_id
    team.stripe_customer_id = current().create_customer(team, email)
    db.session.commit()
    return team.stripe_customer_id


def price_id(kind: str, code: str, entry: catalog.Plan | catalog.Pack) -> str | None:
    """A configured Stripe price: STRIPE_PRICE_<KIND>_<CODE> in the environment, else the catalog's field."""
    return current_app.config.get(f"STRIPE_PRICE_{kind.upper()}_{code.upper()}") or entry.stripe_price_id


def plan_price_id(plan: catalog.Plan, interval: str) -> str | None:
    """A plan's configured price for ``interval``: STRIPE_PRICE_PLAN_<CODE> (monthly) or …_<CODE>_YEARLY."""
    if interval == "year":
        return current_app.config.get(f"STRIPE_PRICE_PLAN_{plan.code.upper()}_YEARLY")
    return price_id("plan", plan.code, plan)


def current_app_overage_price(plan: catalog.Plan) -> str | None:
    """The configured STRIPE_PRICE_OVERAGE_<CODE>, without asking Stripe."""
    return current_app.config.get(f"STRIPE_PRICE_OVERAGE_{plan.code.upper()}")


def overage_price_id(plan: catalog.Plan) -> str | None:
    """The plan's metered overage price: STRIPE_PRICE_OVERAGE_<CODE>, else the one ``flask billing sync``
    made (lookup key ``overage_<code>``). None: Checkout adds none, and the team cannot opt in."""
    if not plan.has_overage:
        return None
    return current_app_overage_price(plan) or current().find_price(f"overage_{plan.code}")


def _line_item(
    kind: str, code: str, entry: catalog.Plan | catalog.Pack, name: str, cents: int, interval: str = "month"
) -> Json:
    configured = plan_price_id(entry, interval) if isinstance(entry, catalog.Plan) else price_id(kind, code, entry)
    if configured:
        return {"price": configured, "quantity": 1}
    # Inline prices carry no lookup key, so the product says which plan or pack it is (see plan_for_price).
    product = {"name": name, "metadata": {f"{kind}_code": code}}
    price_data: Json = {"currency": catalog.CURRENCY, "unit_amount": cents, "product_data": product}
    if kind == "plan":
        price_data["recurring"] = {"interval": interval}
    return {"price_data": price_data, "quantity": 1}


def checkout_params(team: Team, customer_id: str, kind: str, code: str, user_id: int, interval: str = "month") -> Json:
    """The Checkout Session for a pack (``mode=payment``) or a plan (``mode=subscription``).

    A plan is billed monthly or yearly (``interval``); a monthly plan with overage also gets the
    metered overage price (a line without quantity: Stripe bills what the meter reports).
    """
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
        # Save the card for auto-recharge: Stripe attaches it to the customer (payment_method.attached).
        params["payment_intent_data"] = {"metadata": metadata, "setup_future_usage": "off_session"}
    else:
        plan = catalog.PLANS[code]
        params["mode"] = "subscription"
        metadata["interval"] = interval
        params["line_items"] = [_line_item("plan", code, plan, plan.product_name, plan.price_for(interval), interval)]
        # Stripe bills every item of a subscription on one interval, so overage comes with monthly plans only.
        metered = overage_price_id(plan) if interval == "month" else None
        if metered:
            params["line_items"].append({"price": metered})
        # A snapshot for the audit trail only: the portal changes prices, never this metadata.
        params["subscription_data"] = {"metadata": {"team_id": str(team.id), "plan_code": code}}
    return params


def create_checkout(
    team: Team, email: str, kind: str, code: str, user_id: int, attempt: str, interval: str = "month"
) -> str:
    """Start Stripe Checkout; returns the URL to send the browser to.

    ``attempt`` makes the idempotency key: the same purchase click retried returns the same session.
    """
    customer_id = ensure_customer(team, email)
    params = checkout_params(team, customer_id, kind, code, user_id, interval)
    suffix = ":year" if interval == "year" else ""
    return current().create_checkout(params, f"checkout:{team.id}:{kind}:{code}{suffix}:{attempt}")


def create_setup_checkout(team: Team, email: str, user_id: int, attempt: str) -> str:
    """Checkout in ``mode=setup``: save a new card (it becomes the one auto-recharge charges)."""
    customer_id = ensure_customer(team, email)
    base_url = current_app.config["BASE_URL"]
    params: Json = {
        "mode": "setup",
        "customer": customer_id,
        "currency": catalog.CURRENCY,
        "payment_method_types": ["card"],
        "client_reference_id": str(team.id),
        "metadata": {"team_id": str(team.id), "kind": "setup", "code": "card", "user_id": str(user_id)},
        "success_url": f"{base_url}/billing/auto-recharge?saved={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base_url}/billing/auto-recharge",
    }
    return current().create_checkout(params, f"checkout:{team.id}:setup:{attempt}")


def create_payment_intent(params: Json, idempotency_key: str) -> Json:
    return current().create_payment_intent(params, idempotency_key)


def confirm_payment_intent(payment_intent_id: str, params: Json, idempotency_key: str) -> Json:
    return current().confirm_payment_intent(payment_intent_id, params, idempotency_key)


def retrieve_payment_intent(payment_intent_id: str) -> Json | None:
    return current().retrieve_payment_intent(payment_intent_id)


def retrieve_checkout_session(session_id: str) -> Json | None:
    """The session as Stripe has it now, or None when Stripe does not know it."""
    return current().retrieve_checkout_session(session_id)


def portal_url(team: Team, email: str, return_path: str = "/dashboard") -> str:
    """A Stripe billing portal session for the team's customer."""
    customer_id = ensure_customer(team, email)
    return current().create_portal(customer_id, current_app.config["BASE_URL"] + return_path)


def set_cancel_at_period_end(subscription_id: str, cancel: bool) -> Json:
    return current().set_cancel_at_period_end(subscription_id, cancel)


def list_subscriptions(customer_id: str) -> list[Json]:
    return current().list_subscriptions(customer_id)


def retrieve_price(price: str) -> Json | None:
    return current().retrieve_price(price)


def retrieve_charge(charge_id: str) -> Json | None:
    return current().retrieve_charge(charge_id)


def list_invoice_lines(invoice_id: str) -> list[Json]:
    return current().list_invoice_lines(invoice_id)


def report_meter_event(event_name: str, customer_id: str, value: int, identifier: str, timestamp: int) -> None:
    current().report_meter_event(event_name, customer_id, value, identifier, timestamp)


def invoice_of_payment(payment_intent: str) -> str | None:
    return current().invoice_of_payment(payment_intent)
