from __future__ import annotations

from wtforms import HiddenField, SelectField
from wtforms.validators import Optional

from ...forms import Form


class TimeZoneForm(Form):
    zone = SelectField("Time zone", choices=[], validate_choice=True, validators=[Optional()])
    next = HiddenField()
