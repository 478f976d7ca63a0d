"""Spend limits per API key (monthly or daily) and per member (monthly), enforced under the team's lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from starter import api_keys, credits
from starter.credits import limits
from starter.extensions import db
from starter.models import ApiKey, LedgerEntry, Membership, OutboxMessage

from .factories import ledger_team
from .test_api import Api, error_of
from .test_credits_concurrency import race


@pytest.fixture
def team(app) -> int:
    team = ledger_team("acme")
    credits.grant(team.id, 5_000, source="purchase", key="pack")
    db.session.commit()
    return team.id


def capped_key(team_id: int, limit: int, period: str = "month") -> tuple[ApiKey, str]:
    key, raw = api_keys.create(team_id, "capped", spend_limit=limit, limit_period=period)
    db.session.commit()
    return key, raw


def balance(team_id: int) -> int:
    return credits.balance(team_id).available


def test_a_key_capped_at_500_a_month_gets_403_with_limit_used_and_reset(app, client, team):
    _, raw = capped_key(team, 500)
    api = Api(client, raw)
    for n in range(5):
        assert api.post("/spend", {"amount": 100}, headers={"Idempotency-Key": f"s{n}"}).status_code == 201
    before = balance(team)

    error = error_of(api.post("/spend", {"amount": 1}, headers={"Idempotency-Key": "over"}), 403)

    assert error["code"] == "spend_limit_reached"
    assert (error["limit"], error["used"], error["required"], error["period"]) == (500, 500, 1, "month")
    now = datetime.now(UTC)
    next_month = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    assert error["resets_at"] == next_month.isoformat().replace("+00:00", "Z")
    assert balance(team) == before, "the refused spend changed nothing"
    assert api.post("/spend", {"amount": 100}, headers={"Idempotency-Key": "s0"}).status_code == 200, (
        "a replay of an earlier spend still answers"
    )


def test_holds_count_until_released_and_a_capture_counts_what_it_took(app, client, team):
    _, raw = capped_key(team, 100)
    api = Api(client, raw)
    hold = api.post("/holds", {"amount": 80}, headers={"Idempotency-Key": "h1"}).json
    assert error_of(api.post("/spend", {"amount": 30}, headers={"Idempotency-Key": "s1"}), 403)["used"] == 80
    api.post(f"/holds/{hold['id']}/capture", {"amount": 20}, headers={"Idempotency-Key": "c1"})
    assert api.post("/spend", {"amount": 80}, headers={"Idempotency-Key": "s2"}).status_code == 201  # 20 + 80
    assert error_of(api.post("/holds", {"amount": 1}, headers={"Idempotency-Key": "h2"}), 403)["used"] == 100


def test_other_keys_and_the_browser_are_not_held_to_a_keys_limit(app, client, team):
    _, capped = capped_key(team, 10)
    _, free = api_keys.create(team, "free")
    db.session.commit()
    assert Api(client, capped).post("/spend", {"amount": 10}, headers={"Idempotency-Key": "a"}).status_code == 201
    assert Api(client, free).post("/spend", {"amount": 300}, headers={"Idempotency-Key": "b"}).status_code == 201


def test_the_monthly_limit_resets_at_the_month_boundary(app, team):
    key, _ = capped_key(team, 50)
    actor = api_keys.actor_for(key.id, key.spend_limit, key.limit_period)
    last_second = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
    credits.spend(team, 50, key="jan", actor=actor, now=last_second)
    with pytest.raises(credits.SpendLimitReached) as refused:
        credits.spend(team, 1, key="jan-more", actor=actor, now=last_second)
    assert refused.value.resets_at == datetime(2026, 2, 1, tzinfo=UTC)
    db.session.rollback()
    credits.spend(team, 50, key="feb", actor=actor, now=datetime(2026, 2, 1, tzinfo=UTC))
    db.session.commit()


def test_a_daily_limit_resets_at_midnight_utc(app, team):
    key, _ = capped_key(team, 20, "day")
    actor = api_keys.actor_for(key.id, key.spend_limit, key.limit_period)
    evening = datetime(2026, 3, 10, 23, 0, tzinfo=UTC)
    credits.spend(team, 20, key="d1", actor=actor, now=evening)
    with pytest.raises(credits.SpendLimitReached):
        credits.spend(team, 1, key="d1b", actor=actor, now=evening + timedelta(minutes=59))
    db.session.rollback()
    credits.spend(team, 20, key="d2", actor=actor, now=datetime(2026, 3, 11, tzinfo=UTC))
    db.session.commit()


def test_a_spend_without_a_limit_costs_no_extra_statement(app, team, backend):
    """No statement for an actor without a limit; with one, the check is one statement (once the
    period's counter exists). On PostgreSQL a limited spend goes the general way (``credit_open``, the
    check, ``credit_write``) instead of the one ``credit_spend`` call of a plain spend."""
    from sqlalchemy import event

    key, _ = capped_key(team, 1_000)
    key_id = key.id
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if not statement.upper().startswith(("BEGIN", "PRAGMA", "COMMIT")):
            seen.append(" ".join(statement.split()))

    credits.spend(team, 1, key="opens", actor=api_keys.actor_for(key_id, 1_000, "month"))  # builds the counter
    db.session.commit()
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        credits.spend(team, 1, key="plain", actor=credits.Actor("api", None, api_key_id=key_id))
        db.session.commit()
        plain = list(seen)
        seen.clear()
        credits.spend(team, 1, key="capped", actor=api_keys.actor_for(key_id, 1_000, "month"))
        capped = list(seen)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    db.session.commit()
    checks = [s for s in capped if s.startswith("UPDATE spend_limit_usage")]
    assert len(checks) == 1, capped
    if backend == "postgresql":
        assert [s.split("(")[0] for s in plain] == ["SELECT * FROM credit_spend"], plain
        assert [s.split("(")[0] for s in capped if s not in checks] == [
            "SELECT * FROM credit_open",
            "SELECT * FROM credit_write",
        ], capped
    else:
        assert [s for s in capped if s not in checks] == plain, (plain, capped)


@pytest.mark.postgres
@pytest.mark.parametrize("app_config", [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}])
def test_16_concurrent_spends_never_pass_a_keys_limit(app, team):
    key, _ = capped_key(team, 50)
    actor = api_keys.actor_for(key.id, 50, "month")

    results = race(app, lambda n: credits.spend(team, 7, key=f"r{n}", actor=actor), [(n,) for n in range(16)], 16)

    passed = [r for r in results if isinstance(r, credits.Receipt)]
    refused = [r for r in results if isinstance(r, credits.SpendLimitReached)]
    assert len(passed) == 7 and len(refused) == 9
    assert limits.used(team, actor.limit, datetime.now(UTC)) == 49
    spent = db.session.scalar(select(func.sum(-LedgerEntry.amount)).where(LedgerEntry.api_key_id == key.id))
    assert spent == 49


@pytest.mark.postgres
@pytest.mark.parametrize("app_config", [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}])
def test_16_concurrent_holds_of_a_member_never_pass_their_limit(app, team, fast_user):
    user = fast_user("member@example.com")
    db.session.add(Membership(team_id=team, user_id=user.id, role="member", monthly_limit=40))
    db.session.commit()
    actor = credits.Actor("user", user.id, limit=credits.SpendLimit("member", user.id, 40))

    results = race(app, lambda n: credits.hold(team, 6, key=f"h{n}", actor=actor), [(n,) for n in range(16)], 16)

    assert len([r for r in results if isinstance(r, credits.HoldResult)]) == 6
    assert limits.used(team, actor.limit, datetime.now(UTC)) == 36


def test_the_cli_creates_a_key_with_a_monthly_limit(app, runner, team):
    result = runner.invoke(args=["api-keys", "create", "acme", "Batch jobs", "--monthly-limit", "500"])
    assert result.exit_code == 0, result.output
    assert "limit 500 credits per month" in result.output
    key = db.session.scalar(select(ApiKey).filter_by(name="Batch jobs"))
    assert (key.spend_limit, key.limit_period) == (500, "month")
    bad = runner.invoke(args=["api-keys", "create", "acme", "x", "--monthly-limit", "0"])
    assert bad.exit_code != 0 and db.session.scalar(select(func.count()).select_from(ApiKey)) == 1


# --- the web -----------------------------------------------------------------------------------------


def owner_and_member(fast_user, make_team):  # type: ignore[no-untyped-def]
    owner, member = fast_user("owner@example.com", name="Olive"), fast_user("member@example.com", name="Max")
    team = make_team(owner, "Acme", members=[(member, "member")])
    credits.grant(team.id, 1_000, source="purchase", key="pack")
    owner.current_team_id = member.current_team_id = team.id
    db.session.commit()
    return team, owner, member


def test_an_admin_caps_a_key_and_a_member_and_the_lists_show_used_over_limit(app, auth, fast_user, make_team):
    team, _owner, member = owner_and_member(fast_user, make_team)
    auth.login("owner@example.com")
    created = auth.post(
        "/team/api-keys",
        {"name": "Backend", "spend_limit": "500", "limit_period": "month"},
        token_from="/team/api-keys",
    )
    assert created.status_code == 303
    key = db.session.scalar(select(ApiKey).filter_by(team_id=team.id))
    assert key.spend_limit == 500
    credits.spend(team.id, 120, key="k", actor=api_keys.actor_for(key.id, 500, "month"))
    db.session.commit()
    page = auth.client.get("/team/api-keys").get_data(as_text=True)
    assert "120 / 500" in page

    assert (
        auth.post(
            f"/team/api-keys/{key.id}/limit", {"spend_limit": "50", "limit_period": "day"}, token_from="/team/api-keys"
        ).status_code
        == 302
    )
    db.session.refresh(key)
    assert (key.spend_limit, key.limit_period) == (50, "day")
    assert (
        auth.post(f"/team/api-keys/{key.id}/limit", {"spend_limit": "-3"}, token_from="/team/api-keys").status_code
        == 400
    )

    membership = db.session.scalar(select(Membership).filter_by(team_id=team.id, user_id=member.id))
    assert (
        auth.post(
            f"/team/members/{membership.id}/limit", {"monthly_limit": "25"}, token_from="/team/members"
        ).status_code
        == 302
    )
    db.session.refresh(membership)
    assert membership.monthly_limit == 25
    assert "0 / 25" in auth.client.get("/team/members").get_data(as_text=True)


def test_a_member_cannot_set_limits(app, auth, fast_user, make_team):
    team, _owner, member = owner_and_member(fast_user, make_team)
    membership = db.session.scalar(select(Membership).filter_by(team_id=team.id, user_id=member.id))
    auth.login("member@example.com")
    response = auth.post(f"/team/members/{membership.id}/limit", {"monthly_limit": "1000000"}, token_from="/dashboard")
    assert response.status_code in (403, 404)
    db.session.refresh(membership)
    assert membership.monthly_limit is None


def test_a_member_at_their_limit_sees_a_clear_page_and_is_not_charged(app, auth, fast_user, make_team, outbox):
    team, _owner, member = owner_and_member(fast_user, make_team)
    membership = db.session.scalar(select(Membership).filter_by(team_id=team.id, user_id=member.id))
    membership.monthly_limit = 5
    db.session.commit()
    auth.login("member@example.com")
    before = balance(team.id)

    response = auth.post("/generate", {"prompt": "hello", "idempotency_key": "g1"}, token_from="/generate")

    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "Spend limit reached" in page and "Nothing was charged" in page
    assert balance(team.id) == before
    subjects = sorted((m["To"], m["Subject"]) for m in outbox)
    assert subjects == [
        ("member@example.com", "Acme: Max reached its spend limit"),
        ("owner@example.com", "Acme: Max reached its spend limit"),
    ]
    auth.post("/generate", {"prompt": "again", "idempotency_key": "g2"}, token_from="/generate")
    assert len(outbox) == 2, "one limit email per person and period"
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 2


def test_another_teams_key_or_member_limit_is_a_404(app, auth, fast_user, make_team):
    team, _owner, member = owner_and_member(fast_user, make_team)
    other_owner = fast_user("other@example.com")
    other = make_team(other_owner, "Other")
    key, _ = api_keys.create(team.id, "Acme key")
    credits.spend(team.id, 3, key="k", actor=api_keys.actor_for(key.id, None, "month"))
    other_owner.current_team_id = other.id
    db.session.commit()
    membership = db.session.scalar(select(Membership).filter_by(team_id=team.id, user_id=member.id))
    auth.login("other@example.com")
    assert (
        auth.post(f"/team/api-keys/{key.id}/limit", {"spend_limit": "1"}, token_from="/team/api-keys").status_code
        == 404
    )
    assert (
        auth.post(
            f"/team/members/{membership.id}/limit", {"monthly_limit": "1"}, token_from="/team/members"
        ).status_code
        == 404
    )
    db.session.refresh(key)
    db.session.refresh(membership)
    assert key.spend_limit is None and membership.monthly_limit is None
    assert "Acme key" not in auth.client.get("/credits/usage?tz=UTC&group_by=api_key").get_data(as_text=True)
    auth.logout()
    auth.login("owner@example.com")
    assert "Acme key" in auth.client.get("/credits/usage?tz=UTC&group_by=api_key").get_data(as_text=True)


def test_an_admin_cannot_limit_an_owner(app, auth, fast_user, make_team):
    team, owner, member = owner_and_member(fast_user, make_team)
    admin = fast_user("admin@example.com")
    db.session.add(Membership(team_id=team.id, user_id=admin.id, role="admin"))
    admin.current_team_id = team.id
    db.session.commit()
    owner_membership = db.session.scalar(select(Membership).filter_by(team_id=team.id, user_id=owner.id))
    auth.login("admin@example.com")
    response = auth.post(
        f"/team/members/{owner_membership.id}/limit", {"monthly_limit": "1"}, token_from="/team/members"
    )
    assert response.status_code == 403
    db.session.refresh(owner_membership)
    assert owner_membership.monthly_limit is None
    member_membership = db.session.scalar(select(Membership).filter_by(team_id=team.id, user_id=member.id))
    ok = auth.post(f"/team/members/{member_membership.id}/limit", {"monthly_limit": "9"}, token_from="/team/members")
    assert ok.status_code == 302


def test_the_counter_follows_the_ledger_and_a_changed_limit_rebuilds_it(app, client, team):
    key, raw = api_keys.create(team, "later capped")
    db.session.commit()
    api = Api(client, raw)
    for n in range(3):  # 90 spent before the key had a limit: they count once it has one
        api.post("/spend", {"amount": 30}, headers={"Idempotency-Key": f"before{n}"})
    api_keys.set_limit(team, key.id, 100, "month")
    db.session.commit()
    api = Api(app.test_client(), raw)  # a new request loads the key with its limit
    assert error_of(api.post("/spend", {"amount": 11}, headers={"Idempotency-Key": "x"}), 403)["used"] == 90
    hold = api.post("/holds", {"amount": 10}, headers={"Idempotency-Key": "h"}).json
    api.post(f"/holds/{hold['id']}/capture", {"amount": 4}, headers={"Idempotency-Key": "c"})
    actor = api_keys.actor_for(key.id, 100, "month")
    assert limits.used(team, actor.limit, datetime.now(UTC)) == 94
    counter = db.session.execute(select(limits.usage_t.c.used)).scalar_one()
    assert counter == 94, "the counter equals the ledger's sum"
    api_keys.set_limit(team, key.id, 200, "day")
    db.session.commit()
    assert db.session.execute(select(func.count()).select_from(limits.usage_t)).scalar_one() == 0
    api = Api(app.test_client(), raw)
    assert api.post("/spend", {"amount": 106}, headers={"Idempotency-Key": "y"}).status_code == 201
    assert error_of(api.post("/spend", {"amount": 1}, headers={"Idempotency-Key": "z"}), 403)["used"] == 200


def test_a_members_limit_in_one_team_counts_only_that_teams_spends(app, fast_user, make_team):
    from starter import teams

    user = fast_user("both@example.com", name="Both")
    alpha, beta = make_team(user, "Alpha"), make_team(user, "Beta")
    for one in (alpha, beta):
        credits.grant(one.id, 10_000, source="purchase", key="pack")
    in_alpha = db.session.scalar(select(Membership).filter_by(team_id=alpha.id, user_id=user.id))
    in_beta = db.session.scalar(select(Membership).filter_by(team_id=beta.id, user_id=user.id))
    in_alpha.monthly_limit, in_beta.monthly_limit = 100, 1_000
    db.session.commit()

    credits.spend(alpha.id, 80, key="a1", actor=teams.actor_for(in_alpha))
    credits.spend(beta.id, 500, key="b1", actor=teams.actor_for(in_beta))
    db.session.commit()

    credits.spend(alpha.id, 20, key="a2", actor=teams.actor_for(in_alpha))  # 100 of Alpha's 100: fits
    db.session.commit()
    with pytest.raises(credits.SpendLimitReached) as refused:
        credits.spend(alpha.id, 1, key="a3", actor=teams.actor_for(in_alpha))
    db.session.rollback()
    assert refused.value.details()["used"] == 100
    assert limits.used(beta.id, teams.actor_for(in_beta).limit, datetime.now(UTC)) == 500
