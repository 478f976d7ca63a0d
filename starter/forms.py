"""What every form of the app shares, and the one check on characters no input of ours may hold.

* ``refuse_control_characters`` runs before every request (bar the JSON API and the Stripe webhook,
  which check their own bodies): a control character in the URL path or query string, or one other
  than tab, CR and LF in a form field, is a 400 that changes nothing. NUL made PostgreSQL's driver
  raise (a 500); no page of ours produces such characters, so a request with one is hand-made.
* ``Form`` is the base of every form: one-line text fields (all but a textarea or password) also
  refuse tab, CR, LF and the Unicode line separators, as a form error. A team or user name with a
  line break broke the invitation mail's headers. (The billing blueprint's forms, hidden fields
  with strict validators, still derive from ``FlaskForm``; the before-request check covers them.)
* ``IdempotencyKeyField`` is the hidden key of a form that changes credits.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

from flask import abort, request
from flask_wtf import FlaskForm
from wtforms import Field, HiddenField, PasswordField, StringField, TextAreaField
from wtforms.validators import StopValidation

# C0 and C1 controls and DEL, except tab, LF and CR, which a textarea legitimately sends.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Anything that ends or breaks a line, or any other control: not in a one-line value.
NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9-]{1,64}")
CHECKED_ELSEWHERE = ("/api/", "/webhooks/")


def _first_bad(pairs: Iterable[tuple[str, str]], pattern: re.Pattern[str]) -> str | None:
    for name, value in pairs:
        if pattern.search(name) or pattern.search(value):
            return name
    return None


def refuse_control_characters() -> None:
    """Before every request: abort with a 400 naming the field that holds a control character."""
    if request.path.startswith(CHECKED_ELSEWHERE):
        return
    if NOT_ONE_LINE.search(request.path):
        abort(400, "The address contains a control character. Check the link and try again.")
    bad = _first_bad(request.args.items(multi=True), NOT_ONE_LINE)
    if bad is None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
        bad = _first_bad(request.form.items(multi=True), CONTROL)
    if bad is not None:
        shown = f"“{bad}”" if bad.isprintable() and len(bad) <= 40 else "A field"
        abort(400, f"{shown} contains a control character (such as NUL). Remove it and try again.")


def one_line(_form: Any, field: Field) -> None:
    if any(isinstance(value, str) and NOT_ONE_LINE.search(value) for value in field.raw_data or ()):
        raise StopValidation("Use a single line, without line breaks, tabs or other control characters.")


def _is_one_line(field: Field) -> bool:
    return isinstance(field, StringField) and not isinstance(field, TextAreaField | PasswordField)


class Form(FlaskForm):
    """The base of every form (CSRF included, from Flask-WTF): one-line fields refuse line breaks."""

    class Meta:
        def bind_field(self, form: Any, unbound_field: Any, options: dict[str, Any]) -> Field:
            field = unbound_field.bind(form=form, **options)
            if _is_one_line(field):
                field.validators = [one_line, *field.validators]
            return field


def _key_sent(_form: Any, field: Field) -> None:
    # raw_data, not data: data falls back to the field's default when nothing was posted.
    sent = field.raw_data[0] if field.raw_data else None
    if not isinstance(sent, str) or not IDEMPOTENCY_KEY.fullmatch(sent):
        abort(400, "This form's idempotency key is missing or malformed: nothing was done. Reload the page.")


class IdempotencyKeyField(HiddenField):
    """A fresh key each time the form is rendered; on a POST, only the key that was sent.

    A POST without one is a 400 that changes nothing. Making one up (a field default) would treat
    the two halves of a double submit as two requests and charge twice.
    """

    def __init__(self, label: str | None = None, **kwargs: Any) -> None:
        super().__init__(label, validators=[_key_sent], default=lambda: uuid.uuid4().hex, **kwargs)
