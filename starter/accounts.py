"""Accounts: sign-up, log-in checks, login sessions and password reset tokens. The caller commits."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, select

from .extensions import db
from .models import LoginSession, User, utcnow
from .teams import create_team

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 128
# A real hash to compare against when the email is unknown, so both paths take as long.
_DUMMY_HASH = "scrypt:32768:8:1$0123456789abcdef$" + "0" * 128


class AccountError(Exception):
    """A sign-up or reset rule was broken; the message is safe to show."""


class WrongPassword(AccountError):
    """The current password given to confirm a change is not the account's."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def find_user(email: str) -> User | None:
    return db.session.scalar(select(User).filter_by(email=normalise_email(email)))


def sign_up(name: str, email: str, password: str) -> User:
    """Create a user with a personal team (and its free credits). Raises AccountError if the email is taken."""
    email = normalise_email(email)
    if find_user(email) is not None:
        raise AccountError("An account with this email already exists. Log in instead.")
    user = User(name=name.strip(), email=email)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    create_team(user, f"{user.name.split(' ')[0]}'s team", personal=True)
    return user


def authenticate(email: str, password: str) -> User | None:
    """The user for these credentials, or None; the same work is done whether or not the email exists."""
    user = find_user(email)
    if user is None:
        from werkzeug.security import check_password_hash

        check_password_hash(_DUMMY_HASH, password)
        return None
    if not user.check_password(password):
        return None
    user.last_login_at = utcnow()
    return user


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="password-reset")


def _fingerprint(user: User) -> str:
    # Ties the token to the current password: once it changes, every older token stops working.
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def reset_token(user: User) -> str:
    return _serializer().dumps({"user": user.id, "pw": _fingerprint(user)})


def user_for_reset_token(token: str) -> User | None:
    """The user a valid, unexpired, unused token was made for; None otherwise."""
    try:
        data = _serializer().loads(token, max_age=current_app.config["PASSWORD_RESET_MAX_AGE"])
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict):
        return None
    user = db.session.get(User, data.get("user")) if isinstance(data.get("user"), int) else None
    if user is None or data.get("pw") != _fingerprint(user):
        return None
    return user


def reset_password(user: User, password: str) -> None:
    """Set a new password; this also invalidates the reset token and ends every login session."""
    user.set_password(password)
    close_all_login_sessions(user)


# --- login sessions: one row per signed-in browser ------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_login_session(user: User, *, lifetime: timedelta, remember: bool = False) -> str:
    """A new login session for ``user``, valid for ``lifetime``; returns its token (Flask-Login's id).

    Also drops this user's expired sessions, so rows do not pile up for people who come back.
    """
    now = utcnow()
    db.session.execute(delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    db.session.add(
        LoginSession(
            user_id=user.id, token_hash=_token_hash(token), remember=remember, created_at=now, expires_at=now + lifetime
        )
    )
    db.session.flush()
    user.login_token = token
    return token


def user_for_login_token(token: str) -> User | None:
    """The user of an open, unexpired login session; one query on every signed-in request."""
    user = db.session.scalar(
        select(User)
        .join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == _token_hash(token), LoginSession.expires_at > utcnow())
    )
    if user is not None:
        user.login_token = token
    return user


def close_login_session(token: str | None) -> None:
    """End one login session (log-out): its session and remember-me cookies stop working."""
    if token:
        db.session.execute(delete(LoginSession).where(LoginSession.token_hash == _token_hash(token)))


def close_all_login_sessions(user: User) -> None:
    """End every login session of ``user`` (a new password): every device must log in again."""
    db.session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))


def close_other_login_sessions(user: User, keep_token: str | None) -> None:
    """End every login session of ``user`` but the one of ``keep_token`` (this browser, after a new password)."""
    query = delete(LoginSession).where(LoginSession.user_id == user.id)
    if keep_token:
        query = query.where(LoginSession.token_hash != _token_hash(keep_token))
    db.session.execute(query)


def open_login_sessions(user: User) -> int:
    """How many browsers are signed in as ``user`` now."""
    return (
        db.session.scalar(
            select(func.count())
            .select_from(LoginSession)
            .where(LoginSession.user_id == user.id, LoginSession.expires_at > utcnow())
        )
        or 0
    )


# --- the account page: name, password, email ------------------------------------------------------


def rename(user: User, name: str) -> None:
    user.name = name.strip()


def change_password(user: User, current: str, new: str, *, keep_token: str | None) -> None:
    """A new password, given the current one (AccountError otherwise); every other browser is signed out."""
    if not user.check_password(current):
        raise WrongPassword("That is not your current password.")
    user.set_password(new)  # also makes every password-reset link sent before it dead (_fingerprint)
    close_other_login_sessions(user, keep_token)


def _email_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="email-change")


def request_email_change(user: User, password: str, new_email: str) -> str:
    """Start moving ``user`` to ``new_email``; returns the token of the link to mail there. Nothing changes yet.

    The current password is required: whoever finds a signed-in browser must not take the account over
    by moving it to their address. Only the newest request's link works (its nonce is the one stored).
    """
    if not user.check_password(password):
        raise WrongPassword("That is not your current password.")
    new_email = normalise_email(new_email)
    if new_email == user.email:
        raise AccountError("That is already your email address.")
    if find_user(new_email) is not None:
        raise AccountError("Another account uses that email address.")
    user.pending_email, user.pending_email_nonce = new_email, secrets.token_hex(16)
    return _email_serializer().dumps({"user": user.id, "email": new_email, "nonce": user.pending_email_nonce})


def cancel_email_change(user: User) -> None:
    user.pending_email = user.pending_email_nonce = None


def user_for_email_token(token: str) -> User | None:
    """The user whose newest, unexpired, unused email-change link this is; None otherwise."""
    try:
        data = _email_serializer().loads(token, max_age=current_app.config["EMAIL_CHANGE_MAX_AGE"])
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("user"), int) or not isinstance(data.get("nonce"), str):
        return None
    user = db.session.get(User, data["user"])
    if user is None or user.pending_email_nonce is None or user.pending_email != data.get("email"):
        return None
    return user if secrets.compare_digest(user.pending_email_nonce, data["nonce"]) else None


def confirm_email_change(user: User) -> str:
    """Make the pending address the account's; returns the old one. The link is spent (single use).

    Raises AccountError when another account took the address since the request.
    """
    new_email, old_email = user.pending_email, user.email
    if new_email is None:
        raise AccountError("There is no email change to confirm.")
    cancel_email_change(user)
    if find_user(new_email) is not None:
        raise AccountError("Another account now uses that email address: the change was cancelled.")
    user.email = new_email
    return old_email
