"""Teams: create, switch, members and roles, invitations. Another team's anything is a 404."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

from ... import accounts, api_keys, credits, mail, team_deletion, teams
from ...access import team_role_required
from ...credits import limits
from ...extensions import db, limiter
from ...models import utcnow
from .forms import (
    AlertEmailsForm,
    AlertLevelsForm,
    ApiKeyForm,
    ApiKeyLimitForm,
    ConfirmForm,
    DeleteTeamForm,
    InviteForm,
    MemberLimitForm,
    RoleForm,
    SwitchTeamForm,
    TeamForm,
    parse_thresholds,
)

bp = Blueprint("teams", __name__, url_prefix="/team")


def _invitation_limit() -> str:
    return current_app.config["INVITATION_RATE_LIMIT"]


def _inviter_key() -> str:
    # Per person, not per team: making more teams must not buy more invitation mail.
    return f"invitations:user:{current_user.id}"


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():  # type: ignore[no-untyped-def]
    form = TeamForm()
    if form.validate_on_submit():
        team = teams.create_team(current_user, form.name.data)
        db.session.commit()
        flash(f"Team “{team.name}” created. You are its owner.", "success")
        return redirect(url_for("teams.members"))
    return render_template("teams/new.html", form=form)


@bp.post("/switch")
@login_required
def switch():  # type: ignore[no-untyped-def]
    form = SwitchTeamForm()
    if not form.validate_on_submit():
        abort(400, "Choose a team.")
    team = teams.switch_team(current_user, form.team_id.data)
    if team is None:
        abort(404)
    db.session.commit()
    flash(f"Switched to {team.name}.", "info")
    return redirect(url_for("dashboard.index"))


@bp.get("/members")
@team_role_required("member")
def members():  # type: ignore[no-untyped-def]
    can_manage = teams.has_role(g.membership, "admin")
    return render_template(
        "teams/members.html",
        members=teams.members(g.team),
        invitations=teams.open_invitations(g.team) if can_manage else [],
        invite_form=InviteForm(),
        role_form=RoleForm(),
        confirm_form=ConfirmForm(),
        limit_form=MemberLimitForm(),
        used=limits.used_by(g.team.id, "member", utcnow()),
        can_manage=can_manage,
        is_owner=g.membership.role == "owner",
        sole_owner=teams.is_sole_owner(g.membership),
    )


def _settings_page(status: int = 200, **forms):  # type: ignore[no-untyped-def]
    forms.setdefault("rename_form", TeamForm(formdata=None, name=g.team.name))
    forms.setdefault("delete_form", DeleteTeamForm(formdata=None))
    return render_template(
        "teams/settings.html",
        **forms,
        confirm_form=ConfirmForm(),
        can_manage=teams.has_role(g.membership, "admin"),
        is_owner=g.membership.role == "owner",
        sole_owner=teams.is_sole_owner(g.membership),
        deletion_blocker=team_deletion.deletion_blocker(g.team),
        balance=credits.balance(g.team.id),
    ), status


@bp.get("/settings")
@team_role_required("member")
def settings():  # type: ignore[no-untyped-def]
    return _settings_page()


@bp.post("/settings/name")
@team_role_required("admin")
def rename():  # type: ignore[no-untyped-def]
    form = TeamForm()
    if not form.validate_on_submit():
        return _settings_page(400, rename_form=form)
    teams.rename_team(g.team, form.name.data)
    db.session.commit()
    flash(f"The team is now called “{g.team.name}”.", "success")
    return redirect(url_for("teams.settings"))


@bp.post("/leave")
@team_role_required("member")
def leave():  # type: ignore[no-untyped-def]
    if not ConfirmForm().validate_on_submit():
        abort(400)
    name = g.team.name
    try:
        revoked = teams.leave_team(g.membership)
    except teams.TeamError as error:
        flash(str(error), "error")
        return redirect(url_for("teams.settings"))
    db.session.commit()
    note = f" The {revoked} API key(s) you created there were revoked." if revoked else ""
    flash(f"You left {name}.{note}", "info")
    return redirect(url_for("dashboard.index"))


@bp.post("/delete")
@team_role_required("owner")
def delete():  # type: ignore[no-untyped-def]
    form = DeleteTeamForm()
    valid = form.validate_on_submit()
    if valid and form.confirm_name.data != g.team.name:
        form.confirm_name.errors = [*form.confirm_name.errors, f"Type “{g.team.name}” exactly, to confirm."]
        valid = False
    if not valid:
        return _settings_page(400, delete_form=form)
    name = g.team.name
    try:
        written_off = team_deletion.delete_team(g.team)
    except teams.TeamError as error:
        db.session.rollback()
        form.confirm_name.errors = [*form.confirm_name.errors, str(error)]
        return _settings_page(409, delete_form=form)
    db.session.commit()
    flash(f"{name} was deleted; its {written_off:,} remaining credits were written off.", "info")
    return redirect(url_for("dashboard.index"))


@bp.post("/invitations")
@team_role_required("admin")
@limiter.limit(_invitation_limit, key_func=_inviter_key)  # inside the role check: only admins' sends count
def invite():  # type: ignore[no-untyped-def]
    form = InviteForm()
    if not form.validate_on_submit():
        flash("Enter a valid email address and role.", "error")
        return redirect(url_for("teams.members"))
    email = accounts.normalise_email(form.email.data)
    try:
        config = current_app.config
        limits = teams.InvitationLimits(config["INVITATIONS_PER_TEAM_PER_DAY"], config["INVITATIONS_PER_USER_PER_DAY"])
        _invitation, token = teams.invite(
            g.team, current_user, email, form.role.data, config["INVITATION_MAX_AGE_DAYS"], limits
        )
    except teams.TeamError as error:
        flash(str(error), "error")
        return redirect(url_for("teams.members"))
    link = mail.external_url("teams.accept", token=token)
    mail.send(email, f"Join {g.team.name}", "invitation", team=g.team, inviter=current_user, link=link)
    db.session.commit()
    flash(f"Invitation sent to {email}.", "success")
    return redirect(url_for("teams.members"))


@bp.post("/invitations/<id:invitation_id>/revoke")
@team_role_required("admin")
def revoke(invitation_id: int):  # type: ignore[no-untyped-def]
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if not teams.revoke_invitation(g.team, invitation_id):
        abort(404)
    db.session.commit()
    flash("Invitation revoked.", "info")
    return redirect(url_for("teams.members"))


def _revoked_note(revoked: int) -> str:
    return f" The {revoked} API key(s) they created were revoked." if revoked else ""


@bp.post("/members/<id:membership_id>/role")
@team_role_required("admin")
def change_role(membership_id: int):  # type: ignore[no-untyped-def]
    target = teams.team_member(g.team, membership_id) or abort(404)
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400, "Choose a valid role.")
    try:
        revoked = teams.change_role(g.membership, target, form.role.data)
    except teams.TeamError as error:
        flash(str(error), "error")
    else:
        db.session.commit()
        flash(f"{target.user.name} is now {target.role}.{_revoked_note(revoked)}", "success")
    return redirect(url_for("teams.members"))


@bp.post("/members/<id:membership_id>/remove")
@team_role_required("admin")
def remove(membership_id: int):  # type: ignore[no-untyped-def]
    target = teams.team_member(g.team, membership_id) or abort(404)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    name = target.user.name
    try:
        revoked = teams.remove_member(g.membership, target)
    except teams.TeamError as error:
        flash(str(error), "error")
    else:
        db.session.commit()
        flash(f"{name} was removed from the team.{_revoked_note(revoked)}", "info")
    return redirect(url_for("teams.members"))


@bp.route("/invitations/<token>", methods=["GET", "POST"])
def accept(token: str):  # type: ignore[no-untyped-def]
    invitation = teams.find_invitation(token)
    if invitation is None:
        return render_template("teams/invitation_invalid.html"), 404
    if not current_user.is_authenticated:
        if accounts.find_user(invitation.email) is None:
            return redirect(url_for("auth.signup", invite=token))
        flash(f"Log in as {invitation.email} to accept the invitation.", "info")
        return redirect(url_for("auth.login", next=request.path))
    form = ConfirmForm()
    wrong_account = invitation.email != current_user.email
    if request.method == "POST" and form.validate_on_submit() and not wrong_account:
        teams.accept_invitation(invitation, current_user)
        db.session.commit()
        flash(f"You joined {invitation.team.name}.", "success")
        return redirect(url_for("dashboard.index"))
    status = 403 if wrong_account else 200
    return render_template("teams/accept.html", invitation=invitation, form=form, wrong_account=wrong_account), status


NEW_KEY = "new_api_key"  # session entry holding a just-created key until the page has shown it


@bp.route("/api-keys", methods=["GET", "POST"])
@team_role_required("admin")
def keys():  # type: ignore[no-untyped-def]
    """The team's API keys. A new key is created by the POST and shown once by the GET it redirects to.

    Post/redirect/get: refreshing the page that shows the key reloads a GET instead of posting the
    form again (a second key). The raw key waits in the session, never in a URL, for that one GET.
    """
    form = ApiKeyForm()
    if form.validate_on_submit():
        key, raw = api_keys.create(
            g.team.id,
            form.name.data.strip(),
            created_by_id=current_user.id,
            spend_limit=form.spend_limit.data,
            limit_period=form.limit_period.data,
        )
        db.session.commit()
        session[NEW_KEY] = {"team_id": g.team.id, "name": key.name, "raw": raw}
        return redirect(url_for("teams.keys"), 303)
    created = session.pop(NEW_KEY, None)
    if created is not None and created.get("team_id") != g.team.id:
        created = None  # switched team in between: the key is not this team's to show
    return render_template(
        "teams/api_keys.html",
        form=form,
        keys=api_keys.team_keys(g.team.id),
        used=limits.used_by(g.team.id, "api_key", utcnow()),
        limit_form=ApiKeyLimitForm(),
        created=created,
        confirm_form=ConfirmForm(),
    )


@bp.post("/api-keys/<id:key_id>/limit")
@team_role_required("admin")
def key_limit(key_id: int):  # type: ignore[no-untyped-def]
    form = ApiKeyLimitForm()
    if not form.validate_on_submit():
        abort(400, "A limit is a whole number of credits from 1 to 1,000,000,000, per month or per day.")
    key = api_keys.set_limit(g.team.id, key_id, form.spend_limit.data, form.limit_period.data) or abort(404)
    db.session.commit()
    what = f"{key.spend_limit:,} credits per {key.limit_period}" if key.spend_limit else "no limit"
    flash(f"Key {key.prefix} now has {what}.", "success")
    return redirect(url_for("teams.keys"))


@bp.post("/members/<id:membership_id>/limit")
@team_role_required("admin")
def member_limit(membership_id: int):  # type: ignore[no-untyped-def]
    form = MemberLimitForm()
    if not form.validate_on_submit():
        abort(400, "A limit is a whole number of credits from 1 to 1,000,000,000.")
    try:
        target = teams.set_member_limit(g.membership, membership_id, form.monthly_limit.data) or abort(404)
    except teams.TeamError as error:
        abort(403, str(error))
    db.session.commit()
    what = f"{target.monthly_limit:,} credits per month" if target.monthly_limit else "no limit"
    flash(f"{target.user.name} now has {what}.", "success")
    return redirect(url_for("teams.members"))


@bp.get("/alerts")
@team_role_required("member")
def alerts():  # type: ignore[no-untyped-def]
    levels = limits.thresholds(g.team.id)
    return render_template(
        "teams/alerts.html",
        levels_form=AlertLevelsForm(thresholds=", ".join(str(level) for level in sorted(levels, reverse=True))),
        emails_form=AlertEmailsForm(alert_emails=g.membership.alert_emails),
        can_manage=teams.has_role(g.membership, "admin"),
        levels=levels,
    )


@bp.post("/alerts/thresholds")
@team_role_required("admin")
def alert_thresholds():  # type: ignore[no-untyped-def]
    form = AlertLevelsForm()
    if not form.validate_on_submit():
        abort(400, "; ".join(form.errors.get("thresholds", ["Check the thresholds."])))
    levels = parse_thresholds(form.thresholds.data)
    limits.set_thresholds(g.team.id, levels)
    db.session.commit()
    shown = ", ".join(f"{level:,}" for level in reversed(levels)) or "none"
    flash(f"Low-balance thresholds: {shown}.", "success")
    return redirect(url_for("teams.alerts"))


@bp.post("/alerts/emails")
@team_role_required("member")
def alert_emails():  # type: ignore[no-untyped-def]
    form = AlertEmailsForm()
    if not form.validate_on_submit():
        abort(400)
    g.membership.alert_emails = bool(form.alert_emails.data)
    db.session.commit()
    flash("Alert emails on." if g.membership.alert_emails else "Alert emails off.", "info")
    return redirect(url_for("teams.alerts"))


@bp.post("/api-keys/<id:key_id>/revoke")
@team_role_required("admin")
def revoke_key(key_id: int):  # type: ignore[no-untyped-def]
    if not ConfirmForm().validate_on_submit():
        abort(400)
    key = api_keys.revoke(g.team.id, key_id) or abort(404)
    db.session.commit()
    flash(f"Key {key.prefix} revoked: requests with it now get 401.", "info")
    return redirect(url_for("teams.keys"))
