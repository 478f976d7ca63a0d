"""The monthly job by example: month boundaries, catch-up, paid plans, holds, repeats, the bulk path.

Time is injected (``run_due_work(app, now)`` or ``flask credits grant-due --now``), never waited for.
When the scheduler starts is in ``test_scheduler_startup.py``.
"""

from __future__ import annotations

import threading
from dataclasses import astuple
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from starter import catalog, credits, plans, scheduler
from starter.credits import limits
from starter.credits.core import fingerprint_of
from starter.extensions import db
from starter.models import CreditBlock, Hold, LedgerEntry, Membership, OutboxMessage, Team

FREE = catalog.FREE_PLAN.monthly_credits


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def make_team(anchor: datetime, slug: str = "acme", plan_code: str = "free", **fields) -> Team:
    """A personal team signed up at ``anchor`` with the free allowance of its first period, as sign-up does."""
    fields.setdefault("is_personal", True)
    team = Team(name=slug.title(), slug=slug, period_anchor=anchor, created_at=anchor, plan_code="free", **fields)
    db.session.add(team)
    db.session.flush()
    credits.open_account(team)
    plans.start_free_period(team, anchor)
    team.plan_code = plan_code
    db.session.commit()
    return team


def run(app, now: datetime) -> scheduler.RunSummary:
    db.session.commit()  # SQLite: the job's own session needs the write lock an open read here would hold
    summary = scheduler.run_due_work(app, now)
    db.session.expire_all()
    return summary


def plan_blocks(team: Team) -> list[CreditBlock]:
    return list(db.session.scalars(select(CreditBlock).filter_by(team_id=team.id, source="plan").order_by("id")))


def entries(team: Team) -> list[LedgerEntry]:
    return list(db.session.scalars(select(LedgerEntry).filter_by(team_id=team.id).order_by(LedgerEntry.id)))


def assert_verified() -> None:
    assert credits.verify() == []
    db.session.commit()


def ledger_rows(team: Team) -> list:
    """The team's entries and allocations as the twins of a bulk/per-team comparison must share them."""
    result = []
    for e in entries(team):
        key, fingerprint = e.idempotency_key.replace(f"plan:{team.id}:", "plan:T:"), e.request_hash
        if e.kind == "expire":  # keyed by block id, which differs between the twins
            assert (key, fingerprint) == (f"expire:block:{e.block_id}", fingerprint_of("expire", block_id=e.block_id))
            key = fingerprint = "per block"
        allocations = [(a.block_id == e.block_id, a.amount, a.held_delta) for a in e.allocations]
        result.append((e.kind, e.amount, e.balance_after, e.held_after, e.description, e.meta, key, fingerprint))
        result.append(allocations)
    return result


def block_rows(team: Team) -> list:
    return [
        (b.source, b.amount, b.remaining, b.held, b.expires_at, b.expired_at is None, b.period_start)
        for b in db.session.scalars(select(CreditBlock).filter_by(team_id=team.id).order_by("id"))
    ]


# -- month boundaries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "boundaries"),
    [
        (at(2024, 1, 31, 9), [at(2024, 2, 29, 9), at(2024, 3, 31, 9), at(2024, 4, 30, 9)]),  # leap year
        (at(2025, 1, 31, 9), [at(2025, 2, 28, 9), at(2025, 3, 31, 9)]),
        (at(2025, 12, 31, 23, 30), [at(2026, 1, 31, 23, 30), at(2026, 2, 28, 23, 30)]),  # year end
        (at(2025, 1, 15), [at(2025, 2, 15), at(2025, 3, 15)]),
    ],
    ids=["31-jan-leap", "31-jan", "31-dec", "15th"],
)
def test_free_periods_follow_the_anchor_day_clamped_to_short_months(app, anchor, boundaries):
    team = make_team(anchor)
    assert (team.current_period_start, team.current_period_end) == (anchor, boundaries[0])

    for start, end in zip(boundaries, [*boundaries[1:], None], strict=True):
        assert run(app, start - timedelta(seconds=1)).teams_rolled_over == 0, "not before the boundary"
        assert run(app, start).teams_rolled_over == 1
        team = db.session.get(Team, team.id)
        assert team.current_period_start == start
        if end is not None:
            assert team.current_period_end == end
            assert plan_blocks(team)[-1].expires_at == end

    assert [block.period_start for block in plan_blocks(team)] == [anchor, *boundaries]
    assert_verified()


