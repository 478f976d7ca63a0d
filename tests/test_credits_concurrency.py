"""Races on the ledger with real threads, each with its own connection and transaction.

The PostgreSQL ones are the contract: row locks serialise one team's changes, so nothing is
overdrawn, no update is lost, and a repeated key debits once. On SQLite, writers queue.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from starter import credits
from starter.extensions import db
from starter.models import LedgerEntry, utcnow

from .factories import ledger_team


@pytest.fixture
def app_config():
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 40, "max_overflow": 10, "pool_timeout": 60}}


@pytest.fixture
def team(app) -> int:
    return ledger_team("race").id


def in_thread(app, operation):
    """Run ``operation`` in its own app context (own session, own connection) and commit."""

    def run(*args):
        with app.app_context():
            try:
                result = operation(*args)
                db.session.commit()
                return result
            except credits.CreditError as error:
                db.session.rollback()
                return error
            finally:
                db.session.remove()

    return run


def race(app, operation, calls, workers, *, barrier_seconds: float = 0.5):
    barrier = threading.Barrier(workers)
    wrapped = in_thread(app, operation)

    def start(args):
        try:
            barrier.wait(timeout=barrier_seconds)
        except threading.BrokenBarrierError:
            pass  # later calls start as soon as a worker is free
        return wrapped(*args)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(start, calls))


@pytest.mark.postgres
def test_32_threads_of_25_spends_never_overdraw_and_lose_nothing(app, team):
    now = utcnow()
    credits.grant(team, 400, source="plan", key="plan", expires_at=now + timedelta(days=30), period_start=now)
    credits.grant(team, 600, source="purchase", key="pack")
    db.session.commit()
    calls = [(f"t{t}-s{s}",) for t in range(32) for s in range(25)]  # 800 spends of 3 = 2,400 wanted

    results = race(app, lambda key: credits.spend(team, 3, key=key), calls, workers=32)

    succeeded = [r for r in results if isinstance(r, credits.Receipt)]
    refused = [r for r in results if isinstance(r, credits.InsufficientCredits)]
    assert len(succeeded) == 1000 // 3 and len(refused) == 800 - 333
    assert sorted(r.balance_after for r in succeeded) == list(range(1, 1000, 3)), "each spend saw the one before"
    db.session.expire_all()
    assert credits.balance(team).available == 1
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=team, kind="spend")) == 333
    assert credits.verify() == []


@pytest.mark.postgres
def test_20_concurrent_repeats_of_one_key_debit_once(app, team):
    credits.grant(team, 100, source="purchase", key="pack")
    db.session.commit()

    results = race(app, lambda key: credits.spend(team, 7, key=key), [("same-key",)] * 20, workers=20)

    assert all(isinstance(r, credits.Receipt) for r in results), results
    assert len({r.entry_id for r in results}) == 1
    assert Counter(r.replayed for r in results) == {True: 19, False: 1}
    assert credits.balance(team).available == 93
    assert credits.verify() == []


@pytest.mark.postgres
def test_24_concurrent_holds_reserve_no_more_than_there_is_and_repeats_reserve_once(app, team):
    """Holds race through ``credit_open``/``credit_write`` like spends: each sees the holds before it."""
    credits.grant(team, 100, source="purchase", key="pack")
    credits.grant(team, 35, source="promo", key="promo", expires_at=utcnow() + timedelta(days=1))
    db.session.commit()
    calls = [(f"hold-{n}",) for n in range(16)] + [("same-hold",)] * 8  # 17 different holds of 10 wanted

    results = race(app, lambda key: credits.hold(team, 10, key=key), calls, workers=24)

    made = [r for r in results if isinstance(r, credits.HoldResult)]
    refused = [r for r in results if isinstance(r, credits.InsufficientCredits)]
    assert len({r.id for r in made}) == 13 and len(made) + len(refused) == 24, results
    repeats = [r for r in results[16:] if isinstance(r, credits.HoldResult)]
    assert len({r.id for r in repeats}) <= 1  # one hold for the key, however many repeats won through
    db.session.expire_all()
    balance = credits.balance(team)
    assert balance.held == 130 and balance.available == 5
    assert credits.verify() == []


@pytest.mark.postgres
def test_spends_in_one_call_race_limited_spends_and_holds_on_one_team(app, team):
    """Both ways a debit is written, racing on one team: plain spends in one ``credit_spend`` call
    (some falling back when the first blocks run short), spends by a key with a limit through
    ``credit_open``/``credit_write``, and holds. Nothing is overdrawn, the limit is never passed,
    a key repeated across threads debits once, and the ledger adds up."""
    from starter import api_keys

    credits.grant(team, 300, source="purchase", key="pack")
    credits.grant(team, 150, source="promo", key="promo", expires_at=utcnow() + timedelta(days=1))
    key, _ = api_keys.create(team, "capped", spend_limit=100, limit_period="month")
    db.session.commit()
    capped = api_keys.actor_for(key.id, 100, "month")

    def operation(kind: str, idempotency_key: str):  # type: ignore[no-untyped-def]
        if kind == "plain":
            return credits.spend(team, 5, key=idempotency_key)
        if kind == "capped":
            return credits.spend(team, 10, key=idempotency_key, actor=capped)
        return credits.hold(team, 10, key=idempotency_key)

    calls = [("plain", f"p{n}") for n in range(40)] + [("plain", "same")] * 6
    calls += [("capped", f"c{n}") for n in range(14)] + [("hold", f"h{n}") for n in range(16)]
    results = race(app, lambda kind, k: operation(kind, k), calls, workers=24)

    outcome = list(zip(calls, results, strict=True))
    plain = [r for (kind, _), r in outcome if kind == "plain" and isinstance(r, credits.Receipt)]
    limited = [r for (kind, _), r in outcome if kind == "capped" and isinstance(r, credits.Receipt)]
    holds = [r for (kind, _), r in outcome if kind == "hold" and isinstance(r, credits.HoldResult)]
    unexpected = [
        r
        for _, r in outcome
        if isinstance(r, Exception) and not isinstance(r, credits.InsufficientCredits | credits.SpendLimitReached)
    ]
    assert unexpected == []
    assert len(limited) <= 10, "the key's limit of 100 is 10 spends of 10"
    same = [r for (_, k), r in outcome if k == "same" and isinstance(r, credits.Receipt)]
    assert len({r.entry_id for r in same}) <= 1
    spent = 5 * len({r.entry_id for r in plain}) + 10 * len(limited)
    db.session.expire_all()
    balance = credits.balance(team)
    assert balance.held == 10 * len(holds)
    assert balance.available == 450 - spent - balance.held >= 0
    entries = db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=team, kind="spend"))
    assert entries == len({r.entry_id for r in plain}) + len(limited)
    assert credits.verify() == []


@pytest.mark.postgres
def test_concurrent_capture_and_release_of_a_hold_one_wins(app, team):
    credits.grant(team, 1_000, source="purchase", key="pack")
    db.session.commit()
    holds = [credits.hold(team, 10, key=f"h{i}") for i in range(15)]
    db.session.commit()

    def close(kind, hold_id):
        if kind == "capture":
            return credits.capture(team, hold_id, 6, key=f"capture-{hold_id}")
        return credits.release(team, hold_id, key=f"release-{hold_id}")

    calls = [(kind, hold.id) for hold in holds for kind in ("capture", "release")]
    results = race(app, close, calls, workers=30)

    for index, _hold in enumerate(holds):
        pair = results[2 * index : 2 * index + 2]
        winners = [r for r in pair if isinstance(r, credits.HoldResult)]
        losers = [r for r in pair if isinstance(r, credits.HoldNotActive)]
        assert len(winners) == 1 and len(losers) == 1, pair
    captured = sum(1 for r in results if isinstance(r, credits.HoldResult) and r.status == "captured")
    db.session.expire_all()
    balance = credits.balance(team)
    assert balance.held == 0 and balance.available == 1_000 - 6 * captured
    assert credits.verify() == []


@pytest.mark.postgres
def test_spends_on_different_teams_do_not_block_each_other(app, team):
    other = ledger_team("other")
    for team_id in (team, other.id):
        credits.grant(team_id, 100, source="purchase", key="pack")
    db.session.commit()
    calls = [(team_id, f"{team_id}-{i}") for i in range(50) for team_id in (team, other.id)]
    results = race(app, lambda team_id, key: credits.spend(team_id, 1, key=key), calls, workers=16)
    assert all(isinstance(r, credits.Receipt) for r in results)
    assert credits.balance(team).available == 50 and credits.balance(other.id).available == 50
    assert credits.verify() == []


def test_concurrent_writers_queue_instead_of_failing(app, team):
    """On SQLite too: no "database is locked", every spend lands."""
    credits.grant(team, 1_000, source="purchase", key="pack")
    db.session.commit()
    calls = [(f"k{i}",) for i in range(64)]
    results = race(app, lambda key: credits.spend(team, 2, key=key), calls, workers=8)
    assert all(isinstance(r, credits.Receipt) for r in results), results
    assert credits.balance(team).available == 1_000 - 128
    assert credits.verify() == []
