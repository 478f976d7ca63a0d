"""Billing: everything that talks to Stripe, and what its payments do to credits.

Data flows one way: views → ``fulfilment`` / ``subscriptions`` / ``reversals`` → ``gateway`` →
Stripe (``gateway.StripeGateway``) or the built-in stand-in (``testmode.TestModeGateway``), chosen
once by ``init_app``.

- ``gateway``: the interface to Stripe and its SDK implementation; Checkout and portal sessions.
- ``testmode``: test mode's Stripe, its checkout page and portal (``BILLING_TEST_MODE=true``).
- ``fulfilment``: what a paid checkout grants; the webhook and the success page share it.
- ``subscriptions``: plan and status from Stripe's current objects; paid invoices start periods.
- ``reversals``: refunds and disputes, by the money they move.
- ``webhooks``: signature check, event storage and dispatch (``receive``).
- ``catalog_sync``: ``flask billing sync``, products and prices from the catalog.
"""

from __future__ import annotations

from flask import Flask

from . import gateway
from .errors import BillingError, BillingNotConfigured
from .testmode import TestModeGateway

__all__ = ["BillingError", "BillingNotConfigured", "init_app"]


def init_app(app: Flask) -> None:
    """Choose the gateway once: a key means Stripe, the explicit opt-in means test mode, else refuse."""
    config = app.config
    if config.get("STRIPE_SECRET_KEY"):
        chosen: gateway.Gateway = gateway.StripeGateway(config["STRIPE_SECRET_KEY"], config.get("STRIPE_API_BASE"))
    elif config.get("BILLING_TEST_MODE"):
        chosen = TestModeGateway()
    else:
        chosen = gateway.NotConfigured()
        app.logger.warning(
            "Payments are not configured: set STRIPE_SECRET_KEY, or BILLING_TEST_MODE=true for the test checkout."
        )
    app.extensions[gateway.EXTENSION] = chosen