def test_a_free_team_through_three_months(app):
    anchor = at(2026, 1, 10, 12)
    team = make_team(anchor)
    credits.grant(team.id, 500, source="purchase", key="pack", reference="cs_1", now=anchor)
    credits.spend(team.id, 30, key="january", now=anchor + timedelta(days=3))  # from the plan block first
    db.session.commit()

    month_ends = [at(2026, 2, 10, 12), at(2026, 3, 10, 12), at(2026, 4, 10, 12), at(2026, 5, 10, 12)]
    for index, boundary in enumerate(month_ends[:3]):
        summary = run(app, boundary + timedelta(minutes=5))
        assert (summary.teams_rolled_over, summary.plan_grants, summary.credits_granted) == (1, 1, FREE)
        assert summary.credits_expired == (FREE - 30 if index == 0 else FREE)
        blocks = plan_blocks(team)
        assert len(blocks) == index + 2, "one grant per period"
        *old, current = blocks
        assert all(block.expired_at is not None and block.remaining == 0 for block in old)
        assert (current.remaining, current.period_start, current.expires_at) == (FREE, boundary, month_ends[index + 1])
        balance = credits.balance(team.id, boundary + timedelta(minutes=5))
        assert (balance.plan, balance.purchased) == (FREE, 500), "purchased credits untouched"
        assert_verified()

    january = [("grant", FREE), ("grant", 500), ("spend", -30), ("expire", -(FREE - 30)), ("grant", FREE)]
    assert [(entry.kind, entry.amount) for entry in entries(team)] == january + [("expire", -FREE), ("grant", FREE)] * 2
    assert entries(team)[-1].balance_after == FREE + 500


def test_catch_up_after_three_months_down_grants_the_current_period_only(app):
    team = make_team(at(2026, 1, 15))
    first = plan_blocks(team)[0]

    summary = run(app, at(2026, 4, 20))

    assert (summary.teams_rolled_over, summary.plan_grants, summary.credits_expired) == (1, 1, FREE)
    blocks = plan_blocks(team)
    assert [block.period_start for block in blocks] == [at(2026, 1, 15), at(2026, 4, 15)], "missed months not stacked"
    assert blocks[0].id == first.id and blocks[0].expired_at == at(2026, 4, 20) and blocks[0].remaining == 0
    assert blocks[1].expires_at == at(2026, 5, 15)
    assert credits.balance(team.id, at(2026, 4, 20)).total == FREE
    team = db.session.get(Team, team.id)
    assert (team.current_period_start, team.current_period_end) == (at(2026, 4, 15), at(2026, 5, 15))
    assert_verified()


def test_running_twice_at_the_same_time_changes_nothing_the_second_time(app, runner):
    teams = [make_team(at(2026, 1, day), slug=f"team-{day}") for day in range(1, 8)]
    db.session.commit()

    first = runner.invoke(args=["credits", "grant-due", "--now", "2026-02-20T00:00:00Z"])
    db.session.expire_all()
    before = db.session.scalar(select(func.count()).select_from(LedgerEntry))
    db.session.commit()
    second = runner.invoke(args=["credits", "grant-due", "--now", "2026-02-20T00:00:00+00:00"])
    db.session.expire_all()

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "7 team(s) rolled over" in first.output and f"{7 * FREE:,} credits granted" in first.output
    assert "0 team(s) rolled over, 0 credits granted" in second.output
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == before
    assert all(len(plan_blocks(team)) == 2 for team in teams)
    assert_verified()


def test_grant_due_refuses_a_bad_now_with_a_clear_error(runner):
    result = runner.invoke(args=["credits", "grant-due", "--now", "next tuesday"])
    assert result.exit_code == 2
    assert "Invalid value for '--now'" in result.output and "ISO 8601" in result.output
    assert "Traceback" not in result.output


def test_grant_due_takes_a_date_as_utc_midnight(app, runner):
    make_team(at(2026, 1, 31))
    db.session.commit()
    result = runner.invoke(args=["credits", "grant-due", "--now", "2026-02-28"])
    assert result.exit_code == 0, result.output
    assert "at 2026-02-28T00:00:00+00:00: 1 team(s) rolled over" in result.output


