from __future__ import annotations

from wtforms import HiddenField, IntegerField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from ...credits import MAX_AMOUNT
from ...forms import Form, IdempotencyKeyField


class AdjustForm(Form):
    amount = IntegerField(
        "Credits",
        validators=[DataRequired(message="Enter a whole number other than 0."), NumberRange(-MAX_AMOUNT, MAX_AMOUNT)],
        description="Positive grants never-expiring credits; negative takes credits away.",
    )
    description = StringField(
        "Description the team sees",
        validators=[Optional(), Length(max=200)],
        description='In the team\'s history and CSV. Empty: "Credit adjustment".',
    )
    reason = StringField(
        "Internal reason",
        validators=[DataRequired(message="Say why: admins read it in the ledger's detail."), Length(max=200)],
        description="For admins only: kept in the entry's metadata, never shown to the team.",
    )
    idempotency_key = IdempotencyKeyField()
    # Set by the confirmation step: without it a valid form is shown back for confirmation, not applied.
    confirmed = HiddenField()


class ReplayForm(Form):
    """Replay a stored event: a POST with its CSRF token."""
