"""Yearly plans' monthly grants under real concurrency on PostgreSQL: two schedulers at once, every month.

Each test commits 100 teams paying Pro yearly from 31 January 2028 (a leap year), then grants the twelve
months with two ``flask credits grant-due`` processes started together for each month (or, without the
advisory lock, two threads) and checks one grant per team and month, and ``credits.verify()``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from starter import catalog, credits, yearly
from starter.extensions import db
from starter.models import CreditBalance, CreditBlock, PaidYear, Team
from starter.periods import add_months

pytestmark = pytest.mark.postgres

TEAMS = 100
START = datetime(2028, 1, 31, 8, tzinfo=UTC)
PRO = catalog.PLANS["pro"]


@pytest.fixture
def yearly_teams(app) -> list[int]:
    end = add_months(START, 12)
    teams = [
        {
            "name": f"Yearly {i}",
            "slug": f"yearly-{i}",
            "plan_code": "pro",
            "stripe_subscription_id": f"sub_yearly_{i}",
            "subscription_status": "active",
            "period_anchor": START,
            "current_period_start": START,
            "current_period_end": end,
        }
        for i in range(TEAMS)
    ]
    db.session.execute(insert(Team), teams)
    ids = list(db.session.scalars(select(Team.id).order_by(Team.id)))
    db.session.execute(insert(CreditBalance), [{"team_id": i, "balance": 0, "held": 0} for i in ids])
    db.session.execute(
        insert(PaidYear),
        [
            {
                "team_id": team_id,
                "stripe_subscription_id": f"sub_yearly_{i}",
                "stripe_invoice_id": f"in_yearly_{i}",
                "plan_code": "pro",
                "starts_at": START,
                "ends_at": end,
                "next_grant_at": START,
                "months_granted": 0,
            }
            for i, team_id in enumerate(ids)
        ],
    )
    db.session.commit()
    return ids


def grant_due(project_root, database_url, now: datetime) -> subprocess.Popen:
    environment = {**os.environ, "DATABASE_URL": database_url, "SCHEDULER_ENABLED": "false", "SECRET_KEY": "test"}
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "credits", "grant-due", "--now", now.isoformat()],
        cwd=project_root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_twelve_grants_each() -> None:
    db.session.expire_all()
    per_month = (
        select(func.count().label("grants"))
        .select_from(CreditBlock)
        .where(CreditBlock.source == "plan")
        .group_by(CreditBlock.team_id, CreditBlock.period_start)
        .subquery()
    )
    counts = dict(db.session.execute(select(per_month.c.grants, func.count()).group_by(per_month.c.grants)).all())
    assert counts == {1: 12 * TEAMS}, "one grant per team and month, twelve months each"
    months = db.session.scalars(select(func.count(func.distinct(CreditBlock.period_start)))).one()
    assert months == 12
    assert set(db.session.scalars(select(PaidYear.months_granted))) == {12}
    assert credits.verify() == []
    db.session.commit()


def test_two_schedulers_grant_each_month_of_the_year_once(app, yearly_teams, project_root, database_url):
    for month in range(12):
        moment = add_months(START, month) + timedelta(minutes=30)
        processes = [grant_due(project_root, database_url, moment) for _ in range(2)]
        outputs = [process.communicate(timeout=60) for process in processes]
        assert [p.returncode for p in processes] == [0, 0], outputs
        started = [re.search(r"(\d+) yearly plan month\(s\) started", out) for out, _ in outputs]
        assert sum(int(m.group(1)) for m in started if m) == TEAMS, outputs  # between them, once per team
    assert_twelve_grants_each()


def test_without_the_advisory_lock_row_locks_and_keys_still_grant_each_month_once(app, yearly_teams):
    errors: list[Exception] = []

    def run(moment: datetime, barrier: threading.Barrier) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=5)
                cursor = 0
                while year_ids := yearly.due_year_ids(moment, after=cursor, limit=20):
                    cursor = year_ids[-1]
                    yearly.grant_due_months(year_ids, moment)
                    db.session.commit()
            except Exception as error:  # surfaced below
                errors.append(error)
            finally:
                db.session.remove()

    for month in range(12):
        moment = add_months(START, month) + timedelta(minutes=30)
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(moment, barrier)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert_twelve_grants_each()
