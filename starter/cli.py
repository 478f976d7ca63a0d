"""The ``flask`` commands of the app, grouped in one place (``flask seed`` lives in ``seed.py``)."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import or_, select

from . import credits, scheduler
from .extensions import db
from .models import Team

credits_cli = AppGroup("credits", help="Inspect and change team credits.")


def find_team(ref: str) -> Team | None:
    """A team by id or slug."""
    condition = Team.slug == ref
    if ref.isdigit():
        condition = or_(condition, Team.id == int(ref))
    return db.session.scalar(select(Team).where(condition))


@credits_cli.command("verify")
def verify_command() -> None:
    """Recompute every team from its ledger and blocks; exit 1 and name the team on any mismatch."""
    problems = credits.verify()
    for problem in problems:
        click.echo(f"MISMATCH {problem}", err=True)
    teams = db.session.scalar(select(db.func.count()).select_from(Team))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {len({p.team_id for p in problems})} team(s).", err=True)
        sys.exit(1)
    click.echo(f"OK: {teams} team(s), every balance matches its ledger.")


@credits_cli.command("grant")
@click.argument("team_ref", metavar="TEAM")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why (internal): written into the ledger entry's metadata.")
@click.option("--description", default=None, help='What the team reads in its history (default "Credit adjustment").')
@click.option("--key", default=None, help="Idempotency key (a repeat with the same key grants once).")
def grant_command(team_ref: str, amount: int, reason: str, description: str | None, key: str | None) -> None:
    """Grant AMOUNT credits (never expiring) to TEAM (id or slug), recorded as an admin adjustment."""
    team = find_team(team_ref)
    if team is None:
        raise click.ClickException(f"No team {team_ref!r}.")
    if amount <= 0:
        raise click.ClickException("AMOUNT must be a positive whole number.")
    try:
        receipt = credits.adjust(
            team.id,
            amount,
            reason=reason,
            description=description,
            key=key or f"cli:{uuid.uuid4()}",
            actor=credits.Actor("admin"),
        )
    except credits.CreditError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    db.session.commit()
    replayed = " (already granted with this key)" if receipt.replayed else ""
    click.echo(f"Granted {amount:,} credits to {team.slug}; balance {receipt.balance_after:,}{replayed}.")


billing_cli = AppGroup("billing", help="Stripe products and prices; auto-recharge.")


@billing_cli.command("sync")
def billing_sync_command() -> None:
    """Create or update Stripe products and prices from the catalog (idempotent, by lookup key)."""
    import stripe
    from flask import current_app

    from .billing import catalog_sync

    if not current_app.config["STRIPE_SECRET_KEY"]:
        raise click.ClickException("Set STRIPE_SECRET_KEY first: test mode has no Stripe prices to sync.")
    try:
        results = catalog_sync.sync()
    except stripe.StripeError as error:
        raise click.ClickException(f"Stripe refused: {error}") from error
    for setting, price_id, what in results:
        click.echo(f"{setting}={price_id}  # {what}")
    click.echo("Put these lines in .env to make Checkout use the synced prices.")


@billing_cli.command("recharge-due")
def recharge_due_command() -> None:
    """Pay the auto-recharges that are due once (for cron, with SCHEDULER_ENABLED=false on the web workers)."""
    result = scheduler.pay_due_recharges(current_app._get_current_object())  # type: ignore[attr-defined]
    if result is None:
        click.echo("auto-recharge: skipped, another process is paying recharges")
        return
    click.echo(result.describe())
    if result.errors:
        sys.exit(1)


class IsoDateTime(click.ParamType):
    """An ISO 8601 date or date-time; one without a time zone is taken as UTC."""

    name = "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an ISO 8601 date or time, e.g. 2026-03-31T12:00:00Z.", param, ctx)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@credits_cli.command("grant-due")
@click.option("--now", type=IsoDateTime(), default=None, help="Act as if it were this time (UTC unless stated).")
def grant_due_command(now: datetime | None) -> None:
    """Run the scheduler's due work once: roll over free teams, expire credits, flag lapsed paid plans, release holds.

    For cron deployments (with SCHEDULER_ENABLED=false on the web workers) and to simulate a date.
    Exit 1 when a batch failed (it is logged; the next run retries it).
    """
    summary = scheduler.run_due_work(current_app._get_current_object(), now)  # type: ignore[attr-defined]
    click.echo(summary.describe())
    if summary.failed_batches:
        sys.exit(1)


api_keys_cli = AppGroup("api-keys", help="Team API keys for the JSON API.")


@api_keys_cli.command("create")
@click.argument("team_ref", metavar="TEAM")
@click.argument("name")
@click.option("--monthly-limit", type=click.IntRange(1, credits.MAX_AMOUNT), help="Credits it may spend per month.")
@click.option("--daily-limit", type=click.IntRange(1, credits.MAX_AMOUNT), help="Credits it may spend per day.")
def api_keys_create_command(team_ref: str, name: str, monthly_limit: int | None, daily_limit: int | None) -> None:
    """Create an API key named NAME for TEAM (id or slug) and print it: it is shown only this once."""
    from . import api_keys

    if monthly_limit and daily_limit:
        raise click.UsageError("Give a monthly or a daily limit, not both.")
    team = find_team(team_ref)
    if team is None:
        raise click.ClickException(f"No team {team_ref!r}.")
    period = "day" if daily_limit else "month"
    key, raw = api_keys.create(team.id, name, spend_limit=monthly_limit or daily_limit, limit_period=period)
    db.session.commit()
    limit = f", limit {key.spend_limit:,} credits per {key.limit_period}" if key.spend_limit else ""
    click.echo(f"Created API key {key.prefix} ({key.name}{limit}) for {team.slug}. Copy it now; it is not shown again:")
    click.echo(raw)


mail_cli = AppGroup("mail", help="The outbox of outgoing mail.")


@mail_cli.command("deliver")
def mail_deliver_command() -> None:
    """Send the outbox's due mail once (for cron, with SCHEDULER_ENABLED=false on the web workers)."""
    summary = scheduler.deliver_mail(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo(summary.describe())


def register(app: Flask) -> None:
    app.cli.add_command(mail_cli)
    app.cli.add_command(credits_cli)
    app.cli.add_command(billing_cli)
    app.cli.add_command(api_keys_cli)
