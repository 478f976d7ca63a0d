"""Alert emails: low balance, out of credits, a key or member at its spend limit.

The ledger calls these inside the change's own transaction when it sees a crossing (under the
team's lock, so one change sees each crossing), and they only queue mail in the outbox: nothing
here talks to a mail server, and a rolled-back change sends nothing. Recipients are the team's
owners and admins who have not turned alert emails off (Team → Alerts); a member's limit also
tells that member.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError

from . import mail
from .extensions import db
from .models import ApiKey, Membership, Team, User

log = logging.getLogger(__name__)


def recipients(team_id: int, *, also_user_id: int | None = None) -> list[tuple[str, str]]:
    """(email, name) of the owners and admins (and ``also_user_id``) who take alert emails."""
    who = Membership.role.in_(("owner", "admin"))
    if also_user_id is not None:
        who = or_(who, Membership.user_id == also_user_id)
    rows = db.session.execute(
        select(User.email, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id, Membership.alert_emails.is_(True), who)
        .order_by(User.id)
    )
    return [(email, name) for email, name in rows]


def balance_crossed(team_id: int, below: list[int], available: int, *, ran_out: bool, entry_id: int) -> None:
    """A change took the team's available credits below ``below`` (or to zero): one email per person."""
    team = db.session.get(Team, team_id)
    if team is None:
        return
    link = mail.external_path("/dashboard")
    if ran_out:
        subject, template = f"{team.name} is out of credits", "out_of_credits"
    else:
        subject, template = f"{team.name}: credits below {min(below):,}", "low_balance"
    for email, name in recipients(team_id):
        mail.queue(
            email,
            subject,
            template,
            {"name": name, "team": team, "available": available, "threshold": min(below) if below else 0, "link": link},
            dedupe_key=f"balance:{entry_id}:{email}",
        )


def limit_reached(team_id: int, limit, used: int, window: tuple[datetime, datetime]) -> None:  # type: ignore[no-untyped-def]
    """A key or member is at its spend limit for this period: tell them once per period."""
    team = db.session.get(Team, team_id)
    if team is None:
        return
    if limit.scope == "api_key":
        key = db.session.get(ApiKey, limit.subject_id)
        what, also = (f"API key {key.name} ({key.prefix})" if key else "An API key"), None
        link = mail.external_path("/team/api-keys")
    else:
        user = db.session.get(User, limit.subject_id)
        what, also = (user.name if user else "A member"), limit.subject_id
        link = mail.external_path("/team/members")
    context = {
        "team": team,
        "what": what,
        "limit": limit.credits,
        "used": used,
        "period": limit.period,
        "resets_at": window[1],
        "link": link,
    }
    for email, name in recipients(team_id, also_user_id=also):
        mail.queue(
            email,
            f"{team.name}: {what} reached its spend limit",
            "limit_reached",
            {**context, "name": name},
            dedupe_key=f"limit:{limit.scope}:{limit.subject_id}:{window[0].isoformat()}:{email}",
        )


def limit_refused(team_id: int, error) -> None:  # type: ignore[no-untyped-def]
    """After a spend was refused at the limit and rolled back: the limit email, in a transaction of its own."""
    try:
        limit_reached(team_id, error.limit, error.used, error.window)
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("could not queue the spend-limit email for team %s", team_id)
