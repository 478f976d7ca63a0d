from __future__ import annotations

from wtforms import DateField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ...forms import Form, IdempotencyKeyField


class GenerateForm(Form):
    prompt = TextAreaField("Prompt", validators=[DataRequired(), Length(max=2_000)])
    # One key per rendered form: a double submit carries the same key, so it is charged once.
    idempotency_key = IdempotencyKeyField()


class HistoryFilterForm(Form):
    kind = SelectField("Kind", choices=[], validate_choice=True, validators=[Optional()])
    feature = SelectField("Feature", choices=[], validate_choice=True, validators=[Optional()])
    member = SelectField("Member", choices=[], validate_choice=True, validators=[Optional()])
    api_key = SelectField("API key", choices=[], validate_choice=True, validators=[Optional()])
    since = DateField("From", validators=[Optional()])
    until = DateField("To", validators=[Optional()])

    def validate_until(self, field: DateField) -> None:
        if field.data and self.since.data and field.data < self.since.data:
            raise ValidationError("The end date is before the start date: pick a date on or after it.")
