"""Which team a Stripe object belongs to, locked for the rest of the transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import Team
from .errors import Ignored

Json = dict[str, Any]


def team_for(customer_id: str | None, metadata: Json | None) -> Team:
    """The team whose Stripe customer this is; metadata naming another team is refused.

    Locked: every Stripe handler takes the team row before the ledger's balance row, the order the
    monthly rollover takes them in, so the two never deadlock, and one team's events apply one at a time.
    """
    team_ref = (metadata or {}).get("team_id")
    team = (
        db.session.scalar(
            select(Team)
            .where(Team.stripe_customer_id == customer_id)
            # NO KEY UPDATE: a spend holding the balance lock inserts rows whose foreign key takes KEY SHARE
            # on this team row; FOR UPDATE would block that and deadlock with this handler's balance lock.
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        if customer_id
        else None
    )
    if team is None:
        raise Ignored(f"no team has customer {customer_id!r}")
    if team_ref is not None and str(team.id) != str(team_ref):
        raise Ignored(f"metadata names team {team_ref!r} but customer {customer_id} is team {team.id}")
    return team