# -- the bulk path against the per-team reference ------------------------------------------------


def test_the_bulk_rollover_writes_what_the_per_team_path_writes(app):
    now = at(2026, 3, 5)
    twins = [make_team(at(2026, 1, 3), slug=slug) for slug in ("bulk", "reference")]
    for team in twins:
        credits.grant(team.id, 40, source="promo", key="promo", expires_at=at(2026, 2, 1), now=at(2026, 1, 4))
        credits.spend(team.id, 25, key="s1", now=at(2026, 1, 5))
        credits.grant(team.id, 200, source="purchase", key="pack", now=at(2026, 1, 6))
    db.session.commit()

    bulk = credits.roll_over_free_teams([twins[0].id], now)
    reference = plans.roll_over_team(twins[1].id, now)
    db.session.commit()

    assert bulk == reference
    assert (bulk.teams, bulk.grants, bulk.blocks_expired, bulk.credits_expired) == (1, 1, 2, FREE + 15)
    assert ledger_rows(twins[0]) == ledger_rows(twins[1])
    assert [(b.amount, b.remaining, b.expires_at, b.period_start) for b in plan_blocks(twins[0])] == [
        (b.amount, b.remaining, b.expires_at, b.period_start) for b in plan_blocks(twins[1])
    ]
    # A later start_period for the same period replays the bulk grant instead of conflicting.
    replay = plans.start_free_period(db.session.get(Team, twins[0].id), now)
    assert replay.replayed
    db.session.commit()
    assert_verified()


# Anchors and times where the period arithmetic, the keys, the fingerprints or the rows could go
# wrong: clamped days, a leap year, a year end, microseconds, now exactly on a boundary, months of
# catch-up, an anchor after now, a team without the allowance, a fully used block.
TWIN_CASES = [
    ("31-jan-leap", at(2024, 1, 31, 9), at(2024, 3, 1), {}),
    ("microseconds", datetime(2025, 12, 31, 23, 59, 59, 123456, tzinfo=UTC), at(2026, 3, 2), {}),
    ("on-the-boundary", at(2026, 1, 10, 12), at(2026, 3, 10, 12), {}),
    ("catch-up", at(2025, 1, 15), datetime(2026, 6, 20, 0, 0, 0, 5, tzinfo=UTC), {}),
    ("not-personal", at(2026, 1, 3), at(2026, 3, 1), {"is_personal": False}),
    ("used-up", at(2026, 1, 3), at(2026, 3, 1), {"spend": FREE}),
    ("anchor-after-now", at(2026, 5, 1), at(2026, 3, 1), {"period_end": at(2026, 2, 1)}),
]


def test_the_bulk_rollover_matches_the_per_team_path_across_anchors(app):
    """Several teams in one batch per ``now``, each against a twin rolled over one at a time."""
    pairs = []
    for name, anchor, now, extra in TWIN_CASES:
        twins = [make_team(anchor, slug=f"{name}-{side}") for side in ("bulk", "reference")]
        for team in twins:
            team.is_personal = extra.get("is_personal", True)
            credits.grant(team.id, 40, source="promo", key="promo", expires_at=anchor + timedelta(days=1), now=anchor)
            if "spend" in extra:
                credits.spend(team.id, extra["spend"], key="all", now=anchor)
            if "period_end" in extra:
                team.current_period_end = extra["period_end"]
        pairs.append((name, now, twins))
    db.session.commit()

    for now in sorted({now for _, now, _ in pairs}):
        batch = [twins for _, at_now, twins in pairs if at_now == now]
        bulk = credits.roll_over_free_teams([twins[0].id for twins in batch], now)
        reference = credits.RolloverResult()
        for twins in batch:
            reference += plans.roll_over_team(twins[1].id, now)
        db.session.commit()
        assert bulk == reference
        assert all(type(value) is int for value in astuple(bulk)), bulk  # counts, not Decimals from SQL sums

    db.session.expire_all()
    for name, now, (bulk_team, reference_team) in pairs:
        bulk_team, reference_team = db.session.get(Team, bulk_team.id), db.session.get(Team, reference_team.id)
        assert (bulk_team.current_period_start, bulk_team.current_period_end) == (
            reference_team.current_period_start,
            reference_team.current_period_end,
        ), name
        assert bulk_team.current_period_start <= now or name == "anchor-after-now", name
        assert ledger_rows(bulk_team) == ledger_rows(reference_team), name
        assert block_rows(bulk_team) == block_rows(reference_team), name
    assert_verified()


