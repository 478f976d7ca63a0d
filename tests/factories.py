"""Test data that needs no sign-up: a team with an empty credit account, for exact ledger arithmetic."""

from __future__ import annotations

from starter import credits
from starter.extensions import db
from starter.models import Team


def ledger_team(slug: str, name: str | None = None) -> Team:
    """A committed team with its balance row and no credits (no free-plan grant)."""
    team = Team(name=name or slug.replace("-", " ").title(), slug=slug)
    db.session.add(team)
    db.session.flush()
    credits.open_account(team)
    db.session.commit()
    return team
