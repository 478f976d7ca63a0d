"""Low-balance alerts: one email per crossing to owners and admins, re-armed above, out-of-credits, opt-out."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from starter import credits, scheduler
from starter.credits import limits
from starter.extensions import db
from starter.models import Membership, OutboxMessage

from .test_credits_concurrency import race


@pytest.fixture
def acme(app, fast_user, make_team):  # type: ignore[no-untyped-def]
    """Acme with an owner, an admin and a member, 120 purchased credits and the default threshold (50)."""
    owner = fast_user("owner@example.com", name="Olive")
    admin = fast_user("admin@example.com", name="Ada")
    member = fast_user("member@example.com", name="Max")
    team = make_team(owner, "Acme", members=[(admin, "admin"), (member, "member")])
    credits.grant(team.id, 120, source="purchase", key="pack")
    for user in (owner, admin, member):
        user.current_team_id = team.id
    db.session.commit()
    return team


def mails(outbox) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((message["To"], message["Subject"]) for message in outbox)


def spend(team_id: int, amount: int, key: str) -> None:
    credits.spend(team_id, amount, key=key)
    db.session.commit()


def test_crossing_the_threshold_emails_owners_and_admins_once(app, acme, outbox):
    spend(acme.id, 60, "a")  # 60 left: above 50
    assert outbox == []
    spend(acme.id, 20, "b")  # 40: crosses 50
    assert mails(outbox) == [
        ("admin@example.com", "Acme: credits below 50"),
        ("owner@example.com", "Acme: credits below 50"),
    ]
    spend(acme.id, 5, "c")  # still below: no new crossing
    assert len(outbox) == 2
    body = outbox[0].get_body(preferencelist=("plain",)).get_content()
    assert "35 credits left" in body or "40 credits left" in body


def test_rising_above_re_arms_the_alert(app, acme, outbox):
    spend(acme.id, 80, "a")  # 40
    credits.grant(acme.id, 100, source="promo", key="more")  # 140
    db.session.commit()
    spend(acme.id, 100, "b")  # 40 again: a second crossing
    assert len([m for m in outbox if m["To"] == "owner@example.com"]) == 2


def test_running_out_sends_the_out_of_credits_email(app, acme, outbox):
    spend(acme.id, 120, "all")  # crosses 50 and reaches 0 in one change: one email, the more urgent one
    assert mails(outbox) == [
        ("admin@example.com", "Acme is out of credits"),
        ("owner@example.com", "Acme is out of credits"),
    ]


def test_holds_cross_too_and_several_thresholds_each_count(app, acme, outbox):
    limits.set_thresholds(acme.id, [100, 30])
    db.session.commit()
    credits.hold(acme.id, 30, key="h")  # 90 available: below 100
    db.session.commit()
    spend(acme.id, 70, "s")  # 20: below 30
    subjects = [m["Subject"] for m in outbox if m["To"] == "owner@example.com"]
    assert subjects == ["Acme: credits below 100", "Acme: credits below 30"]


def test_a_rolled_back_change_sends_nothing(app, acme, outbox):
    credits.spend(acme.id, 100, key="x")
    db.session.rollback()
    assert outbox == []
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_each_person_can_turn_the_emails_off(app, acme, auth, outbox):
    auth.login("admin@example.com")
    page = auth.client.get("/team/alerts")
    assert page.status_code == 200
    assert auth.post("/team/alerts/emails", {}, token_from="/team/alerts").status_code == 302  # unchecked
    admin = db.session.scalar(
        select(Membership).join(Membership.user).filter(Membership.team_id == acme.id, Membership.role == "admin")
    )
    assert admin.alert_emails is False
    spend(acme.id, 80, "a")
    assert mails(outbox) == [("owner@example.com", "Acme: credits below 50")]


def test_admins_set_thresholds_members_cannot(app, acme, auth):
    auth.login("member@example.com")
    assert auth.post("/team/alerts/thresholds", {"thresholds": "5"}, token_from="/team/alerts").status_code == 403
    auth.logout()
    auth.login("owner@example.com")
    assert (
        auth.post("/team/alerts/thresholds", {"thresholds": "500, 100"}, token_from="/team/alerts").status_code == 302
    )
    assert limits.thresholds(acme.id) == [100, 500]
    for bad in ("abc", "1", "0", "-5", "1,2,3,4,5,6", "100000000000"):
        response = auth.post("/team/alerts/thresholds", {"thresholds": bad}, token_from="/team/alerts")
        assert response.status_code == 400, bad
    assert limits.thresholds(acme.id) == [100, 500]
    assert auth.post("/team/alerts/thresholds", {"thresholds": ""}, token_from="/team/alerts").status_code == 302
    assert limits.thresholds(acme.id) == []


def test_the_dashboard_shows_the_notice_below_a_threshold(app, acme, auth):
    auth.login("member@example.com")
    assert 'data-testid="low-balance"' not in auth.client.get("/dashboard").get_data(as_text=True)
    spend(acme.id, 80, "a")
    page = auth.client.get("/dashboard").get_data(as_text=True)
    assert 'data-testid="low-balance"' in page and "below the alert threshold of 50" in page


@pytest.mark.postgres
@pytest.mark.parametrize("app_config", [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}])
def test_16_concurrent_spends_send_one_email_per_crossing(app, acme, outbox):
    team_id = acme.id  # read here: acme is the test session's, expired by the commit; 16 threads must not load it
    results = race(app, lambda n: credits.spend(team_id, 5, key=f"r{n}"), [(n,) for n in range(16)], 16)
    assert all(isinstance(r, credits.Receipt) for r in results)  # 120 - 80 = 40: crossed 50 once
    assert mails(outbox) == [
        ("admin@example.com", "Acme: credits below 50"),
        ("owner@example.com", "Acme: credits below 50"),
    ]


def test_the_monthly_jobs_bulk_expiry_alerts_too(app, acme, outbox):
    from datetime import timedelta

    from starter.models import utcnow

    now = utcnow()
    credits.grant(acme.id, 500, source="promo", key="promo", expires_at=now + timedelta(hours=1))
    db.session.commit()
    assert outbox == []
    scheduler.run_due_work(app, now + timedelta(hours=2))  # 620 → 120: not below 50
    assert outbox == []
    limits.set_thresholds(acme.id, [200])
    credits.grant(acme.id, 100, source="promo", key="promo2", expires_at=now + timedelta(hours=3))  # 220
    db.session.commit()
    scheduler.run_due_work(app, now + timedelta(hours=4))  # 220 → 120: below 200
    assert mails(outbox) == [
        ("admin@example.com", "Acme: credits below 200"),
        ("owner@example.com", "Acme: credits below 200"),
    ]
