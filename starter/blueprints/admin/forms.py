from __future__ import annotations

from wtforms import IntegerField, StringField
from wtforms.validators import DataRequired, Length, NumberRange

from ...credits import MAX_AMOUNT
from ...forms import Form, IdempotencyKeyField


class AdjustForm(Form):
    amount = IntegerField(
        "Credits",
        validators=[DataRequired(message="Enter a whole number other than 0."), NumberRange(-MAX_AMOUNT, MAX_AMOUNT)],
        description="Positive grants never-expiring credits; negative takes credits away.",
    )
    reason = StringField("Reason", validators=[DataRequired(), Length(max=200)], description="Shown in the ledger.")
    idempotency_key = IdempotencyKeyField()


class ReplayForm(Form):
    """Replay a stored event: a POST with its CSRF token."""
