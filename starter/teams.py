"""Teams, memberships and invitations: the tenant boundary of everything else.

Service functions change models and flush; the caller (a request or a CLI command) commits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from . import api_keys
from .extensions import db
from .models import Invitation, Membership, Team, User, utcnow

ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}


class TeamError(Exception):
    """A team rule was broken; the message is safe to show to the user."""


class InvitationError(TeamError):
    pass


class InvitationLimitReached(InvitationError):
    """Too many invitations in 24 hours, from this team or this user."""


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "team"


def unique_slug(name: str) -> str:
    base = slugify(name)
    slug = base
    while db.session.scalar(select(Team.id).filter_by(slug=slug)) is not None:
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def create_team(owner: User, name: str, *, personal: bool = False) -> Team:
    """Create a team owned by ``owner`` on the free plan, with this period's free credits; make it current."""
    from . import credits, plans  # the ledger opens the team's account; the free plan grants its allowance

    now = utcnow()
    team = Team(name=name.strip(), slug=unique_slug(name), is_personal=personal, period_anchor=now, created_at=now)
    db.session.add(team)
    db.session.add(Membership(team=team, user=owner, role="owner"))
    db.session.flush()
    credits.open_account(team)
    plans.start_free_period(team, now)
    owner.current_team_id = team.id
    return team


def membership_of(user: User, team_id: int) -> Membership | None:
    """The user's membership of the team, with the team loaded in the same query (every request asks)."""
    return db.session.scalar(
        select(Membership).options(joinedload(Membership.team)).filter_by(user_id=user.id, team_id=team_id)
    )


def user_teams(user: User) -> list[Team]:
    return list(
        db.session.scalars(select(Team).join(Membership).where(Membership.user_id == user.id).order_by(Team.name))
    )


def resolve_current_team(user: User) -> tuple[Team | None, Membership | None]:
    """The user's current team if they still belong to it, else their first team."""
    membership = membership_of(user, user.current_team_id) if user.current_team_id else None
    if membership is None:
        membership = db.session.scalar(
            select(Membership)
            .options(joinedload(Membership.team))
            .filter_by(user_id=user.id)
            .order_by(Membership.created_at, Membership.id)
            .limit(1)
        )
    return (membership.team, membership) if membership else (None, None)


def switch_team(user: User, team_id: int) -> Team | None:
    """Make ``team_id`` current; None (and nothing changed) when the user is not a member."""
    membership = membership_of(user, team_id)
    if membership is None:
        return None
    user.current_team_id = team_id
    return membership.team


def has_role(membership: Membership | None, role: str) -> bool:
    return membership is not None and ROLE_RANK[membership.role] >= ROLE_RANK[role]


def team_member(team: Team, membership_id: int) -> Membership | None:
    """A membership of this team only: another team's id is simply not found."""
    return db.session.scalar(select(Membership).filter_by(id=membership_id, team_id=team.id))


def _owner_count(team_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(Membership).filter_by(team_id=team_id, role="owner")) or 0


def _lock_roles(actor: Membership, target: Membership) -> None:
    """Serialise role changes and removals of one team, then re-read both memberships.

    Without the lock two owners demoting each other at the same instant each counted two owners and
    the team was left with none. The lock is the team's row (PostgreSQL; SQLite's writer lock already
    serialises); the re-read sees whatever a change we waited for committed.
    """
    db.session.execute(select(Team.id).where(Team.id == target.team_id).with_for_update())
    for membership in (actor, target):
        fresh = db.session.scalar(
            select(Membership).filter_by(id=membership.id).execution_options(populate_existing=True)
        )
        if fresh is None:
            raise TeamError("The team's members changed meanwhile: reload the page and try again.")
    if not has_role(actor, "admin"):
        raise TeamError("You are no longer an admin of this team.")


def change_role(actor: Membership, target: Membership, role: str) -> int:
    """Give ``target`` the role ``role``; the team keeps at least one owner. Locks the team's row.

    Dropping below admin revokes the API keys they created for the team; returns how many.
    """
    if role not in ROLE_RANK:
        raise TeamError("Unknown role.")
    _lock_roles(actor, target)
    if role == "owner" and actor.role != "owner":
        raise TeamError("Only an owner can make someone an owner.")
    if target.role == "owner" and actor.role != "owner":
        raise TeamError("Only an owner can change another owner's role.")
    if target.role == "owner" and role != "owner" and _owner_count(target.team_id) <= 1:
        raise TeamError("A team needs at least one owner: make someone else owner first.")
    target.role = role
    if has_role(target, "admin"):
        return 0
    return api_keys.revoke_created_by(target.team_id, target.user_id)


def remove_member(actor: Membership, target: Membership) -> int:
    """Remove ``target`` from the team; the last owner stays. Locks the team's row.

    Revokes the API keys they created for the team; returns how many.
    """
    _lock_roles(actor, target)
    if target.role == "owner" and actor.role != "owner":
        raise TeamError("Only an owner can remove an owner.")
    if is_sole_owner(target):
        raise TeamError("The last owner cannot be removed.")
    return _drop_membership(target)


def is_sole_owner(membership: Membership) -> bool:
    """True when ``membership`` is its team's only owner: they cannot leave, be demoted or be removed."""
    return membership.role == "owner" and _owner_count(membership.team_id) <= 1


def rename_team(team: Team, name: str) -> None:
    """A new display name; the slug (what the CLI and admins look teams up by) stays."""
    team.name = name.strip()


