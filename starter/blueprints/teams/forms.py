from __future__ import annotations

from wtforms import BooleanField, EmailField, IntegerField, SelectField, StringField, ValidationError
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

from ...forms import Form


def strip_whitespace(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


ROLE_CHOICES = [SelectChoice("member", "Member"), SelectChoice("admin", "Admin"), SelectChoice("owner", "Owner")]


class TeamForm(Form):
    name = StringField("Team name", validators=[DataRequired(), Length(min=2, max=120)], filters=[strip_whitespace])


class DeleteTeamForm(Form):
    confirm_name = StringField(
        "Type the team's name to confirm", validators=[DataRequired(), Length(max=120)], filters=[strip_whitespace]
    )


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


MAX_CREDITS = 1_000_000_000
PERIOD_CHOICES = [SelectChoice("month", "per month"), SelectChoice("day", "per day")]
MAX_THRESHOLDS = 5


def limit_field(label: str) -> IntegerField:
    return IntegerField(
        label,
        validators=[Optional(), NumberRange(1, MAX_CREDITS, "A limit is from 1 to 1,000,000,000 credits.")],
        description="Empty: no limit",
    )


class ApiKeyForm(Form):
    name = StringField("Key name", validators=[DataRequired(), Length(max=120)], description="e.g. Production backend")
    spend_limit = limit_field("Spend limit (credits)")
    limit_period = SelectField("Limit period", choices=PERIOD_CHOICES, default="month")


class ApiKeyLimitForm(Form):
    spend_limit = limit_field("Spend limit (credits)")
    limit_period = SelectField("Limit period", choices=PERIOD_CHOICES, default="month")


class MemberLimitForm(Form):
    monthly_limit = limit_field("Monthly limit (credits)")


def parse_thresholds(text: str | None) -> list[int]:
    """ "500, 100" → [100, 500]; ``ValueError`` for anything else."""
    parts = [part.strip() for part in (text or "").replace(";", ",").split(",") if part.strip()]
    if len(parts) > MAX_THRESHOLDS:
        raise ValueError(f"At most {MAX_THRESHOLDS} thresholds.")
    levels = set()
    for part in parts:
        if not part.isdigit() or not 2 <= int(part) <= MAX_CREDITS:
            raise ValueError("Each threshold is a whole number of credits from 2 to 1,000,000,000.")
        levels.add(int(part))
    return sorted(levels)


class AlertLevelsForm(Form):
    thresholds = StringField(
        "Low-balance thresholds (credits)",
        validators=[Length(max=100)],
        description="Comma-separated, e.g. 500, 100. Empty: no low-balance emails (out of credits is always sent).",
    )

    def validate_thresholds(self, field) -> None:  # type: ignore[no-untyped-def]
        try:
            parse_thresholds(field.data)
        except ValueError as error:
            raise ValidationError(str(error)) from error


class AlertEmailsForm(Form):
    alert_emails = BooleanField("Email me low-balance, out-of-credits and spend-limit alerts for this team")
