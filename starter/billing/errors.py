"""Billing's named errors; blueprints map them to status codes."""


class BillingError(Exception):
    """Stripe refused or could not be reached; the message is safe to show."""


class InvalidEvent(Exception):
    """A webhook body that is not a signed, well-formed Stripe event (HTTP 400)."""
