"""Random sequences of ledger operations against a small reference model (hypothesis, stateful).

The model keeps blocks as plain numbers and spends them in the brief's order. After every step
the real ledger must agree with it, never go negative, and pass ``verify``.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import event, select, text

from starter import credits, ledger_functions
from starter.credits import core
from starter.extensions import db
from starter.models import Hold

from .factories import ledger_team

START = datetime(2026, 1, 1, tzinfo=UTC)
ids = itertools.count(1)


@dataclass
class ModelBlock:
    created: datetime
    order: int
    remaining: int
    held: int = 0
    expires_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.team = ledger_team(f"model-{next(ids)}").id
        self.now = START
        self.blocks: list[ModelBlock] = []
        self.holds: dict[int, tuple[datetime, list[tuple[ModelBlock, int]]]] = {}
        self.keys = itertools.count()

    # -- the reference model -----------------------------------------------------------------
    def order(self) -> list[ModelBlock]:
        live = [b for b in self.blocks if b.live(self.now) and b.remaining > b.held]
        return sorted(live, key=lambda b: (b.expires_at is None, b.expires_at or START, b.created, b.order))

    def available(self) -> int:
        return sum(b.remaining - b.held for b in self.order())

    def draw(self, amount: int) -> list[tuple[ModelBlock, int]]:
        draws = []
        for block in self.order():
            take = min(amount, block.remaining - block.held)
            if take:
                draws.append((block, take))
            amount -= take
        return draws

    def key(self) -> str:
        return f"k{next(self.keys)}"

    def commit(self) -> None:
        db.session.commit()

    # -- rules -------------------------------------------------------------------------------
    @rule(amount=st.integers(1, 500), expires_in=st.one_of(st.none(), st.integers(1, 72)))
    def grant(self, amount: int, expires_in: int | None) -> None:
        expires_at = self.now + timedelta(hours=expires_in) if expires_in else None
        credits.grant(self.team, amount, source="promo", key=self.key(), expires_at=expires_at, now=self.now)
        self.commit()
        self.blocks.append(ModelBlock(self.now, len(self.blocks), amount, 0, expires_at))

    @rule(amount=st.integers(1, 400))
    def spend(self, amount: int) -> None:
        fits = self.available() >= amount
        try:
            credits.spend(self.team, amount, key=self.key(), now=self.now)
            self.commit()
        except credits.InsufficientCredits as error:
            db.session.rollback()
            assert not fits and error.available == self.available()
            return
        assert fits
        for block, take in self.draw(amount):
            block.remaining -= take

    @rule(amount=st.integers(1, 200))
    def hold(self, amount: int) -> None:
        fits = self.available() >= amount
        try:
            result = credits.hold(self.team, amount, key=self.key(), ttl_seconds=86_400, now=self.now)
            self.commit()
        except credits.InsufficientCredits:
            db.session.rollback()
            assert not fits
            return
        assert fits
        draws = self.draw(amount)
        for block, take in draws:
            block.held += take
        # A hold lasts its TTL, or until the first block it reserves from expires.
        expires_at = min([self.now + timedelta(days=1)] + [b.expires_at for b, _ in draws if b.expires_at])
        assert result.expires_at == expires_at
        self.holds[result.id] = (expires_at, draws)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), capture=st.booleans())
    def close_hold(self, data: st.DataObject, capture: bool) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        _expires_at, draws = self.holds.pop(hold_id)
        total = sum(take for _, take in draws)
        if capture:
            actual = data.draw(st.integers(0, total))
            credits.capture(self.team, hold_id, actual, key=self.key(), now=self.now)
        else:
            actual = 0
            credits.release(self.team, hold_id, key=self.key(), now=self.now)
        self.commit()
        for block, take in draws:
            used = min(actual, take)
            block.held -= take
            block.remaining -= used
            actual -= used

    @rule(hours=st.integers(1, 48))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)
        expired = [hold_id for hold_id, (expires_at, _) in self.holds.items() if expires_at <= self.now]
        credits.release_expired_holds(self.now)  # the jobs see every team; earlier examples' teams too
        credits.expire_due(self.now)
        self.commit()
        statuses = dict(db.session.execute(select(Hold.id, Hold.status).where(Hold.id.in_(self.holds))).all())
        assert {h for h, status in statuses.items() if status == "expired"} == set(expired)
        for hold_id in expired:
            for block, take in self.holds.pop(hold_id)[1]:
                block.held -= take
        for block in self.blocks:
            if not block.live(self.now):
                block.remaining = 0

    @rule(amount=st.integers(-300, 300).filter(bool))
    def adjust(self, amount: int) -> None:
        fits = amount > 0 or self.available() >= -amount
        try:
            credits.adjust(self.team, amount, reason="model", key=self.key(), now=self.now)
            self.commit()
        except credits.InsufficientCredits:
            db.session.rollback()
            assert not fits
            return
        assert fits
        if amount > 0:
            self.blocks.append(ModelBlock(self.now, len(self.blocks), amount))
        else:
            for block, take in self.draw(-amount):
                block.remaining -= take

    @rule()
    def repeat_a_key(self) -> None:
        key = self.key()
        if self.available() < 1:
            return
        first = credits.spend(self.team, 1, key=key, now=self.now)
        again = credits.spend(self.team, 1, key=key, now=self.now)
        self.commit()
        assert again.replayed and again.entry_id == first.entry_id
        self.draw(1)[0][0].remaining -= 1

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def agrees_with_the_model(self) -> None:
        balance = credits.balance(self.team, self.now)
        assert balance.available == self.available() >= 0
        assert balance.held == sum(b.held for b in self.blocks if b.live(self.now))

    @invariant()
    def verify_passes(self) -> None:
        assert credits.verify() == []


@pytest.mark.parametrize("batch", [None, 1], ids=["default-batch", "batch-of-1"])
def test_random_operation_sequences_match_the_model(app, monkeypatch, batch):
    """With a batch of one block, nearly every spend and hold also takes the read-them-all fallback."""
    if batch is not None:
        monkeypatch.setattr(core, "SPEND_BATCH", batch)
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )


def test_the_statement_budget_of_a_spend_from_one_block(app, backend):
    """The statement budget of a spend (BEGIN/COMMIT aside), and why each is there.

    PostgreSQL: 1 ``credit_spend`` (lock the balance row, read the first spendable blocks, draw, then the
    entry, whose insert is the idempotency check, the block, the cached balance, the day's usage and
    the allocation): with BEGIN and COMMIT three round trips, and no ping (see ``starter/dbpool.py``).
    SQLite, statement by statement: 1 lock the balance row, 2 look up the key, 3 read the spendable
    blocks, 4 update the block, 5 update the cached balance, 6 insert the entry, 7 add it to the day's
    usage (an upsert), 8 insert its allocation.
    """
    team = ledger_team("budget")
    credits.grant(team.id, 100, source="purchase", key="g")
    team_id = team.id
    db.session.commit()

    with round_trips(app) as sent:
        credits.spend(team_id, 5, key="budget")
        db.session.commit()
    statements = [s for s in sent if not s.startswith(("BEGIN", "COMMIT", "PRAGMA"))]
    if backend == "postgresql":
        assert sent == ["BEGIN", "credit_spend", "COMMIT"], sent
    else:
        verbs = [s.split()[0].upper() for s in statements]
        assert verbs == ["SELECT", "SELECT", "SELECT", "UPDATE", "UPDATE", "INSERT", "INSERT", "INSERT"], statements
        assert [s.split("(")[0].strip() for s in statements if s.startswith("INSERT")] == [
            "INSERT INTO ledger_entries",
            "INSERT INTO usage_days",
            "INSERT INTO ledger_allocations",
        ]
    receipt = credits.spend(team_id, 5, key="budget")  # what was written reads back the same either way
    assert receipt.replayed and receipt.amount == -5 and receipt.balance_after == 95
    assert credits.verify() == []


@contextmanager
def round_trips(app):  # type: ignore[no-untyped-def]
    """What the block sends to the database, in order: a ledger function by its name, another statement
    as written, BEGIN and COMMIT (psycopg2 sends BEGIN before a transaction's first statement) and any
    pool ping ("PING", from ``starter/dbpool.py``) each as one round trip."""
    sent: list[str] = []
    pool = app.extensions["dbpool"][None]
    pings_before = pool.pings if pool else 0
    implicit_begin = db.engine.dialect.name == "postgresql"  # SQLite's BEGIN IMMEDIATE is a statement

    def statement(conn, cursor, text, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if implicit_begin and (not sent or sent[-1] == "COMMIT"):
            sent.append("BEGIN")
        name = text.split("(")[0].removeprefix("SELECT * FROM ").strip()
        sent.append(name if name in ledger_functions.FUNCTIONS else " ".join(text.split()))

    def commit(conn):  # type: ignore[no-untyped-def]
        sent.append("COMMIT")

    event.listen(db.engine, "before_cursor_execute", statement)
    event.listen(db.engine, "commit", commit)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", statement)
        event.remove(db.engine, "commit", commit)
    if pool:
        sent[:0] = ["PING"] * (pool.pings - pings_before)


@pytest.mark.postgres
def test_a_spend_the_first_blocks_do_not_cover_or_a_limited_one_goes_the_general_way(app, monkeypatch):
    """``credit_spend`` writes nothing when its batch falls short: ``credit_open`` reads on (every block),
    Python decides, ``credit_write`` writes. A key with a spend limit goes that way from the start."""
    from starter import api_keys

    monkeypatch.setattr(core, "SPEND_BATCH", 2)
    team = ledger_team("budget-short")
    for n in range(3):
        credits.grant(team.id, 10, source="promo", key=f"g{n}", expires_at=START + timedelta(days=n + 1), now=START)
    team_id = team.id
    key, _ = api_keys.create(team_id, "capped", spend_limit=1_000, limit_period="month")
    db.session.commit()
    now = START + timedelta(hours=1)

    with round_trips(app) as sent:
        receipt = credits.spend(team_id, 25, key="short", now=now)
        db.session.commit()
    names = [s for s in sent if s in ledger_functions.FUNCTIONS]
    assert names == ["credit_spend", "credit_open", "credit_write"], sent
    assert receipt.balance_after == 5 and not receipt.replayed

    capped = api_keys.actor_for(key.id, 1_000, "month")
    credits.spend(team_id, 1, key="opens-the-counter", actor=capped, now=now)
    db.session.commit()
    with round_trips(app) as sent:
        credits.spend(team_id, 1, key="capped", actor=capped, now=now)
        db.session.commit()
    assert [s for s in sent if s in ledger_functions.FUNCTIONS] == ["credit_open", "credit_write"], sent
    again = credits.spend(team_id, 25, key="short", now=now)  # a repeat is a repeat whichever way it went
    assert again.replayed and again.entry_id == receipt.entry_id
    with pytest.raises(credits.IdempotencyConflict):
        credits.spend(team_id, 2, key="capped", now=now)
    assert credits.balance(team_id, now).available == 3
    assert credits.verify() == []


@pytest.mark.postgres
def test_a_spend_updates_its_block_and_balance_rows_in_place(app):
    """HOT updates: no index of ``credit_blocks`` or ``credit_balances`` reads a column a spend changes,
    so PostgreSQL rewrites the rows without new index entries (and without dead ones for the next
    spend to step over). Counted in the transaction, by PostgreSQL's own per-transaction statistics."""
    team = ledger_team("hot")
    credits.grant(team.id, 100, source="purchase", key="g")
    team_id = team.id
    db.session.commit()

    def updates() -> dict[str, tuple[int, int]]:  # this backend's counts not yet reported: (all, HOT)
        rows = db.session.execute(
            text(
                "SELECT relname, pg_stat_get_xact_tuples_updated(oid), pg_stat_get_xact_tuples_hot_updated(oid)"
                " FROM pg_class WHERE relname IN ('credit_blocks', 'credit_balances')"
            )
        )
        return {name: (total, hot) for name, total, hot in rows}

    before = updates()
    credits.spend(team_id, 1, key="hot")
    after = updates()
    db.session.commit()
    delta = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in after}
    assert delta == {"credit_blocks": (1, 1), "credit_balances": (1, 1)}, delta


