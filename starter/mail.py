"""Outgoing mail through an outbox: ``send`` writes a row in the caller's transaction; a job delivers it.

``send`` never talks to a mail server. It renders the message and adds it to ``outbox_messages`` in
the current transaction, so the mail leaves if and only if the change that caused it commits, and
a slow or failing SMTP server can never slow down or fail a request. ``deliver_due`` (the
scheduler's ``mail.deliver`` job, or ``flask mail deliver``) sends what is due: over SMTP when
``MAIL_SERVER`` is set, else printed to the log. A message the server refuses for now (a 4xx, a
timeout, a refused connection) is retried with a growing delay up to ``MAIL_MAX_ATTEMPTS`` times; a
permanent refusal (5xx) is marked ``failed`` at once. A worker claims a row (row lock, skipped by
the others) before sending it, so two workers never send one twice; only a crash between the
server's "250 OK" and marking the row sent can repeat one, after a lease (its ``Message-ID`` is
stable, so mail clients drop the twin).
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import current_app, render_template, url_for
from sqlalchemy import insert, select, update

from .extensions import db
from .models import OutboxMessage, utcnow

log = logging.getLogger(__name__)
outbox_t = OutboxMessage.__table__
MAX_BACKOFF = timedelta(hours=6)


def send(to: str, subject: str, template: str, **context: object) -> EmailMessage:
    """Render ``emails/<template>.txt`` and ``.html`` and queue them for ``to``; the caller commits."""
    return queue(to, subject, template, context)


def queue(
    to: str, subject: str, template: str, context: dict[str, Any], *, dedupe_key: str | None = None
) -> EmailMessage:
    """``send`` with an optional ``dedupe_key``: a second message with the same key is dropped."""
    text = render_template(f"emails/{template}.txt", **context)
    html = render_template(f"emails/{template}.html", **context)
    values = {
        "to": to,
        "subject": subject[:255],
        "text": text,
        "html": html,
        "dedupe_key": dedupe_key,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": utcnow(),
        "created_at": utcnow(),
    }
    statement = insert(outbox_t).values(values)
    if dedupe_key is not None:
        statement = _insert_unless_there(values)
    db.session.execute(statement)
    return _message(None, to, subject, text, html)


def _insert_unless_there(values: dict[str, Any]) -> Any:
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(outbox_t).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"])


def _message(message_id: int | None, to: str, subject: str, text: str, html: str) -> EmailMessage:
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_DEFAULT_SENDER"]
    message["To"] = to
    message["Subject"] = subject
    if message_id is not None:
        domain = config["MAIL_DEFAULT_SENDER"].rpartition("@")[2].strip(">") or "localhost"
        message["Message-ID"] = f"<outbox-{message_id}@{domain}>"
    else:
        message["Message-ID"] = make_msgid()
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


@dataclass
class Delivery:
    """What one ``deliver_due`` run did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0

    def describe(self) -> str:
        return f"mail: {self.sent} sent, {self.retrying} to retry, {self.failed} failed for good"


class _Transport:
    """One SMTP connection for a run, opened on first use; the log when no ``MAIL_SERVER`` is set."""

    def __init__(self) -> None:
        self.smtp: smtplib.SMTP | None = None

    def send(self, message: EmailMessage) -> None:
        config = current_app.config
        if config.get("MAIL_SERVER"):
            if self.smtp is None:
                smtp = smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=config["MAIL_TIMEOUT"])
                try:
                    if config["MAIL_USE_TLS"]:
                        smtp.starttls()
                    if config.get("MAIL_USERNAME"):
                        smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"] or "")
                except BaseException:
                    smtp.close()
                    raise
                self.smtp = smtp
            try:
                self.smtp.send_message(message)
            except BaseException:
                self.close()  # the session's state is unknown now: a fresh connection for the next message
                raise
        else:
            body = message.get_body(preferencelist=("plain",))
            log.info("Mail to %s: %s\n%s", message["To"], message["Subject"], body.get_content() if body else "")
        if config.get("TESTING"):
            current_app.extensions.setdefault("outbox", []).append(message)

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
            self.smtp = None


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failure: MAIL_RETRY_SECONDS, doubling, at most six hours."""
    base = current_app.config["MAIL_RETRY_SECONDS"]
    return min(timedelta(seconds=base * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def deliver_due(now: datetime | None = None, *, limit: int = 100) -> Delivery:
    """Send up to ``limit`` due messages; commits. Safe when several processes run it at once.

    Each message is first claimed in a short transaction (its row locked, skipped by other workers,
    its next attempt pushed past a lease), then sent with no transaction open, so no lock is held
    while a slow server answers; then marked sent, or scheduled again, or failed.
    """
    result, transport = Delivery(), _Transport()
    max_attempts = current_app.config["MAIL_MAX_ATTEMPTS"]
    lease = timedelta(seconds=current_app.config["MAIL_TIMEOUT"] * 6)
    try:
        for _ in range(limit):
            moment = now or utcnow()
            row = db.session.execute(
                select(outbox_t)
                .where(outbox_t.c.status == "pending", outbox_t.c.next_attempt_at <= moment)
                .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                db.session.rollback()
                break
            attempts = row.attempts + 1
            # The claim: another worker skips it now, and if this process dies it is retried after the lease.
            db.session.execute(
                update(outbox_t)
                .where(outbox_t.c.id == row.id)
                .values(attempts=attempts, next_attempt_at=moment + max(lease, backoff(attempts)))
            )
            db.session.commit()
            values = _attempt(transport, row, attempts, max_attempts, moment, result)
            db.session.execute(update(outbox_t).where(outbox_t.c.id == row.id).values(**values))
            db.session.commit()
    finally:
        transport.close()
    return result


def _attempt(
    transport: _Transport, row: Any, attempts: int, max_attempts: int, moment: datetime, result: Delivery
) -> dict[str, Any]:
    """Send one claimed message; the columns to write afterwards."""
    try:
        transport.send(_message(row.id, row.to, row.subject, row.text, row.html))
    except (smtplib.SMTPException, OSError) as error:
        permanent = isinstance(error, smtplib.SMTPResponseException) and 500 <= error.smtp_code < 600
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            permanent = all(500 <= code < 600 for code, _ in error.recipients.values())
        values: dict[str, Any] = {"last_error": f"{type(error).__name__}: {error}"[:2000]}
        if permanent or attempts >= max_attempts:
            values["status"] = "failed"
            result.failed += 1
            log.error("mail %s to %s failed for good after %s attempt(s): %s", row.id, row.to, attempts, error)
        else:
            values["next_attempt_at"] = moment + backoff(attempts)
            result.retrying += 1
            log.warning("mail %s to %s: attempt %s failed (%s); retrying later", row.id, row.to, attempts, error)
        return values
    result.sent += 1
    return {"status": "sent", "sent_at": utcnow(), "last_error": None}


def external_url(endpoint: str, **values: object) -> str:
    """An absolute link for an email, on ``BASE_URL`` rather than whatever Host the request named."""
    return current_app.config["BASE_URL"] + url_for(endpoint, **values)


def external_path(path: str) -> str:
    """An absolute link to a path of the app, for mail written where there is no request (jobs)."""
    return current_app.config["BASE_URL"] + path
