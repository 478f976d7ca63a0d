"""Sign up, log in, log out and password reset. Thin: forms in, services called, pages out."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user

from ... import accounts, catalog, mail, teams
from ...extensions import db, limiter
from .forms import ForgotPasswordForm, LoginForm, ResetPasswordForm, SignupForm

bp = Blueprint("auth", __name__, url_prefix="/auth")


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None (blocks //evil.example, https://…, /\\evil)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return None
    return target


def _start_session(user, remember: bool = False) -> None:  # type: ignore[no-untyped-def]
    """A new login session (a row the log-out deletes) and a fresh cookie session; commits."""
    # Remember-me: as long as its cookie (a year). Otherwise the cookie ends with the browser, and the
    # row after PERMANENT_SESSION_LIFETIME (31 days) even if the browser is never closed.
    if remember:
        lifetime = current_app.config.get("REMEMBER_COOKIE_DURATION", timedelta(days=365))
    else:
        lifetime = current_app.config["PERMANENT_SESSION_LIFETIME"]
    accounts.open_login_session(user, lifetime=lifetime, remember=remember)
    db.session.commit()
    # A fresh session at log-in: nothing set before it (by anyone) survives into the logged-in one.
    session.clear()
    login_user(user, remember=remember)


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


# Log-in limits are per client and per (email, client): a flood of wrong passwords from one place
# locks out that place, never the account's owner logging in from another (a per-email limit alone
# lets anyone lock a victim out). Per client only failures count, so many people behind one office
# address can log in; per (email, client) every attempt counts up front, so concurrent guesses at
# one account cannot all slip past a counter that is only bumped after each answer. The client is
# the remote address, the real one behind a proxy when TRUSTED_PROXY_COUNT is set.
def _client_key() -> str:
    return "login-client:" + get_remote_address()


def _email_client_key() -> str:
    return f"login-email:{accounts.normalise_email(request.form.get('email', ''))}:{get_remote_address()}"


def _login_failed(_response: Response) -> bool:
    return bool(g.get("login_failed"))


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def signup():  # type: ignore[no-untyped-def]
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = SignupForm()
    invitation = teams.find_invitation(form.invite.data or request.args.get("invite", ""))
    if request.method == "GET" and invitation is not None:
        form.invite.data = request.args.get("invite", "")
        form.email.data = invitation.email
    if request.method == "GET":
        form.plan.data, form.interval.data = request.args.get("plan", ""), request.args.get("interval", "")
    chosen = _chosen_plan(form.plan.data, form.interval.data)
    if form.validate_on_submit():
        try:
            user = accounts.sign_up(form.name.data, form.email.data, form.password.data)
            if invitation is not None and invitation.email == user.email:
                teams.accept_invitation(invitation, user)
        except accounts.AccountError as error:
            form.email.errors.append(str(error))
        else:
            db.session.commit()
            _start_session(user)
            flash("Welcome! Your account is ready.", "success")
            if chosen is not None:  # on to the plan picked on the pricing page, its Checkout one click away
                return redirect(url_for("billing.index", plan=chosen[0].code, interval=chosen[1]))
            return redirect(url_for("dashboard.index"))
    return render_template("auth/signup.html", form=form, invitation=invitation, chosen=chosen)


def _chosen_plan(code: str | None, interval: str | None) -> tuple[catalog.Plan, str] | None:
    """The paid plan (and interval) a visitor picked on the pricing page, if the catalog sells it so."""
    interval = interval or "month"
    plan = catalog.paid_plan_sold(code, interval)
    return (plan, interval) if plan is not None else None


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_client_key, deduct_when=_login_failed)
@limiter.limit(_login_limit, methods=["POST"], key_func=_email_client_key)
def login():  # type: ignore[no-untyped-def]
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
    if form.validate_on_submit():
        user = accounts.authenticate(form.email.data, form.password.data)
        if user is None:
            g.login_failed = True
            flash("Wrong email or password.", "error")
        else:
            db.session.commit()
            _start_session(user, remember=form.remember.data)
            return redirect(safe_next(form.next.data) or url_for("dashboard.index"))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout():  # type: ignore[no-untyped-def]
    """End this browser's login session on the server, so neither its session cookie nor its
    remember-me cookie opens anything again; the user's other devices stay signed in."""
    accounts.close_login_session(current_user.login_token)
    db.session.commit()
    # Clear first: logout_user() leaves a note in the session that deletes the remember-me cookie.
    session.clear()
    logout_user()
    flash("You have been logged out.", "info")
    return redirect(url_for("main.index"))


@bp.route("/forgot", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def forgot_password():  # type: ignore[no-untyped-def]
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        user = accounts.find_user(form.email.data)
        if user is not None:
            link = mail.external_url("auth.reset_password", token=accounts.reset_token(user))
            mail.send(user.email, "Reset your password", "reset_password", user=user, link=link)
            db.session.commit()  # the outbox row: the mail leaves from the outbox job, never from this request
        # The same answer either way, so the form does not reveal who has an account.
        flash("If that email has an account, a reset link is on its way.", "info")
        return redirect(url_for("auth.login"))
    return render_template("auth/forgot.html", form=form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):  # type: ignore[no-untyped-def]
    user = accounts.user_for_reset_token(token)
    if user is None:
        flash("That reset link is invalid, expired or already used. Ask for a new one.", "error")
        return redirect(url_for("auth.forgot_password"))
    form = ResetPasswordForm()
    if form.validate_on_submit():
        accounts.reset_password(user, form.password.data)
        db.session.commit()
        _start_session(user)
        flash("Your password has been changed.", "success")
        return redirect(url_for("dashboard.index"))
    return render_template("auth/reset.html", form=form)
