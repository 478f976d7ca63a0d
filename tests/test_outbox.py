"""The outbox: mail is a row written with the change that causes it, sent by the delivery job.

A real SMTP server (aiosmtpd) that refuses for a while, then accepts: every message arrives, once.
A server that is down or slow is never touched by a request. A rolled-back change sends nothing.
"""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from starter import mail, scheduler
from starter.extensions import db
from starter.models import OutboxMessage, utcnow


class FlakySmtp:
    """An aiosmtpd handler: answers ``451`` to the first ``refuse`` messages, then accepts and records them."""

    def __init__(self, refuse: int = 0, code: str = "451 4.3.0 Try again later") -> None:
        self.refuse, self.code = refuse, code
        self.received: list[tuple[str, str]] = []  # (recipient, subject)
        self.attempts = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.refuse:
                return self.code
            subject = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in envelope.content.decode().splitlines()
                    if line.startswith("Subject:")
                ),
                "",
            )
            self.received.extend((rcpt, subject) for rcpt in envelope.rcpt_tos)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(app):  # type: ignore[no-untyped-def]
    handler = FlakySmtp()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=controller.port, MAIL_USE_TLS=False, MAIL_TIMEOUT=5)
    yield handler
    controller.stop()


def queue_three() -> None:
    for n in range(3):
        mail.send(
            f"person{n}@example.com",
            f"Hello {n}",
            "invitation",
            team={"name": "Acme"},
            inviter={"name": "Al"},
            link="x",
        )
    db.session.commit()


def statuses() -> list[tuple[str, int]]:
    rows = db.session.execute(select(OutboxMessage.status, OutboxMessage.attempts).order_by(OutboxMessage.id))
    return [tuple(row) for row in rows]


def test_a_failing_server_gets_retries_and_every_message_arrives_once(app, smtp):
    smtp.refuse = 4  # the first four DATA commands get 451
    queue_three()
    now = utcnow()

    first = mail.deliver_due(now)
    assert (first.sent, first.retrying, first.failed) == (0, 3, 0)
    assert smtp.received == []
    assert statuses() == [("pending", 1)] * 3

    assert mail.deliver_due(now).sent == 0, "nothing is due again before its backoff"

    later = now + timedelta(seconds=app.config["MAIL_RETRY_SECONDS"] + 1)
    second = mail.deliver_due(later)
    assert (second.sent, second.retrying) == (2, 1)  # the fourth refusal hit the first message again

    much_later = later + timedelta(hours=1)
    assert mail.deliver_due(much_later).sent == 1
    assert mail.deliver_due(much_later + timedelta(days=1)).sent == 0, "a sent message is never sent again"

    assert sorted(smtp.received) == [(f"person{n}@example.com", f"Hello {n}") for n in range(3)]
    assert [status for status, _ in statuses()] == ["sent"] * 3
    assert smtp.attempts == 7


def test_a_permanent_refusal_fails_at_once_and_the_rest_still_goes(app, smtp):
    smtp.refuse, smtp.code = 1, "554 5.7.1 Rejected"
    queue_three()

    result = mail.deliver_due(utcnow())

    assert (result.sent, result.retrying, result.failed) == (2, 0, 1)
    rows = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [row.status for row in rows] == ["failed", "sent", "sent"]
    assert "554" in rows[0].last_error
    assert len(smtp.received) == 2


def test_a_server_that_is_down_is_retried_until_the_attempts_run_out(app):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_USE_TLS=False, MAIL_MAX_ATTEMPTS=3)
    queue_three()
    moment = utcnow()
    for _ in range(3):
        result = mail.deliver_due(moment)
        assert result.sent == 0 and result.retrying + result.failed == 3
        moment += timedelta(days=1)
    assert statuses() == [("failed", 3)] * 3
    assert mail.deliver_due(moment + timedelta(days=1)).failed == 0, "a failed message stays failed (and kept)"


def test_a_request_never_talks_to_the_mail_server(app, auth, fast_user, outbox):
    """An invitation is queued in the request's transaction; the server only hears of it from the job."""
    connections = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=listener.getsockname()[1], MAIL_USE_TLS=False)

    def accept() -> None:  # a server that accepts and then never answers (the slowest server there is)
        try:
            while True:
                conn, _ = listener.accept()
                connections.append(conn)
        except OSError:
            return

    watcher = threading.Thread(target=accept, daemon=True)
    watcher.start()
    try:
        fast_user("owner@example.com")
        auth.login("owner@example.com")
        response = auth.post(
            "/team/invitations", {"email": "new@example.com", "role": "member"}, token_from="/team/members"
        )
        assert response.status_code == 302
        assert connections == [], "the request did not connect to the mail server"
        assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    finally:
        listener.close()
        watcher.join(timeout=2)
        for conn in connections:
            conn.close()


def test_a_rolled_back_change_sends_nothing(app, outbox):
    mail.send("someone@example.com", "Never", "invitation", team={"name": "Acme"}, inviter={"name": "Al"}, link="x")
    db.session.rollback()
    assert outbox == []
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_a_deduplicated_message_is_queued_once(app, outbox):
    for _ in range(3):
        mail.queue(
            "a@example.com",
            "Once",
            "invitation",
            {"team": {"name": "A"}, "inviter": {"name": "B"}, "link": "x"},
            dedupe_key="k",
        )
        db.session.commit()
    assert [message["Subject"] for message in outbox] == ["Once"]


def test_the_scheduler_job_delivers_with_a_stable_message_id(app, smtp):
    queue_three()
    summary = scheduler.deliver_mail(app)
    assert summary.sent == 3
    ids = db.session.scalars(select(OutboxMessage.id)).all()
    assert len(smtp.received) == 3 and len(ids) == 3


@pytest.mark.postgres
def test_two_workers_at_once_send_each_message_once(app, smtp):
    for n in range(40):
        mail.send(f"p{n}@example.com", f"M{n}", "invitation", team={"name": "A"}, inviter={"name": "B"}, link="x")
    db.session.commit()
    barrier = threading.Barrier(4)
    results = []

    def work() -> None:
        with app.app_context():
            barrier.wait(timeout=5)
            results.append(mail.deliver_due(utcnow()))
            db.session.remove()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(result.sent for result in results) == 40
    assert sorted(smtp.received) == sorted((f"p{n}@example.com", f"M{n}") for n in range(40))