def test_the_bulk_rollover_judges_a_team_once_for_the_low_balance_alerts(app, fast_user):
    """300 available → expiries → grant: 100. One change, below 150, never "out of credits" in between."""
    team = make_team(at(2026, 1, 3))
    owner = fast_user("owner@example.com")
    db.session.add(Membership(team_id=team.id, user_id=owner.id, role="owner"))
    credits.grant(team.id, 200, source="promo", key="promo", expires_at=at(2026, 2, 1), now=at(2026, 1, 4))
    limits.set_thresholds(team.id, [150])
    db.session.commit()

    result = credits.roll_over_free_teams([team.id], at(2026, 2, 3))
    db.session.commit()

    assert (result.teams, result.grants, result.blocks_expired) == (1, 1, 2)
    assert credits.balance(team.id, at(2026, 2, 3)).available == FREE
    newest = entries(team)[-1]
    assert newest.kind == "grant"
    assert [(m.subject, m.dedupe_key) for m in db.session.scalars(select(OutboxMessage))] == [
        (f"{team.name}: credits below 150", f"balance:{newest.id}:owner@example.com")
    ]
    assert_verified()


def test_a_due_block_with_held_credits_goes_through_expire_block(app):
    team = make_team(at(2026, 1, 1))
    hold = credits.hold(team.id, 30, key="h", ttl_seconds=3600, now=at(2026, 1, 31, 23, 30))
    db.session.commit()
    assert hold.expires_at == at(2026, 2, 1), "a hold never outlives its block"

    result = credits.roll_over_free_teams([team.id], at(2026, 2, 1, 0, 5))  # without releasing holds first
    db.session.commit()

    assert (result.teams, result.grants, result.credits_expired) == (1, 1, FREE)
    assert db.session.get(Hold, hold.id).status == "expired"
    assert [(e.kind, e.amount, e.held_delta) for e in entries(team)][-3:] == [
        ("release", 0, -30),
        ("expire", -FREE, 0),
        ("grant", FREE, 0),
    ]
    assert_verified()


def test_a_team_already_holding_the_periods_plan_block_moves_on_without_a_second_grant(app):
    team = make_team(at(2026, 1, 10))
    assert run(app, at(2026, 2, 11)).plan_grants == 1
    team = db.session.get(Team, team.id)
    team.current_period_end = at(2026, 2, 10)  # as if its period had not been moved on with the grant
    db.session.commit()

    summary = run(app, at(2026, 2, 12))

    assert (summary.teams_rolled_over, summary.plan_grants, summary.failed_batches) == (1, 0, 0)
    assert [block.period_start for block in plan_blocks(team)] == [at(2026, 1, 10), at(2026, 2, 10)]
    assert db.session.get(Team, team.id).current_period_end == at(2026, 3, 10)
    assert_verified()


def test_a_due_team_without_a_credit_account_is_left_due_and_counted(app):
    team = Team(name="Orphan", slug="orphan", period_anchor=at(2026, 1, 1), current_period_end=at(2026, 2, 1))
    db.session.add(team)
    db.session.commit()

    summary = run(app, at(2026, 2, 2))

    assert (summary.teams_rolled_over, summary.teams_without_account) == (0, 1)
    assert "1 due team(s) without a credit account" in summary.describe()
    assert db.session.get(Team, team.id).current_period_end == at(2026, 2, 1)


# -- paid plans and holds ------------------------------------------------------------------------


