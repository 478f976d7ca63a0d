"""Auto-recharge's half inside the ledger: a debit that takes the balance below the threshold records a
due recharge in its own transaction, under the balance-row lock it already holds.

The threshold comes with that lock (``credit_balances.recharge_below``, NULL while auto-recharge is
off), so a plain spend costs nothing more; only the spend that crosses it runs one more statement:
an ``INSERT … SELECT`` that takes the pack and the guardrails from the team's settings, counts this
month's recharges (in flight or paid) against the cap, and does nothing when one is in flight already
(the partial unique index ``ux_auto_recharges_one_in_flight``). Spends of a team run one at a time,
so each crossing is seen by exactly one of them. The payment happens later, outside this
transaction: ``starter.billing.recharge``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from .. import catalog
from ..extensions import db
from ..models import RECHARGE_IN_FLIGHT, AutoRecharge, AutoRechargeSettings, UTCDateTime
from .core import Locked, balances, lock
from .rules import InvalidRequest

settings_t = AutoRechargeSettings.__table__
recharges_t = AutoRecharge.__table__
# What the monthly cap counts: every recharge not given up, in flight included.
COUNTED = (*RECHARGE_IN_FLIGHT, "succeeded")


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def crossed(before: Locked, balance_after: int) -> bool:
    """Whether this change took the balance from at or above the threshold to below it."""
    threshold = before.recharge_below
    return threshold is not None and before.balance >= threshold > balance_after


def month_total(team_id: int, now: datetime):  # type: ignore[no-untyped-def]
    """This calendar month's (UTC) recharge money, in flight included: a scalar subquery."""
    return (
        select(func.coalesce(func.sum(recharges_t.c.amount_cents), 0))
        .where(
            recharges_t.c.team_id == team_id,
            recharges_t.c.created_at >= month_start(now),
            recharges_t.c.status.in_(COUNTED),
        )
        .scalar_subquery()
    )


def record_due(team_id: int, balance_after: int, now: datetime) -> None:
    """Record a due recharge if auto-recharge is on, a card is on file, the cap allows it and none is in
    flight: one statement. The caller holds the team's balance-row lock."""
    columns = ["team_id", "status", "pack_code", "credits", "amount_cents", "currency", "balance_at_crossing"]
    columns += ["attempts", "created_at", "updated_at"]
    when = literal(now, UTCDateTime())
    source = select(
        settings_t.c.team_id,
        literal("due"),
        settings_t.c.pack_code,
        settings_t.c.pack_credits,
        settings_t.c.pack_price_cents,
        literal(catalog.CURRENCY),
        literal(balance_after),
        literal(0),
        when,
        when,
    ).where(
        settings_t.c.team_id == team_id,
        settings_t.c.enabled.is_(True),
        settings_t.c.pack_code.is_not(None),
        settings_t.c.payment_method_id.is_not(None),
        settings_t.c.pack_price_cents > 0,
        month_total(team_id, now) + settings_t.c.pack_price_cents <= settings_t.c.monthly_cap_cents,
    )
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    db.session.execute(dialect.insert(recharges_t).from_select(columns, source).on_conflict_do_nothing())


def lock_account(team_id: int) -> Locked | None:
    """The balance-row lock, taken by auto-recharge's bookkeeping before it touches a recharge row.

    A spend holds this lock when its ``INSERT`` meets an in-flight recharge in the unique index, and
    waits there for whoever is changing that row; so whoever changes it must hold this lock first.
    """
    try:
        return lock(team_id)
    except InvalidRequest:  # no credit account yet: nothing to order against
        return None


def set_threshold(team_id: int, threshold: int | None) -> None:
    """Mirror auto-recharge's threshold onto the balance row (NULL: off), under the team's lock."""
    lock(team_id)
    db.session.execute(balances.update().where(balances.c.team_id == team_id).values(recharge_below=threshold))
