"""The usage rollup (``usage_days``): kept with each spend and capture, read by the dashboard chart, verified."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask_migrate import downgrade, upgrade
from sqlalchemy import delete, func, select, update

from starter import create_app, credits
from starter.credits import history
from starter.extensions import db
from starter.models import LedgerEntry, UsageDay

from .factories import ledger_team

NOW = datetime(2026, 6, 10, 23, 30, tzinfo=UTC)


def rollup_of(team_id: int) -> dict[tuple[date, str], int]:
    rows = db.session.execute(
        select(UsageDay.day, UsageDay.feature, UsageDay.credits).where(UsageDay.team_id == team_id)
    )
    return {(day, feature): used for day, feature, used in rows}


def some_usage(team_id: int) -> None:
    credits.grant(team_id, 1_000, source="purchase", key="g", now=NOW - timedelta(days=5))
    credits.spend(team_id, 10, key="s1", feature="ai_generation", now=NOW - timedelta(days=2))
    credits.spend(team_id, 7, key="s2", now=NOW - timedelta(days=2))
    credits.spend(team_id, 2, key="s3", feature="export_pdf", now=NOW)
    credits.spend(team_id, 2, key="s4", feature="export_pdf", now=NOW + timedelta(minutes=40))  # the next UTC day
    held = credits.hold(team_id, 25, key="h1", feature="image_upscale", now=NOW)
    credits.capture(team_id, held.id, 20, key="c1", now=NOW + timedelta(minutes=1))
    other = credits.hold(team_id, 25, key="h2", feature="image_upscale", now=NOW)
    credits.release(team_id, other.id, key="r2", now=NOW + timedelta(minutes=1))
    credits.adjust(team_id, -3, reason="correction", key="a1", now=NOW)
    db.session.commit()


def test_spends_and_captures_are_added_to_their_utc_day_and_feature_nothing_else(app):
    team = ledger_team("rollup")
    some_usage(team.id)
    day = NOW.date()
    assert rollup_of(team.id) == {
        (day - timedelta(days=2), "ai_generation"): 10,
        (day - timedelta(days=2), ""): 7,
        (day, "export_pdf"): 2,
        (day + timedelta(days=1), "export_pdf"): 2,
        (day, "image_upscale"): 20,  # what the capture took, not what the hold reserved; releases are no usage
    }
    assert credits.verify() == []


def test_the_dashboard_chart_from_the_rollup_equals_the_entries_aggregated(app):
    team = ledger_team("chart")
    some_usage(team.id)
    chart = history.usage_by_day(team.id, now=NOW + timedelta(days=1))
    assert len(chart) == 30
    found = {(day, feature): used for day, features in chart.items() for feature, used in features.items()}
    entries = db.session.execute(
        select(LedgerEntry.created_at, LedgerEntry.feature, LedgerEntry.amount).where(
            LedgerEntry.team_id == team.id, LedgerEntry.kind.in_(("spend", "capture"))
        )
    ).all()
    expected: dict[tuple[date, str], int] = {}
    for created_at, feature, amount in entries:
        key = (created_at.astimezone(UTC).date(), feature or "other")
        expected[key] = expected.get(key, 0) - amount
    assert found == expected


def test_verify_reports_a_rollup_that_disagrees_with_the_ledger(app):
    team = ledger_team("tampered")
    some_usage(team.id)
    db.session.execute(
        update(UsageDay).where(UsageDay.team_id == team.id, UsageDay.feature == "").values(credits=UsageDay.credits + 1)
    )
    db.session.execute(delete(UsageDay).where(UsageDay.team_id == team.id, UsageDay.feature == "image_upscale"))
    db.session.commit()
    problems = [str(problem) for problem in credits.verify()]
    day = NOW.date()
    assert problems == [
        f"team {team.id}: usage on {day - timedelta(days=2)} (no feature) is 8 in usage_days but 7 in the ledger",
        f"team {team.id}: usage on {day} (image_upscale) is 0 in usage_days but 20 in the ledger",
    ]


def test_the_migration_backfills_the_rollup_from_the_entries_already_written(tmp_path):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'backfill.db'}"})
    with app.app_context():
        upgrade()
        team = ledger_team("backfill")
        some_usage(team.id)
        kept = rollup_of(team.id)
        db.session.remove()  # migrations run on their own connection
        downgrade(revision="3b9d0c1e5a27")  # back to before the rollup existed: the entries stay
        assert db.session.execute(select(func.count()).select_from(LedgerEntry)).scalar_one() == 10
        db.session.remove()
        upgrade()
        assert rollup_of(team.id) == kept
        assert credits.verify() == []
        db.session.remove()
        db.engine.dispose()
