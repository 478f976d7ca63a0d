from __future__ import annotations

from wtforms import BooleanField, HiddenField, IntegerField, SelectField
from wtforms.validators import AnyOf, DataRequired, InputRequired, NumberRange

from ...forms import Form, IdempotencyKeyField


class AutoRechargeForm(Form):
    enabled = BooleanField("Recharge automatically")
    threshold = IntegerField(
        "When the balance falls below (credits)",
        validators=[InputRequired(), NumberRange(min=0, max=1_000_000_000)],
        default=100,
    )
    pack_code = SelectField("Buy this pack", choices=[])
    monthly_cap_dollars = IntegerField(
        "Spend at most this much per month ($)",
        validators=[InputRequired(), NumberRange(min=0, max=1_000_000)],
        default=50,
        description="Counts recharges in flight too; when the next pack would pass it, recharging waits a month.",
    )


class CardSetupForm(Form):
    """Replace the card on file: Checkout in mode=setup. ``attempt`` makes a retried click reuse the session."""

    attempt = IdempotencyKeyField()


class ConfirmPaymentForm(Form):
    """Finish a recharge that asked for 3-D Secure, on-session."""


class TestAuthenticationForm(Form):
    action = HiddenField(validators=[DataRequired(), AnyOf(["complete", "fail"])])
