"""Deleting a team, and what deleting an account does to the teams it belongs to.

A deleted team is archived, never removed: its ledger entries, payments, receipts and Stripe customer
stay, so ``flask credits verify`` still adds up and a refund that arrives later still finds the team.
What remains of its credits is written off through the ledger (an ``expire`` entry per block), its
members, open invitations and API keys go, auto-recharge is turned off, and it gets no more monthly
credits. A team that pays for a subscription cannot be deleted: the subscription is cancelled in the
billing portal first, and the team can go once it has ended (nothing is charged after deletion).

Service functions change models and flush; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update

from . import api_keys, credits
from .extensions import db
from .models import CreditBlock, Invitation, Membership, Team, User, utcnow
from .teams import TeamError, is_sole_owner


def _member_count(team_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(Membership).filter_by(team_id=team_id)) or 0


def deletion_blocker(team: Team) -> str | None:
    """Why ``team`` cannot be deleted now, for people; None when it can."""
    if team.deleted_at is not None:
        return "This team was already deleted."
    if team.is_personal:
        return "Your personal team is deleted with your account (Account → Delete account), not on its own."
    if team.is_paying:
        return (
            "This team pays for a subscription: cancel it in Billing → Manage billing first. "
            "Once it has ended, the team can be deleted."
        )
    return None


def delete_team(team: Team, *, sole_member_id: int | None = None, now: datetime | None = None) -> int:
    """Archive ``team`` (see the module's docstring); returns the credits written off. Locks the team's row.

    With ``sole_member_id`` (an account being deleted) it is refused, under the lock, unless that user is
    the team's only member. Raises ``TeamError`` with the reason otherwise (``deletion_blocker``).
    """
    now = now or utcnow()
    db.session.execute(select(Team.id).where(Team.id == team.id).with_for_update())
    db.session.refresh(team)
    blocker = deletion_blocker(team) if sole_member_id is None else _paying_blocker(team)
    if blocker:
        raise TeamError(blocker)
    if sole_member_id is not None and _others(team.id, sole_member_id):
        raise TeamError(f"{team.name} has other members now: make one of them owner first.")
    written_off = _write_off_credits(team.id, now)
    _turn_off_recharge(team.id, now)
    api_keys.revoke_all(team.id, now=now)
    db.session.execute(
        update(Invitation)
        .where(Invitation.team_id == team.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    db.session.execute(
        update(User)
        .where(User.current_team_id == team.id)
        .values(current_team_id=None)
        .execution_options(synchronize_session="fetch")
    )
    db.session.execute(
        delete(Membership).where(Membership.team_id == team.id).execution_options(synchronize_session="fetch")
    )
    team.deleted_at, team.is_personal = now, False  # not personal: the monthly job grants it nothing more
    db.session.flush()
    return written_off


def _paying_blocker(team: Team) -> str | None:
    if team.deleted_at is not None:
        return "This team was already deleted."
    if team.is_paying:
        return f"{team.name} pays for a subscription: cancel it in Billing → Manage billing first."
    return None


def _others(team_id: int, user_id: int) -> bool:
    others = select(Membership.id).where(Membership.team_id == team_id, Membership.user_id != user_id)
    return db.session.scalar(others.limit(1)) is not None


def _write_off_credits(team_id: int, now: datetime) -> int:
    """Expire every open block through the ledger (holds on them end with them); the credits written off."""
    before = credits.balance(team_id, now).total
    for block_id in db.session.scalars(
        select(CreditBlock.id)
        .where(CreditBlock.team_id == team_id, CreditBlock.expired_at.is_(None))
        .order_by(CreditBlock.id)
    ).all():
        credits.expire_block(team_id, block_id, now=now, early_reason="the team was deleted")
    return before


def _turn_off_recharge(team_id: int, now: datetime) -> None:
    from .billing import recharge

    if recharge.settings_of(team_id) is not None:
        recharge.turn_off(team_id, "The team was deleted.", now)


# --- deleting an account ---------------------------------------------------------------------------


@dataclass
class AccountDeletion:
    """What deleting a user's account would do: the teams deleted with it, the teams left, and what stops it."""

    deleted: list[Team] = field(default_factory=list)  # teams only they belong to, as owner
    left: list[Team] = field(default_factory=list)  # teams that carry on without them
    blockers: list[str] = field(default_factory=list)


def account_deletion(user: User) -> AccountDeletion:
    """The plan ``delete_account`` follows, shown on the account page before anyone confirms.

    A team whose only owner is ``user`` and that has other members would be left without an owner: that
    blocks the deletion (make someone else owner, or delete the team). So does a subscription on a team
    that would go with the account (cancel it first). Every other team of theirs carries on.
    """
    plan = AccountDeletion()
    memberships = db.session.scalars(
        select(Membership).where(Membership.user_id == user.id).order_by(Membership.created_at, Membership.id)
    ).all()
    for membership in memberships:
        team = membership.team
        if not is_sole_owner(membership):
            plan.left.append(team)
        elif _member_count(team.id) > 1:
            # A personal team is not deleted on its own (deletion_blocker): only handing it over frees it.
            alternative = "" if team.is_personal else ", or delete the team,"
            plan.blockers.append(
                f"You are the only owner of {team.name}, which has other members: make one of them owner "
                f"(Team → Members){alternative} first."
            )
        elif team.is_paying:
            plan.blockers.append(
                f"{team.name} pays for a subscription: cancel it in Billing → Manage billing first; "
                "your account can be deleted once it has ended."
            )
        else:
            plan.deleted.append(team)
    return plan


def delete_account(user: User, now: datetime | None = None) -> AccountDeletion:
    """Delete ``user``: their solo teams archived (``delete_team``), their other memberships and login
    sessions gone, the user row removed. Ledger entries they caused keep their amounts (the actor is
    cleared by the foreign key). Raises ``TeamError`` naming the first blocker; the caller commits."""
    plan = account_deletion(user)
    if plan.blockers:
        raise TeamError(plan.blockers[0])
    for team in plan.deleted:
        delete_team(team, sole_member_id=user.id, now=now)
    for team in plan.left:
        api_keys.revoke_created_by(team.id, user.id, now=now)
    db.session.delete(user)  # memberships and login sessions go with it (cascade)
    db.session.flush()
    return plan
