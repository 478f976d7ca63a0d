from __future__ import annotations

import uuid

from wtforms import DateField, HiddenField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from ...forms import Form


class GenerateForm(Form):
    prompt = TextAreaField("Prompt", validators=[DataRequired(), Length(max=2_000)])
    # One key per rendered form: a double submit carries the same key, so it is charged once.
    idempotency_key = HiddenField(
        validators=[DataRequired(), Length(max=64), Regexp(r"^[A-Za-z0-9-]+$")], default=lambda: uuid.uuid4().hex
    )


class HistoryFilterForm(Form):
    kind = SelectField("Kind", choices=[], validate_choice=True, validators=[Optional()])
    feature = SelectField("Feature", choices=[], validate_choice=True, validators=[Optional()])
    since = DateField("From", validators=[Optional()])
    until = DateField("To", validators=[Optional()])
