"""``flask seed``: demo log-ins for a fresh database. Idempotent: a second run changes nothing."""

from __future__ import annotations

from collections.abc import Mapping

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from starter import accounts, credits, teams
from starter.extensions import db
from starter.models import Membership, Team, User

DEMO_PASSWORD = "demo-password"  # noqa: S105 - printed on purpose: local demo accounts only
DEMO_USERS = [
    # (email, name, role in the demo team or None, site admin)
    ("owner@example.com", "Olivia Owner", "owner", False),
    ("member@example.com", "Max Member", "member", False),
    ("admin@example.com", "Ada Admin", None, True),
]
DEMO_TEAM_SLUG = "demo"


def ensure_user(email: str, name: str, site_admin: bool) -> User:
    user = accounts.find_user(email)
    if user is None:
        user = accounts.sign_up(name, email, DEMO_PASSWORD)
        user.is_site_admin = site_admin
    return user


def personal_team(user: User) -> Team | None:
    return db.session.scalar(
        select(Team).join(Membership).where(Membership.user_id == user.id, Membership.role == "owner", Team.is_personal)
    )


def seed() -> list[tuple[str, str]]:
    """Create what is missing of the demo data; returns the log-ins (email, what it is)."""
    logins = []
    users = {email: ensure_user(email, name, admin) for email, name, _role, admin in DEMO_USERS}
    team = db.session.scalar(select(Team).filter_by(slug=DEMO_TEAM_SLUG))
    if team is None:
        # The owner's personal team: only a personal team gets the free plan's monthly credits.
        team = personal_team(users["owner@example.com"]) or teams.create_team(users["owner@example.com"], "Demo Team")
        team.name, team.slug = "Demo Team", DEMO_TEAM_SLUG
        db.session.flush()
    for email, _name, role, admin in DEMO_USERS:
        if role and teams.membership_of(users[email], team.id) is None:
            db.session.add(Membership(team_id=team.id, user_id=users[email].id, role=role))
            users[email].current_team_id = team.id
        logins.append((email, "site admin" if admin else f"{role} of {team.name}"))
    # A purchased-style block so the demo shows both kinds of credit; the key makes it happen once.
    credits.grant(team.id, 1_000, source="promo", key="seed:demo-welcome", description="Welcome credits (demo data)")
    return logins


def is_live(config: Mapping[str, object]) -> bool:
    """A Stripe secret key means real customers may be here: no demo accounts with a published password."""
    return bool(config.get("STRIPE_SECRET_KEY"))


@click.command("seed")
@click.option("--force", is_flag=True, help="Seed even though STRIPE_SECRET_KEY is set (a live-mode instance).")
@with_appcontext
def seed_command(force: bool) -> None:
    """Create demo users, a demo team and credits (idempotent)."""
    if is_live(current_app.config) and not force:
        raise click.ClickException(
            "Refusing to seed: STRIPE_SECRET_KEY is set, so this looks like a live instance, and the demo "
            f"accounts (a site admin among them) have the published password {DEMO_PASSWORD!r}. "
            "Run `flask seed --force` if you really want them here."
        )
    logins = seed()
    db.session.commit()
    click.echo(f"Demo log-ins (password for all: {DEMO_PASSWORD}):")
    for email, what in logins:
        click.echo(f"  {email:<22} {what}")