def leave_team(membership: Membership) -> int:
    """``membership``'s user leaves the team; its only owner cannot. Locks the team's row.

    Revokes the API keys they created for the team; returns how many.
    """
    db.session.execute(select(Team.id).where(Team.id == membership.team_id).with_for_update())
    if is_sole_owner(membership):
        raise TeamError("You are the team's only owner: make someone else owner first, or delete the team.")
    return _drop_membership(membership)


def _drop_membership(membership: Membership) -> int:
    """Remove ``membership`` and revoke the API keys its user created for the team; how many."""
    user = membership.user
    revoked = api_keys.revoke_created_by(membership.team_id, membership.user_id)
    db.session.delete(membership)
    if user.current_team_id == membership.team_id:
        user.current_team_id = None
    db.session.flush()
    return revoked


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class InvitationLimits:
    """How many invitations may be sent in 24 hours: every one is a mail sent through our server."""

    per_team: int
    per_user: int


def _sent_since(since: datetime, **where: int) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Invitation).filter_by(**where).where(Invitation.created_at > since)
    )


def _check_invitation_limits(team: Team, inviter: User, limits: InvitationLimits) -> None:
    # The team's row lock makes one team's invitations count one at a time. Invitations one user
    # sends from several teams at the same instant may overshoot the per-user limit a little: harmless.
    db.session.execute(select(Team.id).where(Team.id == team.id).with_for_update())
    since = utcnow() - timedelta(days=1)
    if _sent_since(since, team_id=team.id) >= limits.per_team:
        raise InvitationLimitReached(
            f"{team.name} has sent {limits.per_team} invitations in the last 24 hours, the most allowed. "
            "Try again tomorrow."
        )
    if _sent_since(since, invited_by_id=inviter.id) >= limits.per_user:
        raise InvitationLimitReached(
            f"You have sent {limits.per_user} invitations in the last 24 hours, the most allowed. Try again tomorrow."
        )


def invite(
    team: Team, inviter: User, email: str, role: str, max_age_days: int, limits: InvitationLimits
) -> tuple[Invitation, str]:
    """Create an invitation; returns it with the raw token for the emailed link (stored only hashed).

    Refused with ``InvitationLimitReached`` once the team or the inviter has sent ``limits`` in 24 hours.
    """
    if role not in ("admin", "member"):
        raise InvitationError("Invite as admin or member.")
    _check_invitation_limits(team, inviter, limits)
    already = db.session.scalar(
        select(Membership.id).join(User).where(Membership.team_id == team.id, User.email == email)
    )
    if already:
        raise InvitationError(f"{email} is already a member of {team.name}.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        team=team,
        email=email,
        role=role,
        token_hash=_token_hash(token),
        invited_by_id=inviter.id,
        expires_at=utcnow() + timedelta(days=max_age_days),
    )
    db.session.add(invitation)
    db.session.flush()
    return invitation, token


def find_invitation(token: str) -> Invitation | None:
    """An open invitation for this token, or None (unknown, used, revoked or expired)."""
    invitation = db.session.scalar(select(Invitation).filter_by(token_hash=_token_hash(token)))
    return invitation if invitation is not None and invitation.is_open else None


def accept_invitation(invitation: Invitation, user: User) -> Membership:
    """Join the team; refused when the invitation was sent to another address."""
    if not invitation.is_open:
        raise InvitationError("This invitation has expired or was already used.")
    if invitation.email != user.email:
        raise InvitationError(
            "This invitation was sent to a different email address. Log in with that address to accept it."
        )
    membership = membership_of(user, invitation.team_id)
    if membership is None:
        membership = Membership(team_id=invitation.team_id, user=user, role=invitation.role)
        db.session.add(membership)
    invitation.accepted_at = utcnow()
    invitation.accepted_by_id = user.id
    user.current_team_id = invitation.team_id
    db.session.flush()
    return membership


def open_invitations(team: Team) -> list[Invitation]:
    return list(
        db.session.scalars(
            select(Invitation)
            .filter_by(team_id=team.id, accepted_at=None, revoked_at=None)
            .where(Invitation.expires_at > utcnow())
            .order_by(Invitation.created_at.desc())
        )
    )


def revoke_invitation(team: Team, invitation_id: int) -> bool:
    invitation = db.session.scalar(select(Invitation).filter_by(id=invitation_id, team_id=team.id))
    if invitation is None or invitation.accepted_at is not None:
        return False
    invitation.revoked_at = utcnow()
    return True


def members(team: Team) -> list[Membership]:
    return list(
        db.session.scalars(
            select(Membership).join(User).where(Membership.team_id == team.id).order_by(Membership.created_at)
        )
    )


def actor_for(membership: Membership):  # type: ignore[no-untyped-def]
    """The ledger's actor for a member acting in the browser, with their monthly limit if they have one."""
    from . import credits

    limit = membership.monthly_limit
    spend_limit = credits.SpendLimit("member", membership.user_id, limit, "month") if limit else None
    return credits.Actor("user", membership.user_id, limit=spend_limit)


def set_member_limit(actor: Membership, membership_id: int, limit: int | None) -> Membership | None:
    """Set (or with None remove) a member's monthly spend limit; None when the team has no such member.

    Like roles: only an owner may limit an owner (an admin gets ``TeamError``).
    """
    target = team_member(actor.team, membership_id)
    if target is None:
        return None
    if target.role == "owner" and actor.role != "owner":
        raise TeamError("Only an owner can set an owner's spend limit.")
    from . import credits

    target.monthly_limit = limit
    credits.forget_limit_usage(target.team_id, "member", target.user_id)
    db.session.flush()
    return target
