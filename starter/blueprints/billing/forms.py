from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import AnyOf, DataRequired, InputRequired, Length, NumberRange, Optional

from ...billing.testmode_cards import DEFAULT_CARD, TEST_CARDS
from ...forms import IdempotencyKeyField


class CheckoutForm(FlaskForm):
    """Buy a pack or choose a plan. ``attempt`` makes a retried click reuse the same Checkout Session."""

    kind = HiddenField(validators=[DataRequired(), AnyOf(["pack", "plan"])])
    code = HiddenField(validators=[DataRequired(), Length(max=32)])
    # A plan's billing interval; a pack ignores it. Missing means monthly.
    interval = HiddenField(validators=[Optional(), AnyOf(["month", "year"])])
    # Sent by the page, never made up: a default filled in on a POST without it would give the two
    # halves of a double submit two Checkout Sessions.
    attempt = IdempotencyKeyField()


class PortalForm(FlaskForm):
    """Open the billing portal: a POST with its CSRF token."""


class TestPaymentForm(FlaskForm):
    """Test mode's checkout: pay (with one of Stripe's test cards) or cancel."""

    action = HiddenField(validators=[DataRequired(), AnyOf(["pay", "cancel"])])
    card = SelectField(
        "Test card", choices=[SelectChoice(c.number, c.label) for c in TEST_CARDS.values()], default=DEFAULT_CARD
    )


class OverageForm(FlaskForm):
    """Opt in to metered overage with a monthly cap in credits (owners and admins)."""

    enabled = BooleanField("Allow spending past our credits, billed as overage")
    cap = IntegerField(
        "Monthly overage cap (credits)",
        validators=[InputRequired("Give a cap in credits."), NumberRange(min=0, max=10_000_000)],
    )


TEST_PORTAL_ACTIONS = [
    "switch_interval",
    "cancel_at_period_end",
    "resume",
    "cancel_now",
    "change_plan",
    "renew",
    "renew_failed",
    "retry_payment",
]


class TestPortalForm(FlaskForm):
    action = HiddenField(validators=[DataRequired(), AnyOf(TEST_PORTAL_ACTIONS)])
    plan_code = SelectField("Plan", choices=[], validate_choice=False)
