"""The account page's forms. Field names differ from form to form: the page shows them all at once."""

from __future__ import annotations

from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from ...accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from ...forms import Form
from ..auth.forms import strip_whitespace


def _current_password(label: str = "Current password") -> PasswordField:
    return PasswordField(label, validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])


class ProfileForm(Form):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[strip_whitespace])


class EmailChangeForm(Form):
    new_email = EmailField(
        "New email",
        validators=[DataRequired(), Email(check_deliverability=False), Length(max=255)],
        filters=[strip_whitespace],
        description="We send a confirmation link there; your address changes only when it is followed.",
    )
    email_password = _current_password()


class PasswordChangeForm(Form):
    current_password = _current_password()
    new_password = PasswordField(
        "New password",
        validators=[
            DataRequired(),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=MAX_PASSWORD_LENGTH,
                message=f"Use {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
            ),
        ],
        description=f"At least {MIN_PASSWORD_LENGTH} characters.",
    )
    confirm_password = PasswordField(
        "Repeat the new password",
        validators=[DataRequired(), EqualTo("new_password", message="The two new passwords differ.")],
    )


class DeleteAccountForm(Form):
    delete_password = _current_password("Your password")


class ConfirmForm(Form):
    """A POST with nothing but its CSRF token: sign out everywhere, cancel or confirm an email change."""
