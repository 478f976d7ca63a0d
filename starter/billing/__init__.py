"""Billing: everything that talks to Stripe, and what its payments do to credits.

- ``gateway``: the one client of Stripe's API (the official SDK's ``StripeClient``), or, with no
  ``STRIPE_SECRET_KEY``, the built-in test mode (``testmode``) that answers in the same shapes.
- ``fulfilment``: what a paid checkout session or invoice grants; the webhook and the success page
  call the same functions, idempotent on the Stripe object id.
- ``webhooks``: signature check, event storage and dispatch (``receive``).
- ``catalog_sync``: ``flask billing sync``, products and prices from the catalog.
"""

from .errors import BillingError

__all__ = ["BillingError"]
