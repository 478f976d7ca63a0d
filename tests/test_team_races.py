"""Role changes racing each other, with real threads on PostgreSQL: a team always keeps an owner."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from starter import teams
from starter.extensions import db
from starter.models import Membership


@pytest.fixture
def two_owners(fast_user, make_team):  # type: ignore[no-untyped-def]
    """Olivia and Oscar both own Acme."""
    olivia = fast_user("olivia@example.com")
    oscar = fast_user("oscar@example.com")
    team = make_team(olivia, "Acme", members=[(oscar, "owner")])
    return team.id, olivia.id, oscar.id


def membership_id(team_id: int, user_id: int) -> int:
    return db.session.scalar(select(Membership.id).filter_by(team_id=team_id, user_id=user_id))


def owners(team_id: int) -> list[int]:
    db.session.expire_all()
    return list(db.session.scalars(select(Membership.user_id).filter_by(team_id=team_id, role="owner")))


def at_once(app, change, pairs):  # type: ignore[no-untyped-def]
    """Each (actor, target) pair in its own thread and transaction; all load their rows, then all change.

    The barrier lets every thread read before any writes. Once the service locks, the second thread
    waits inside ``change`` for the first to commit, so the barrier times out and it goes on alone.
    """
    barrier = threading.Barrier(len(pairs))

    def run(pair):  # type: ignore[no-untyped-def]
        actor_id, target_id = pair
        with app.app_context():
            try:
                actor, target = db.session.get(Membership, actor_id), db.session.get(Membership, target_id)
                assert actor is not None and target is not None
                try:
                    barrier.wait(timeout=2)
                except threading.BrokenBarrierError:
                    pass
                change(actor, target)
                try:
                    barrier.wait(timeout=1)  # both have changed (unlocked code) before either commits
                except threading.BrokenBarrierError:
                    pass
                db.session.commit()
                return "done"
            except teams.TeamError as error:
                db.session.rollback()
                return str(error)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(run, pairs))


@pytest.mark.postgres
def test_two_owners_demoting_each_other_at_once_leave_one_owner(app, two_owners):
    team_id, olivia, oscar = two_owners
    a, b = membership_id(team_id, olivia), membership_id(team_id, oscar)

    results = at_once(app, lambda actor, target: teams.change_role(actor, target, "admin"), [(a, b), (b, a)])

    assert results.count("done") == 1, results
    assert len(owners(team_id)) == 1


@pytest.mark.postgres
def test_two_owners_removing_each_other_at_once_leave_one_owner(app, two_owners):
    team_id, olivia, oscar = two_owners
    a, b = membership_id(team_id, olivia), membership_id(team_id, oscar)

    results = at_once(app, teams.remove_member, [(a, b), (b, a)])

    assert results.count("done") == 1, results
    assert len(owners(team_id)) == 1
