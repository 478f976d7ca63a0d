"""The account page: name, email (confirmed by a link), password, sign out everywhere, delete the account.

Thin: each form posts to its own route; on a field error the page is drawn again (400) with that form's
errors and the others blank. The services are ``starter.accounts`` and ``starter.team_deletion``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, session, url_for
from flask_login import current_user, login_required, logout_user
from sqlalchemy.exc import IntegrityError

from ... import accounts, mail, team_deletion
from ...extensions import db, limiter
from ...teams import TeamError
from .forms import ConfirmForm, DeleteAccountForm, EmailChangeForm, PasswordChangeForm, ProfileForm

bp = Blueprint("account", __name__, url_prefix="/account")


def _account_limit() -> str:
    return current_app.config["ACCOUNT_RATE_LIMIT"]


def _email_limit() -> str:
    return current_app.config["EMAIL_CHANGE_RATE_LIMIT"]


def _person_key() -> str:
    # Per person, not per address: a stolen session guessing the password is slowed wherever it runs.
    return f"account:user:{current_user.id}"


# One budget for every form that checks the password: guesses cannot be spread over three forms.
password_checks = limiter.shared_limit(_account_limit, scope="account-password", key_func=_person_key)


def _page(status: int = 200, **forms: Any):  # type: ignore[no-untyped-def]
    defaults = {
        "profile_form": ProfileForm(formdata=None, name=current_user.name),
        "email_form": EmailChangeForm(formdata=None),
        "password_form": PasswordChangeForm(formdata=None),
        "delete_form": DeleteAccountForm(formdata=None),
    }
    return render_template(
        "account/index.html",
        **(defaults | forms),
        confirm_form=ConfirmForm(),
        sessions=accounts.open_login_sessions(current_user),
        deletion=team_deletion.account_deletion(current_user),
    ), status


@bp.get("")
@login_required
def index():  # type: ignore[no-untyped-def]
    return _page()


@bp.post("/name")
@login_required
def name():  # type: ignore[no-untyped-def]
    form = ProfileForm()
    if not form.validate_on_submit():
        return _page(400, profile_form=form)
    accounts.rename(current_user, form.name.data)
    db.session.commit()
    flash("Your name was saved.", "success")
    return redirect(url_for("account.index"))


@bp.post("/email")
@login_required
@password_checks
@limiter.limit(_email_limit, key_func=lambda: f"email-change:user:{current_user.id}")
def email():  # type: ignore[no-untyped-def]
    form = EmailChangeForm()
    if not form.validate_on_submit():
        return _page(400, email_form=form)
    try:
        token = accounts.request_email_change(current_user, form.email_password.data, form.new_email.data)
    except accounts.AccountError as error:
        field = form.email_password if isinstance(error, accounts.WrongPassword) else form.new_email
        field.errors = [*field.errors, str(error)]
        return _page(400, email_form=form)
    new_email = current_user.pending_email
    link = mail.external_url("account.confirm_email", token=token)
    mail.send(new_email, "Confirm your new email address", "confirm_email", user=current_user, link=link)
    db.session.commit()
    flash(f"We sent a confirmation link to {new_email}. Your email changes when you follow it.", "info")
    return redirect(url_for("account.index"))


@bp.post("/email/cancel")
@login_required
def cancel_email():  # type: ignore[no-untyped-def]
    if not ConfirmForm().validate_on_submit():
        abort(400)
    accounts.cancel_email_change(current_user)
    db.session.commit()
    flash("Email change cancelled: the link we sent no longer works.", "info")
    return redirect(url_for("account.index"))


@bp.route("/email/confirm/<token>", methods=["GET", "POST"])
def confirm_email(token: str):  # type: ignore[no-untyped-def]
    """The emailed link: a page with a button (a GET changes nothing: mail scanners follow links)."""
    user = accounts.user_for_email_token(token)
    if user is None:
        return render_template("account/email_link_invalid.html"), 404
    form = ConfirmForm()
    if not form.validate_on_submit():
        return render_template("account/confirm_email.html", form=form, user=user)
    try:
        old_email = accounts.confirm_email_change(user)
        db.session.flush()
    except (accounts.AccountError, IntegrityError) as error:
        db.session.rollback()
        user = accounts.user_for_email_token(token)
        if user is not None:
            accounts.cancel_email_change(user)
            db.session.commit()
        message = str(error) if isinstance(error, accounts.AccountError) else "Another account now uses that address."
        flash(message, "error")
        return redirect(url_for("account.index"))
    # The old address hears of it: if someone else made the change, its owner knows at once.
    mail.send(old_email, "Your email address was changed", "email_changed", user=user, old_email=old_email)
    db.session.commit()
    flash(f"Your email address is now {user.email}.", "success")
    return redirect(url_for("account.index"))


@bp.post("/password")
@login_required
@password_checks
def password():  # type: ignore[no-untyped-def]
    form = PasswordChangeForm()
    if not form.validate_on_submit():
        return _page(400, password_form=form)
    try:
        accounts.change_password(
            current_user, form.current_password.data, form.new_password.data, keep_token=current_user.login_token
        )
    except accounts.AccountError as error:
        form.current_password.errors = [*form.current_password.errors, str(error)]
        return _page(400, password_form=form)
    db.session.commit()
    flash("Your password was changed. Every other browser signed in as you has been signed out.", "success")
    return redirect(url_for("account.index"))


def _end_this_session() -> None:
    session.clear()  # first: logout_user() then leaves the note that deletes the remember-me cookie
    logout_user()


@bp.post("/sign-out-everywhere")
@login_required
def sign_out_everywhere():  # type: ignore[no-untyped-def]
    if not ConfirmForm().validate_on_submit():
        abort(400)
    accounts.close_all_login_sessions(current_user)
    db.session.commit()
    _end_this_session()
    flash("You were signed out everywhere, this browser included.", "info")
    return redirect(url_for("auth.login"))


@bp.post("/delete")
@login_required
@password_checks
def delete():  # type: ignore[no-untyped-def]
    form = DeleteAccountForm()
    if not form.validate_on_submit():
        return _page(400, delete_form=form)
    if not current_user.check_password(form.delete_password.data):
        form.delete_password.errors = [*form.delete_password.errors, "That is not your password."]
        return _page(400, delete_form=form)
    try:
        plan = team_deletion.delete_account(current_user)
    except TeamError as error:
        db.session.rollback()
        form.delete_password.errors = [*form.delete_password.errors, str(error)]
        return _page(409, delete_form=form)
    db.session.commit()
    _end_this_session()
    gone = f" {len(plan.deleted)} team(s) were deleted with it." if plan.deleted else ""
    flash(f"Your account was deleted.{gone}", "info")
    return redirect(url_for("main.index"))