@pytest.mark.postgres
def test_a_tracer_on_the_engine_sees_the_ledger_calls_like_any_statement(app):
    """With no listener the functions go straight through the driver's cursor; a listener (a tracer
    that keeps its span on the execution context, as OpenTelemetry's does) gets SQLAlchemy's own path:
    a context, before and after each call."""
    team = ledger_team("traced")
    credits.grant(team.id, 100, source="purchase", key="g")
    team_id = team.id
    db.session.commit()
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        context.traced = statement.split("(")[0]

    def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(context.traced)

    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine, "after_cursor_execute", after)
    try:
        credits.spend(team_id, 5, key="traced")
        credits.hold(team_id, 5, key="traced-hold")
        db.session.commit()
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
        event.remove(db.engine, "after_cursor_execute", after)
    assert seen == ["SELECT * FROM credit_spend", "SELECT * FROM credit_open", "SELECT * FROM credit_write"], seen
    assert credits.balance(team_id).available == 90


@pytest.mark.postgres
def test_a_driver_error_in_a_ledger_call_is_raised_as_sqlalchemys(app):
    """The driver's-cursor path (no listener) raises what ``exec_driver_sql`` would: here a lock timeout
    while another transaction holds the team's row. The session then rolls back and works on."""
    from sqlalchemy.exc import OperationalError

    team = ledger_team("lock-timeout")
    credits.grant(team.id, 100, source="purchase", key="g")
    team_id = team.id
    db.session.commit()
    other = db.engine.connect()
    try:
        other.execute(text("SELECT 1 FROM credit_balances WHERE team_id = :t FOR UPDATE"), {"t": team_id})
        db.session.execute(text("SET LOCAL lock_timeout = '50ms'"))
        with pytest.raises(OperationalError) as raised:
            credits.spend(team_id, 1, key="waits")
        assert "lock timeout" in str(raised.value.orig)
        db.session.rollback()
    finally:
        other.rollback()
        other.close()
    assert credits.spend(team_id, 1, key="after").balance_after == 99
    db.session.commit()


