from __future__ import annotations

from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from ...accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from ...forms import Form


def strip_whitespace(value: str | None) -> str | None:
    """People paste addresses with a stray space; trim it before the email check sees it."""
    return value.strip() if isinstance(value, str) else value


_password_rules = [
    DataRequired(),
    Length(
        min=MIN_PASSWORD_LENGTH,
        max=MAX_PASSWORD_LENGTH,
        message=f"Use {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
    ),
]


class SignupForm(Form):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    email = EmailField(
        "Email",
        validators=[DataRequired(), Email(check_deliverability=False), Length(max=255)],
        filters=[strip_whitespace],
    )
    password = PasswordField(
        "Password", validators=_password_rules, description=f"At least {MIN_PASSWORD_LENGTH} characters."
    )
    invite = HiddenField()
    # A plan picked on the pricing page, carried through sign-up to the billing page's Checkout button.
    # Only a catalog code and an interval travel, checked against the catalog where used; never a URL,
    # and a tampered value is dropped rather than failing the sign-up.
    plan = HiddenField()
    interval = HiddenField()


class LoginForm(Form):
    email = EmailField("Email", validators=[DataRequired(), Length(max=255)], filters=[strip_whitespace])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    remember = BooleanField("Remember me")
    next = HiddenField()


class ForgotPasswordForm(Form):
    email = EmailField(
        "Email",
        validators=[DataRequired(), Email(check_deliverability=False), Length(max=255)],
        filters=[strip_whitespace],
    )


class ResetPasswordForm(Form):
    password = PasswordField("New password", validators=_password_rules)
    confirm = PasswordField("Repeat the new password", validators=[DataRequired(), EqualTo("password")])
