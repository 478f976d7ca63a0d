"""Log-out ends the session on the server: old cookies, replayed, open nothing.

Each signed-in browser is a ``login_sessions`` row whose token is Flask-Login's id, in the session
cookie and the remember-me cookie alike. Logging out deletes that browser's row (other devices stay
signed in); a password reset deletes them all.
"""

from __future__ import annotations

from datetime import timedelta

from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from starter.extensions import db
from starter.models import LoginSession, utcnow
from tests.conftest import AuthActions


def cookies(client: FlaskClient) -> dict[str, str]:
    return {name: client.get_cookie(name).value for name in ("session", "remember_token") if client.get_cookie(name)}


def replay(app, saved: dict[str, str]) -> FlaskClient:  # type: ignore[no-untyped-def]
    """A fresh browser holding only ``saved`` cookies: what someone who copied them would have."""
    client = app.test_client()
    for name, value in saved.items():
        client.set_cookie(name, value)
    return client


def opens_dashboard(client: FlaskClient) -> bool:
    response = client.get("/dashboard")
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/login")
    return False


def login_sessions() -> int:
    return db.session.scalar(select(func.count()).select_from(LoginSession)) or 0


def test_an_old_session_cookie_replayed_after_log_out_is_sent_to_log_in(app, client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")
    saved = cookies(client)
    assert opens_dashboard(replay(app, saved)), "the copied cookie works while logged in"

    auth.logout()

    assert not opens_dashboard(replay(app, saved))
    assert login_sessions() == 0


def test_an_old_remember_me_cookie_replayed_after_log_out_is_sent_to_log_in(app, client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com", remember="y")
    saved = cookies(client)
    assert set(saved) == {"session", "remember_token"}
    assert opens_dashboard(replay(app, {"remember_token": saved["remember_token"]})), "it logs a new browser in"

    auth.logout()

    assert not opens_dashboard(replay(app, {"remember_token": saved["remember_token"]}))
    assert not opens_dashboard(replay(app, saved))


def test_logging_out_on_one_device_keeps_the_others_signed_in(app, client, auth, fast_user):
    fast_user("alice@example.com")
    laptop, phone = auth, AuthActions(app.test_client())
    laptop.login("alice@example.com")
    phone.login("alice@example.com", remember="y")
    assert login_sessions() == 2

    laptop.logout()

    assert not opens_dashboard(laptop.client)
    assert opens_dashboard(phone.client)
    assert login_sessions() == 1


def test_a_login_session_past_its_lifetime_is_refused(app, client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com", remember="y")
    db.session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()

    assert not opens_dashboard(client)
    assert not opens_dashboard(replay(app, {"remember_token": cookies(client).get("remember_token", "")}))


def test_sessions_last_as_long_as_their_cookie(app, client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")
    AuthActions(app.test_client()).login("alice@example.com", remember="y")

    lifetimes = sorted(
        (row.expires_at - row.created_at, row.remember) for row in db.session.scalars(select(LoginSession))
    )

    assert lifetimes == [(app.config["PERMANENT_SESSION_LIFETIME"], False), (timedelta(days=365), True)]


def test_tokens_are_stored_only_hashed(app, client, auth, fast_user):
    fast_user("alice@example.com")
    auth.login("alice@example.com")
    with client.session_transaction() as session:
        token = session["_user_id"]

    stored = db.session.scalar(select(LoginSession))

    assert token not in stored.token_hash and len(stored.token_hash) == 64


def test_a_users_expired_sessions_are_dropped_at_their_next_log_in(app, client, auth, fast_user):
    fast_user("alice@example.com")
    for _ in range(3):
        AuthActions(app.test_client()).login("alice@example.com")
    db.session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(days=1)))
    db.session.commit()

    auth.login("alice@example.com")

    assert login_sessions() == 1