@pytest.mark.postgres
def test_holds_captures_and_releases_cost_four_round_trips(app, backend):
    """Hold, capture and release are BEGIN, ``credit_open``, ``credit_write``, COMMIT too."""
    team = ledger_team("budget-holds")
    credits.grant(team.id, 100, source="purchase", key="g")
    team_id = team.id
    db.session.commit()
    four = ["BEGIN", "credit_open", "credit_write", "COMMIT"]

    with round_trips(app) as sent:
        first = credits.hold(team_id, 30, key="h1")
        db.session.commit()
    assert sent == four
    with round_trips(app) as sent:
        captured = credits.capture(team_id, first.id, 12, key="c1")
        db.session.commit()
    assert sent == four
    second = credits.hold(team_id, 20, key="h2")
    db.session.commit()
    with round_trips(app) as sent:
        released = credits.release(team_id, second.id, key="r1")
        db.session.commit()
    assert sent == four
    # What each answered is what a fresh read of the hold says.
    for result in (captured, released):
        row = db.session.get(Hold, result.id)
        assert (row.status, row.amount, row.captured_amount, row.expires_at) == (
            result.status,
            result.amount,
            result.captured_amount,
            result.expires_at,
        )
    assert credits.balance(team_id).available == 100 - 12
    assert credits.verify() == []
