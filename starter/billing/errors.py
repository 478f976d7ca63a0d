"""Billing's named errors; blueprints map them to status codes."""


class BillingError(Exception):
    """Stripe refused or could not be reached; the message is safe to show."""


class BillingNotConfigured(BillingError):
    """Neither ``STRIPE_SECRET_KEY`` nor ``BILLING_TEST_MODE=true`` is set: buying is refused (HTTP 503)."""

    def __init__(self) -> None:
        super().__init__("Payments are not configured on this site yet, so nothing can be bought.")


class InvalidEvent(Exception):
    """A webhook body that is not a signed, well-formed Stripe event (HTTP 400)."""


class UnsupportedApiVersion(InvalidEvent):
    """An event rendered at an API version older than the SDK's: its shapes are not the ones we read."""


class Ignored(Exception):
    """An event that must change nothing (not ours, mismatched): stored with this reason, answered 200."""


class MeterEventRefused(BillingError):
    """Stripe answered a meter event with a 4xx that a retry cannot change (too old, unknown customer)."""


class PaymentDeclined(BillingError):
    """Stripe declined an off-session payment (a ``CardError``): its code and the PaymentIntent it left.

    ``code`` is ``authentication_required`` when the bank wants 3-D Secure (the customer must finish
    the payment on-session), else e.g. ``card_declined`` with a ``decline_code`` (``insufficient_funds``).
    """

    def __init__(self, message: str, *, code: str, decline_code: str | None, payment_intent: dict | None) -> None:
        super().__init__(message)
        self.code, self.decline_code, self.payment_intent = code, decline_code, payment_intent or {}
