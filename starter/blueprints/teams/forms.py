from __future__ import annotations

from wtforms import EmailField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, NumberRange

from ...forms import Form


def strip_whitespace(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


ROLE_CHOICES = [SelectChoice("member", "Member"), SelectChoice("admin", "Admin"), SelectChoice("owner", "Owner")]


class TeamForm(Form):
    name = StringField("Team name", validators=[DataRequired(), Length(min=2, max=120)], filters=[strip_whitespace])


class SwitchTeamForm(Form):
    team_id = IntegerField("Team", validators=[DataRequired(), NumberRange(1, 2**63 - 1)])


class InviteForm(Form):
    email = EmailField(
        "Email",
        validators=[DataRequired(), Email(check_deliverability=False), Length(max=255)],
        filters=[strip_whitespace],
    )
    role = SelectField("Role", choices=ROLE_CHOICES[:2], default="member")


class RoleForm(Form):
    role = SelectField("Role", choices=ROLE_CHOICES)


class ConfirmForm(Form):
    """A POST with nothing but its CSRF token: remove, revoke, accept."""


class ApiKeyForm(Form):
    name = StringField("Key name", validators=[DataRequired(), Length(max=120)], description="e.g. Production backend")