def test_paid_teams_are_not_granted_but_expire_and_lapse_to_past_due_after_the_grace(app):
    pro = catalog.plan("pro")
    paid = make_team(at(2026, 1, 1), slug="paid", plan_code="pro", subscription_status="active")
    plans.start_period(paid, at(2026, 1, 10), at(2026, 2, 10), pro, reference="in_1", now=at(2026, 1, 10))
    canceled = make_team(at(2026, 1, 1), slug="canceled", plan_code="pro", subscription_status="canceled")
    plans.start_period(canceled, at(2026, 1, 10), at(2026, 2, 10), pro, reference="in_2", now=at(2026, 1, 10))
    ending = make_team(at(2026, 1, 1), slug="ending", plan_code="pro", subscription_status="active")
    ending.cancel_at_period_end, ending.current_period_end = True, at(2026, 2, 10)
    db.session.commit()

    summary = run(app, at(2026, 2, 10, 23))  # period over, within the 24-hour grace
    paid = db.session.get(Team, paid.id)
    assert summary.plan_grants == 0 and summary.teams_rolled_over == 0, "Stripe's invoice.paid grants paid periods"
    assert summary.credits_expired == 3 * FREE + 2 * pro.monthly_credits, "sign-up credits and paid periods"
    assert all(block.expired_at is not None for block in plan_blocks(paid))
    assert paid.subscription_status == "active" and paid.current_period_end == at(2026, 2, 10)

    summary = run(app, at(2026, 2, 11, 1))
    assert summary.paid_teams_flagged == 1
    assert db.session.get(Team, paid.id).subscription_status == "past_due"
    assert db.session.get(Team, canceled.id).subscription_status == "canceled", "only active/trialing lapse"
    assert db.session.get(Team, ending.id).subscription_status == "active", "cancelled at period end: not unpaid"
    assert run(app, at(2026, 2, 12)).paid_teams_flagged == 0
    assert_verified()


def test_grace_is_configurable(app):
    app.config["PAID_PERIOD_GRACE_HOURS"] = 2
    paid = make_team(at(2026, 1, 1), slug="paid", plan_code="starter", subscription_status="trialing")
    plans.start_period(paid, at(2026, 1, 5), at(2026, 2, 1), catalog.plan("starter"), now=at(2026, 1, 5))
    db.session.commit()
    assert run(app, at(2026, 2, 1, 1)).paid_teams_flagged == 0
    assert run(app, at(2026, 2, 1, 3)).paid_teams_flagged == 1


def test_expired_holds_are_released_by_both_jobs(app):
    team = make_team(at(2026, 1, 1))
    credits.grant(team.id, 100, source="purchase", key="pack", now=at(2026, 1, 2))
    first = credits.hold(team.id, 20, key="h1", ttl_seconds=60, now=at(2026, 1, 5))
    second = credits.hold(team.id, 10, key="h2", ttl_seconds=600, now=at(2026, 1, 5))
    db.session.commit()

    assert run(app, at(2026, 1, 5, 0, 2)).holds_released == 1
    assert db.session.get(Hold, first.id).status == "expired"
    assert db.session.get(Hold, second.id).status == "active"
    db.session.commit()
    assert scheduler.release_holds(app, at(2026, 1, 5, 0, 11)) == 1
    db.session.expire_all()
    assert db.session.get(Hold, second.id).status == "expired"
    assert credits.balance(team.id, at(2026, 1, 5, 1)).held == 0
    assert_verified()


@pytest.mark.postgres
def test_a_second_process_skips_while_the_run_lock_is_held(app):
    make_team(at(2026, 1, 1))
    db.session.commit()
    with scheduler.run_lock("due-work") as acquired:
        assert acquired
        summary = scheduler.run_due_work(app, at(2026, 2, 2))
    assert summary.skipped and summary.teams_rolled_over == 0
    assert "skipped, another process is running it" in summary.describe()
    assert run(app, at(2026, 2, 2)).teams_rolled_over == 1, "the lock is free again"


def test_a_stopped_run_ends_after_its_current_batch_and_the_next_run_finishes(app, monkeypatch):
    for day in (1, 2, 3):
        make_team(at(2026, 1, day), slug=f"team-{day}")
    app.config["SCHEDULER_BATCH_SIZE"] = 1
    stop, roll_over = threading.Event(), credits.roll_over_free_teams

    def roll_over_then_stop(team_ids, now):  # as if ``shutdown`` came during the first batch
        stop.set()
        return roll_over(team_ids, now)

    monkeypatch.setattr(credits, "roll_over_free_teams", roll_over_then_stop)
    db.session.commit()
    assert scheduler.run_due_work(app, at(2026, 2, 20), stop=stop).teams_rolled_over == 1
    monkeypatch.undo()
    assert run(app, at(2026, 2, 20)).teams_rolled_over == 2
    assert_verified()
