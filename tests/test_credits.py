"""The credit ledger by example: order, expiry, holds, clawback, idempotency, bad input, verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from starter import credits
from starter.cli import credits_cli
from starter.extensions import db
from starter.models import CreditBalance, CreditBlock, Hold, LedgerEntry, Team

from .factories import ledger_team

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def team(app) -> Team:
    """A team with an empty credit account (no free-plan grant), for exact arithmetic."""
    return ledger_team("ledger")


def grant(team, amount, key, **kwargs):
    kwargs.setdefault("source", "purchase")
    kwargs.setdefault("now", NOW)
    receipt = credits.grant(team.id, amount, key=key, **kwargs)
    db.session.commit()
    return receipt


def spend(team, amount=None, key="spend", **kwargs):
    kwargs.setdefault("now", NOW)
    receipt = credits.spend(team.id, amount, key=key, **kwargs)
    db.session.commit()
    return receipt


def remaining(block_id: int) -> int:
    return db.session.execute(select(CreditBlock.remaining).where(CreditBlock.id == block_id)).scalar_one()


def entries(team) -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=team.id))


def assert_verified():
    assert credits.verify() == []


# -- granting and spending ---------------------------------------------------------------------


def test_grant_adds_a_block_and_an_entry(team):
    receipt = grant(team, 500, "g1", description="Medium pack", reference="cs_1")
    assert (receipt.kind, receipt.amount, receipt.balance_after) == ("grant", 500, 500)
    block = db.session.get(CreditBlock, receipt.block_id)
    assert (block.amount, block.remaining, block.held, block.source, block.reference) == (
        500,
        500,
        0,
        "purchase",
        "cs_1",
    )
    assert credits.balance(team.id, NOW).purchased == 500
    assert_verified()


def test_spend_uses_plan_credits_before_purchased(team):
    purchased = grant(team, 300, "pack")
    plan = grant(team, 100, "plan", source="plan", expires_at=NOW + timedelta(days=20), period_start=NOW)
    receipt = spend(team, 150, key="s1")
    assert receipt.amount == -150 and receipt.balance_after == 250
    assert remaining(plan.block_id) == 0
    assert remaining(purchased.block_id) == 250
    balance = credits.balance(team.id, NOW)
    assert (balance.plan, balance.purchased, balance.available) == (0, 250, 250)
    assert_verified()


def test_spend_order_soonest_expiry_then_never_expiring_then_oldest_then_id(team):
    never_old = grant(team, 10, "a", now=NOW - timedelta(days=5))
    never_new = grant(team, 10, "b", now=NOW - timedelta(days=1))
    late = grant(team, 10, "c", source="promo", expires_at=NOW + timedelta(days=30))
    soon = grant(team, 10, "d", source="promo", expires_at=NOW + timedelta(days=2))
    same_time_1 = grant(team, 10, "e", now=NOW - timedelta(days=9))
    same_time_2 = grant(team, 10, "f", now=NOW - timedelta(days=9))
    order = [soon, late, same_time_1, same_time_2, never_old, never_new]
    quote = credits.quote(team.id, 60, NOW)
    assert [draw.block_id for draw in quote.draws] == [r.block_id for r in order]
    for index, expected in enumerate(order):
        spend(team, 10, key=f"s{index}")
        assert remaining(expected.block_id) == 0
        assert all(remaining(r.block_id) == 10 for r in order[index + 1 :])
    assert_verified()


def test_a_spend_across_blocks_records_each_block(team):
    first = grant(team, 30, "a", source="promo", expires_at=NOW + timedelta(days=1))
    second = grant(team, 50, "b")
    receipt = spend(team, 45, key="s")
    entry = db.session.get(LedgerEntry, receipt.entry_id)
    assert [(a.block_id, a.amount) for a in entry.allocations] == [(first.block_id, -30), (second.block_id, -15)]
    assert entry.block_id == first.block_id


def test_spend_by_feature_uses_the_catalog_cost(team):
    from starter import catalog

    grant(team, 100, "g")
    receipt = spend(team, feature="ai_generation", key="f1", actor=credits.Actor("user", None))
    cost = catalog.FEATURES["ai_generation"].credits
    assert receipt.amount == -cost
    entry = db.session.get(LedgerEntry, receipt.entry_id)
    assert entry.feature == "ai_generation" and entry.description == "AI generation"
    with pytest.raises(credits.UnknownFeature):
        credits.spend(team.id, feature="teleport", key="f2")


def test_insufficient_credits_carry_required_and_available_and_change_nothing(team):
    grant(team, 40, "g")
    before = entries(team)
    with pytest.raises(credits.InsufficientCredits) as error:
        spend(team, 41, key="too-much")
    db.session.rollback()
    assert (error.value.required, error.value.available, error.value.status) == (41, 40, 402)
    assert error.value.details() == {"required": 41, "available": 40}
    assert entries(team) == before
    assert credits.balance(team.id, NOW).available == 40


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10", True, None, 10**12, float("nan")])
def test_bad_amounts_are_refused_and_change_nothing(team, amount):
    grant(team, 100, "g")
    before = entries(team)
    with pytest.raises((credits.InvalidAmount, credits.InvalidRequest)):
        credits.spend(team.id, amount, key="bad")
    with pytest.raises((credits.InvalidAmount, credits.InvalidRequest)):
        credits.grant(team.id, amount, source="promo", key="bad-grant")
    db.session.rollback()
    assert entries(team) == before


@pytest.mark.parametrize("key", ["", "   ", None, 12, "x" * 256, "tab\there"])
def test_an_idempotency_key_is_required(team, key):
    grant(team, 100, "g")
    with pytest.raises(credits.InvalidRequest):
        credits.spend(team.id, 1, key=key)


def test_unknown_source_and_missing_account_are_refused(app, team):
    with pytest.raises(credits.InvalidRequest):
        credits.grant(team.id, 5, source="gift", key="k")
    with pytest.raises(credits.InvalidRequest):
        credits.spend(team.id + 999, 5, key="k")


# -- idempotency -------------------------------------------------------------------------------


def test_a_repeated_key_returns_the_first_result_and_changes_nothing(team):
    grant(team, 100, "g")
    first = spend(team, 30, key="order-1")
    again = spend(team, 30, key="order-1")
    assert again.replayed and not first.replayed
    assert again.entry_id == first.entry_id and again.balance_after == 70
    assert credits.balance(team.id, NOW).available == 70
    assert grant(team, 100, "g").replayed


def test_the_same_key_with_other_parameters_is_a_conflict(team):
    grant(team, 100, "g")
    spend(team, 30, key="order-1")
    with pytest.raises(credits.IdempotencyConflict) as error:
        spend(team, 31, key="order-1")
    assert error.value.status == 409
    with pytest.raises(credits.IdempotencyConflict):
        credits.hold(team.id, 30, key="order-1", now=NOW)
    db.session.rollback()
    assert credits.balance(team.id, NOW).available == 70


def test_keys_are_unique_per_team_not_globally(team):
    other = ledger_team("other")
    grant(team, 10, "same-key")
    assert not grant(other, 10, "same-key").replayed


# -- expiry ------------------------------------------------------------------------------------


def test_expired_blocks_are_never_spendable_even_before_their_expiry_is_written(team):
    plan = grant(team, 100, "plan", source="plan", expires_at=NOW + timedelta(hours=1), period_start=NOW)
    grant(team, 20, "pack")
    later = NOW + timedelta(hours=2)
    assert credits.balance(team.id, later).available == 20
    assert credits.balance(team.id, later).plan == 0
    with pytest.raises(credits.InsufficientCredits) as error:
        credits.spend(team.id, 50, key="late", now=later)
    assert error.value.available == 20
    db.session.rollback()
    assert remaining(plan.block_id) == 100  # not yet written off
    assert_verified()


def test_expire_due_writes_the_expiry_once(team):
    plan = grant(team, 100, "plan", source="plan", expires_at=NOW + timedelta(days=1), period_start=NOW)
    spend(team, 30, key="s")
    later = NOW + timedelta(days=2)
    assert credits.expire_due(later) == 1
    db.session.commit()
    assert credits.expire_due(later) == 0
    entry = db.session.scalar(select(LedgerEntry).filter_by(team_id=team.id, kind="expire"))
    assert (entry.amount, entry.balance_after) == (-70, 0)
    assert remaining(plan.block_id) == 0
    assert db.session.get(CreditBlock, plan.block_id).expired_at == later
    assert_verified()


def test_balance_reports_the_next_expiry(team):
    soon = NOW + timedelta(days=3)
    grant(team, 100, "plan", source="plan", expires_at=soon, period_start=NOW)
    grant(team, 7, "promo", source="promo", expires_at=soon)
    grant(team, 50, "pack")
    balance = credits.balance(team.id, NOW)
    assert (balance.plan, balance.purchased, balance.other, balance.total) == (100, 50, 7, 157)
    assert (balance.next_expiry_at, balance.next_expiry_amount) == (soon, 107)


# -- holds -------------------------------------------------------------------------------------


def test_hold_reserves_then_capture_of_less_returns_the_rest(team):
    grant(team, 100, "g")
    held = credits.hold(team.id, 40, key="h1", feature="ai_generation", now=NOW)
    db.session.commit()
    assert held.status == "active"
    balance = credits.balance(team.id, NOW)
    assert (balance.held, balance.available, balance.total) == (40, 60, 100)
    with pytest.raises(credits.InsufficientCredits):
        credits.spend(team.id, 61, key="over", now=NOW)
    db.session.rollback()
    captured = credits.capture(team.id, held.id, 25, key="c1", now=NOW)
    db.session.commit()
    assert (captured.status, captured.captured_amount) == ("captured", 25)
    balance = credits.balance(team.id, NOW)
    assert (balance.held, balance.available) == (0, 75)
    entry = db.session.scalar(select(LedgerEntry).filter_by(team_id=team.id, kind="capture"))
    assert (entry.amount, entry.held_delta, entry.feature) == (-25, -40, "ai_generation")
    assert entry.meta == {"held": 40, "captured": 25, "returned": 15}
    assert_verified()


def test_capturing_more_than_held_is_refused(team):
    grant(team, 100, "g")
    held = credits.hold(team.id, 10, key="h", now=NOW)
    db.session.commit()
    with pytest.raises(credits.InvalidAmount):
        credits.capture(team.id, held.id, 11, key="c", now=NOW)
    db.session.rollback()
    assert credits.capture(team.id, held.id, 10, key="c", now=NOW).captured_amount == 10


def test_release_returns_everything_and_a_closed_hold_cannot_be_reused(team):
    grant(team, 100, "g")
    held = credits.hold(team.id, 30, key="h", now=NOW)
    released = credits.release(team.id, held.id, key="r", now=NOW)
    db.session.commit()
    assert released.status == "released"
    assert credits.balance(team.id, NOW).available == 100
    with pytest.raises(credits.HoldNotActive):
        credits.capture(team.id, held.id, 5, key="c", now=NOW)
    with pytest.raises(credits.HoldNotActive):
        credits.release(team.id, held.id, key="r2", now=NOW)
    assert credits.release(team.id, held.id, key="r", now=NOW).replayed
    assert_verified()


def test_another_teams_hold_is_not_found(team):
    other = ledger_team("other")
    grant(team, 100, "g")
    held = credits.hold(team.id, 30, key="h", now=NOW)
    with pytest.raises(credits.HoldNotFound):
        credits.capture(other.id, held.id, 5, key="steal", now=NOW)
    with pytest.raises(credits.HoldNotFound):
        credits.release(other.id, held.id, key="steal", now=NOW)


def test_expired_holds_are_released_by_the_job_and_cannot_be_captured(team):
    grant(team, 100, "g")
    held = credits.hold(team.id, 30, key="h", ttl_seconds=60, now=NOW)
    db.session.commit()
    later = NOW + timedelta(minutes=2)
    with pytest.raises(credits.HoldNotActive):
        credits.capture(team.id, held.id, 5, key="c", now=later)
    assert credits.release_expired_holds(later) == 1
    db.session.commit()
    assert db.session.get(Hold, held.id).status == "expired"
    assert credits.release_expired_holds(later) == 0
    assert credits.balance(team.id, later).available == 100
    assert_verified()


def test_a_hold_never_outlives_the_credits_it_reserves(team):
    plan_end = NOW + timedelta(minutes=5)
    grant(team, 100, "plan", source="plan", expires_at=plan_end, period_start=NOW)
    held = credits.hold(team.id, 50, key="h", ttl_seconds=3600, now=NOW)
    assert held.expires_at == plan_end
    # At the period end the job releases the hold first, then writes off the plan credits.
    assert credits.expire_due(plan_end) == 1
    db.session.commit()
    assert db.session.get(Hold, held.id).status == "expired"
    assert credits.balance(team.id, plan_end).total == 0
    assert_verified()


# -- clawback and adjustment -------------------------------------------------------------------


def test_clawback_takes_what_remains_and_records_the_shortfall(team):
    grant(team, 100, "pack", reference="pi_1")
    grant(team, 50, "other-pack", reference="pi_2")
    spend(team, 80, key="s")  # drawn from the older pi_1 block: 20 of it remain
    receipt = credits.clawback(team.id, "pi_1", 100, key="refund:pi_1", now=NOW)
    db.session.commit()
    entry = db.session.get(LedgerEntry, receipt.entry_id)
    assert entry.amount == -20
    assert entry.meta["shortfall"] == 80 and entry.meta["requested"] == 100
    assert credits.balance(team.id, NOW).available == 50  # the other pack is untouched
    assert credits.clawback(team.id, "pi_1", 100, key="refund:pi_1", now=NOW).replayed
    assert_verified()


def test_adjustments_go_both_ways_with_a_reason(team):
    up = credits.adjust(team.id, 25, reason="goodwill", key="a1", actor=credits.Actor("admin", None), now=NOW)
    down = credits.adjust(team.id, -5, reason="correction", key="a2", now=NOW)
    db.session.commit()
    assert (up.kind, up.amount, down.kind, down.amount, down.balance_after) == (
        "adjustment",
        25,
        "adjustment",
        -5,
        20,
    )
    with pytest.raises(credits.InvalidRequest):
        credits.adjust(team.id, 5, reason="  ", key="a3")
    with pytest.raises(credits.InvalidAmount):
        credits.adjust(team.id, 0, reason="nothing", key="a4")
    with pytest.raises(credits.InsufficientCredits):
        credits.adjust(team.id, -21, reason="too much", key="a5", now=NOW)


def test_quote_is_a_dry_run(team):
    grant(team, 10, "a", source="promo", expires_at=NOW + timedelta(days=1))
    grant(team, 100, "b")
    quote = credits.quote(team.id, 30, NOW)
    assert quote.fits and [d.credits for d in quote.draws] == [10, 20]
    assert not credits.quote(team.id, 500, NOW).fits
    assert credits.balance(team.id, NOW).available == 110


# -- verify ------------------------------------------------------------------------------------


def test_verify_names_the_team_whose_cache_drifted(team, runner):
    grant(team, 100, "g")
    spend(team, 10, key="s")
    assert runner.invoke(credits_cli, ["verify"]).exit_code == 0
    db.session.execute(update(CreditBalance).where(CreditBalance.team_id == team.id).values(balance=95))
    db.session.commit()
    problems = credits.verify()
    assert problems and {p.team_id for p in problems} == {team.id}
    result = runner.invoke(credits_cli, ["verify"])
    assert result.exit_code == 1
    assert f"team {team.id}" in result.output


def test_verify_catches_a_block_edited_behind_the_ledgers_back(team):
    receipt = grant(team, 100, "g")
    db.session.execute(update(CreditBlock).where(CreditBlock.id == receipt.block_id).values(remaining=60))
    db.session.commit()
    messages = " ".join(str(p) for p in credits.verify())
    assert f"block {receipt.block_id}" in messages


def test_cli_grant_by_slug_or_id_with_a_reason(team, runner):
    result = runner.invoke(credits_cli, ["grant", "ledger", "250", "--reason", "launch promo", "--key", "k1"])
    assert result.exit_code == 0, result.output
    assert "balance 250" in result.output
    result = runner.invoke(credits_cli, ["grant", str(team.id), "250", "--reason", "launch promo", "--key", "k1"])
    assert "already granted" in result.output
    assert credits.balance(team.id).available == 250
    assert runner.invoke(credits_cli, ["grant", "nope", "5", "--reason", "x"]).exit_code != 0
    assert runner.invoke(credits_cli, ["grant", "ledger", "-5", "--reason", "x"]).exit_code != 0
    assert runner.invoke(credits_cli, ["grant", "ledger", "5"]).exit_code != 0  # reason required
    entry = db.session.scalar(select(LedgerEntry).filter_by(team_id=team.id))
    assert entry.description == "Credit adjustment" and entry.actor_type == "admin"
    assert entry.meta["reason"] == "launch promo"  # internal: the team reads the description


def test_a_naive_time_is_refused_on_every_backend_and_changes_nothing(team):
    """The ledger's functions take ``now`` as given, so the app refuses a naive one before sending it."""
    team_id = team.id
    credits.grant(team_id, 50, source="purchase", key="pack")
    db.session.commit()
    naive = datetime(2026, 12, 2, 12, 0)
    for operation in (
        lambda: credits.spend(team_id, 5, key="naive-spend", now=naive),
        lambda: credits.hold(team_id, 5, key="naive-hold", now=naive),
    ):
        with pytest.raises(ValueError, match="naive datetime"):
            operation()
        db.session.rollback()
    assert credits.balance(team_id).available == 50
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).filter_by(team_id=team_id)) == 1
