"""Outgoing mail: printed to the log in development, sent over SMTP when ``MAIL_SERVER`` is set."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from flask import current_app, render_template, url_for


def send(to: str, subject: str, template: str, **context: object) -> EmailMessage:
    """Render ``emails/<template>.txt`` and ``.html`` and deliver them."""
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_DEFAULT_SENDER"]
    message["To"] = to
    message["Subject"] = subject
    message.set_content(render_template(f"emails/{template}.txt", **context))
    message.add_alternative(render_template(f"emails/{template}.html", **context), subtype="html")

    if config.get("TESTING"):
        current_app.extensions.setdefault("outbox", []).append(message)
    if config.get("MAIL_SERVER"):
        with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=10) as smtp:
            if config["MAIL_USE_TLS"]:
                smtp.starttls()
            if config.get("MAIL_USERNAME"):
                smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"] or "")
            smtp.send_message(message)
    else:
        body = message.get_body(preferencelist=("plain",))
        current_app.logger.info("Mail to %s: %s\n%s", to, subject, body.get_content() if body else "")
    return message


def external_url(endpoint: str, **values: object) -> str:
    """An absolute link for an email, on ``BASE_URL`` rather than whatever Host the request named."""
    return current_app.config["BASE_URL"] + url_for(endpoint, **values)
