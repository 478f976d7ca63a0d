"""The monthly job under real concurrency on PostgreSQL: separate processes, a killed run, no advisory lock.

Each test commits ~2,000 due teams, then runs ``flask credits grant-due`` in subprocesses against the
same database (or, without the advisory lock, in threads) and checks that every team got exactly one
grant for its period and that ``credits.verify()`` finds nothing wrong.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, insert, select, text

from starter import credits, scheduler
from starter.extensions import db
from starter.models import CreditBalance, CreditBlock, Team

pytestmark = pytest.mark.postgres

TEAMS = 2_000
SIGN_UP = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)  # every team's January period is over, and so is February's for most


@pytest.fixture
def due_teams(app) -> list[int]:
    """~2,000 free teams signed up through January, each holding its first period's free credits."""
    rows = []
    for index in range(TEAMS):
        anchor = SIGN_UP + timedelta(days=index % 28, minutes=index % 1440)
        rows.append(
            {
                "name": f"Team {index}",
                "slug": f"team-{index}",
                "plan_code": "free",
                "is_personal": True,  # the free allowance goes to personal teams only
                "period_anchor": anchor,
                "created_at": anchor,
                "current_period_start": anchor,
                "current_period_end": anchor,  # due at sign-up: the bulk path grants the first period
            }
        )
    db.session.execute(insert(Team), rows)
    ids = list(db.session.scalars(select(Team.id).order_by(Team.id)))
    db.session.execute(insert(CreditBalance), [{"team_id": i, "balance": 0, "held": 0} for i in ids])
    db.session.commit()
    summary = scheduler.run_due_work(app, SIGN_UP + timedelta(days=28))
    assert (summary.teams_rolled_over, summary.plan_grants) == (TEAMS, TEAMS)
    return ids


def grant_due(project_root, database_url, **env: str) -> subprocess.Popen:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SCHEDULER_ENABLED": "false",
        "SECRET_KEY": "test",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "credits", "grant-due", "--now", NOW.isoformat()],
        cwd=project_root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rolled_over(output: str) -> int:
    match = re.search(r"(\d+) team\(s\) rolled over", output)
    return int(match.group(1)) if match else 0


def grants_per_team_and_period() -> dict[int, int]:
    """How many (team, period) pairs have 1, 2, … plan grants: exactly once is {1: every period}."""
    per_period = (
        select(func.count().label("grants"))
        .select_from(CreditBlock)
        .where(CreditBlock.source == "plan")
        .group_by(CreditBlock.team_id, CreditBlock.period_start)
        .subquery()
    )
    db.session.expire_all()
    counts = dict(db.session.execute(select(per_period.c.grants, func.count()).group_by(per_period.c.grants)).all())
    db.session.commit()
    return counts


def granted_in_march(connection) -> int:
    return connection.execute(
        text("SELECT count(*) FROM credit_blocks WHERE source = 'plan' AND period_start >= '2026-02-01'")
    ).scalar_one()


def assert_exactly_once() -> None:
    assert grants_per_team_and_period() == {1: 2 * TEAMS}, "one grant per team and period, two periods each"
    assert credits.verify() == []
    db.session.commit()
    due = db.session.scalar(select(func.count()).select_from(Team).where(Team.current_period_end <= NOW))
    assert due == 0


def test_two_grant_due_processes_at_once_grant_each_period_once(app, due_teams, project_root, database_url):
    first = grant_due(project_root, database_url)
    second = grant_due(project_root, database_url)
    outputs = [process.communicate(timeout=60) for process in (first, second)]

    assert [first.returncode, second.returncode] == [0, 0], outputs
    stdouts = [stdout for stdout, _ in outputs]
    assert sum(rolled_over(stdout) for stdout in stdouts) == TEAMS, stdouts
    assert_exactly_once()


def test_a_run_killed_midway_loses_nothing_and_the_rerun_grants_the_rest_once(
    app, due_teams, project_root, database_url
):
    watcher = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with watcher.connect() as connection:
        process = grant_due(project_root, database_url, SCHEDULER_BATCH_SIZE="5")
        deadline = time.monotonic() + 30
        granted = 0
        while time.monotonic() < deadline and granted < TEAMS // 4:
            time.sleep(0.01)
            granted = granted_in_march(connection)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        granted = granted_in_march(connection)
    watcher.dispose()

    assert process.returncode == -signal.SIGKILL
    assert 0 < granted < TEAMS, "killed midway"
    assert granted % 5 == 0, "only whole batches were committed"
    assert credits.verify() == [], "the killed batch left nothing half-written"
    db.session.commit()

    rerun = grant_due(project_root, database_url)
    stdout, stderr = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, stderr
    assert rolled_over(stdout) == TEAMS - granted
    assert_exactly_once()


def test_without_the_advisory_lock_row_locks_and_keys_still_grant_once(app, due_teams):
    """Two runs of the batches at once, lock bypassed: SKIP LOCKED, the re-checked due condition and
    the unique guards must keep it exactly once on their own."""
    totals, errors = [], []
    barrier = threading.Barrier(2)

    def run() -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=5)
                total, cursor = 0, 0
                while team_ids := credits.due_free_team_ids(NOW, after=cursor, limit=50):
                    cursor = team_ids[-1]
                    total += credits.roll_over_free_teams(team_ids, NOW).teams
                    db.session.commit()
                totals.append(total)
            except Exception as error:  # surfaced below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(totals) == TEAMS
    assert_exactly_once()
