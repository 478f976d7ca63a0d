"""The paid feature warns before it is refused and keeps the prompt; the 429 page says when to come back
and links back (same origin only); the admin confirms adjustments, keeps the form on error, pages the
team ledger, and sees each event's team and payload."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from starter import credits
from starter.extensions import db
from starter.models import LedgerEntry, Membership, StripeEvent, Team, User


@pytest.fixture
def owner(make_user, auth) -> User:  # type: ignore[no-untyped-def]
    user = make_user("owner@example.com", name="Olivia Owner")
    auth.login("owner@example.com")
    return user


@pytest.fixture
def admin(make_user, app):  # type: ignore[no-untyped-def]
    from tests.conftest import AuthActions

    make_user("root@example.com", name="Ada Admin", is_site_admin=True)
    actions = AuthActions(app.test_client())
    actions.login("root@example.com")
    return actions


def team_of(user: User) -> Team:
    return db.session.get(Team, user.current_team_id)


def count(team_id: int, kind: str | None = None) -> int:
    query = select(func.count()).select_from(LedgerEntry).where(LedgerEntry.team_id == team_id)
    return db.session.scalar(query.where(LedgerEntry.kind == kind) if kind else query)


# -- /generate ---------------------------------------------------------------------------------


def test_generate_explains_the_reservation_and_warns_before_a_run_that_cannot_be_covered(owner, auth):
    team = team_of(owner)
    page = auth.client.get("/generate").get_data(as_text=True)
    assert "reserves the most it can cost (10 credits), then charges what it used" in page
    assert 'data-testid="generate-short"' not in page  # 100 credits cover it

    credits.spend(team.id, 95, key="drain")
    db.session.commit()
    page = auth.client.get("/generate").get_data(as_text=True)
    warning = page.split('data-testid="generate-short"', 1)[1].split("</div>", 1)[0]
    assert "5 credits available and a run reserves 10" in warning
    topup = page.split('data-testid="generate-topup"', 1)[1].split("</p>", 1)[0]
    assert 'data-dialog-open="buy-credits"' in topup and "Upgrade to" in topup
    assert 'id="buy-credits"' in page  # bought in place, from the dialog


def test_a_member_who_cannot_buy_is_told_who_can(owner, make_user, app):
    from tests.conftest import AuthActions

    team = team_of(owner)
    member = make_user("member@example.com")
    db.session.add(Membership(team_id=team.id, user_id=member.id, role="member"))
    member.current_team_id = team.id
    credits.spend(team.id, 95, key="drain")
    db.session.commit()
    actions = AuthActions(app.test_client())
    actions.login("member@example.com")
    actions.post("/teams/switch", {"team_id": str(team.id)}, token_from="/dashboard")
    page = actions.client.get("/generate").get_data(as_text=True)
    assert "Ask an owner or admin" in page and 'data-dialog-open="buy-credits"' not in page


def test_a_402_keeps_the_prompt_and_the_same_form_runs_once_topped_up(owner, auth):
    team = team_of(owner)
    credits.spend(team.id, 95, key="drain")
    db.session.commit()
    form = {"prompt": "A tagline <for> a night bakery", "idempotency_key": "run-1"}
    refused = auth.post("/generate", form, token_from="/generate")
    page = refused.get_data(as_text=True)
    assert refused.status_code == 402
    assert "A tagline &lt;for&gt; a night bakery</textarea>" in page
    assert 'name="idempotency_key" type="hidden" value="run-1"' in page
    assert count(team.id, "hold") == 0

    credits.grant(team.id, 50, source="promo", key="topup")
    db.session.commit()
    ran = auth.post("/generate", form, token_from="/generate")
    assert ran.status_code == 200 and 'data-testid="output"' in ran.get_data(as_text=True)
    assert count(team.id, "capture") == 1


# -- 429 ---------------------------------------------------------------------------------------


THREE_PER_MINUTE = pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": "3 per minute"}], ids=["limit-3"])


def limited_login(auth, referrer: str | None):  # type: ignore[no-untyped-def]
    headers = {"Referer": referrer} if referrer else {}
    for _ in range(3):
        auth.post("/auth/login", {"email": "a@example.com", "password": "wrong-pass-1"}, token_from="/auth/login")
    return auth.post(
        "/auth/login", {"email": "a@example.com", "password": "x"}, token_from="/auth/login", headers=headers
    )


@THREE_PER_MINUTE
def test_the_429_page_says_when_to_try_again_and_links_back_to_where_the_user_was(auth):
    response = limited_login(auth, "http://localhost/auth/login?next=/credits/history")
    page = response.get_data(as_text=True)
    seconds = int(response.headers["Retry-After"])
    assert response.status_code == 429 and 0 < seconds <= 60
    assert re.search(r"Try again in \d+ seconds?\.", page)
    assert 'data-testid="retry-at">You can try again from <time datetime=' in page
    assert 'href="/auth/login?next=/credits/history" data-testid="retry-back"' in page


@THREE_PER_MINUTE
@pytest.mark.parametrize(
    "referrer", ["https://evil.example/phish", "http://localhost.evil.example/x", "javascript:alert(1)", None]
)
def test_the_429_page_never_links_to_another_origin(auth, referrer):
    response = limited_login(auth, referrer)
    page = response.get_data(as_text=True)
    assert response.status_code == 429
    assert "evil" not in page and "javascript:" not in page
    assert 'data-testid="retry-back"' not in page  # a POST: nothing safe to go back to


# -- admin -------------------------------------------------------------------------------------


def adjust(admin, team: Team, **form: str):  # type: ignore[no-untyped-def]
    return admin.post(f"/admin/teams/{team.id}/adjust", form, token_from=f"/admin/teams/{team.id}")


def test_an_adjustment_is_confirmed_on_the_server_before_it_is_applied_once(owner, admin):
    team = team_of(owner)
    form = {"amount": "40", "description": "Goodwill credits", "reason": "ticket 12", "idempotency_key": "adj-1"}
    review = adjust(admin, team, **form)
    page = review.get_data(as_text=True)
    assert review.status_code == 200 and count(team.id, "adjustment") == 0
    summary = page.split('data-testid="adjust-summary"', 1)[1].split("</dl>", 1)[0]
    assert "<dd>100</dd>" in summary and "<strong>140</strong>" in summary
    assert "Goodwill credits" in summary and "ticket 12" in summary
    assert 'name="confirmed" type="hidden" value="yes"' in page

    edit = adjust(admin, team, **form, confirmed="yes", edit="1")  # "Change it": back to the form, values kept
    assert edit.status_code == 200 and 'value="Goodwill credits"' in edit.get_data(as_text=True)
    assert count(team.id, "adjustment") == 0

    for _ in range(2):  # a double click on Confirm applies it once
        assert adjust(admin, team, **form, confirmed="yes").status_code == 302
    assert count(team.id, "adjustment") == 1 and credits.balance(team.id).available == 140


def test_a_bad_adjustment_comes_back_with_its_values_and_changes_nothing(owner, admin):
    team = team_of(owner)
    response = adjust(admin, team, amount="abc", description="Sorry", reason="ticket 7", idempotency_key="k")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'value="Sorry"' in page and 'value="ticket 7"' in page and 'value="abc"' in page
    assert 'aria-invalid="true"' in page

    too_much = adjust(admin, team, amount="-500", reason="oops", idempotency_key="k2", confirmed="yes")
    assert too_much.status_code == 400 and "has 100 credits available" in too_much.get_data(as_text=True)
    missing_reason = adjust(admin, team, amount="5", description="Gift", idempotency_key="k3", confirmed="yes")
    assert missing_reason.status_code == 400 and 'value="Gift"' in missing_reason.get_data(as_text=True)
    assert count(team.id, "adjustment") == 0 and credits.balance(team.id).available == 100


def test_the_admin_team_ledger_is_paginated_and_shows_the_internal_reason(owner, admin):
    team = team_of(owner)
    credits.adjust(team.id, 5, reason="ticket 99", description="Goodwill", key="a1")
    for n in range(55):
        credits.spend(team.id, 1, key=f"s{n}")
    db.session.commit()
    first = admin.client.get(f"/admin/teams/{team.id}").get_data(as_text=True)
    assert first.count('<tr data-kind="used">') == 50
    next_link = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = admin.client.get(next_link).get_data(as_text=True)
    assert second.count('<tr data-kind="used">') == 5 and "reason=ticket 99" in second
    assert admin.client.get(f"/admin/teams/{team.id}?after=garbage").status_code == 400


def test_events_show_their_team_and_payload(owner, admin):
    team = team_of(owner)
    team.stripe_customer_id = "cus_events"
    db.session.add_all(
        [
            StripeEvent(
                id="evt_1",
                type="invoice.paid",
                stripe_created=1,
                payload={"data": {"object": {"object": "invoice", "customer": "cus_events", "total": 1900}}},
            ),
            StripeEvent(
                id="evt_2",
                type="checkout.session.completed",
                stripe_created=2,
                payload={"data": {"object": {"object": "checkout.session", "metadata": {"team_id": str(team.id)}}}},
            ),
            StripeEvent(id="evt_3", type="ping", stripe_created=3, payload={"data": {"object": "odd"}}),
        ]
    )
    db.session.commit()
    page = admin.client.get("/admin/events").get_data(as_text=True)
    cells = page.split('data-testid="event-team">')[1:]
    linked = [cell.split("</td>", 1)[0] for cell in cells]
    assert sum(f'<a href="/admin/teams/{team.id}">' in cell for cell in linked) == 2
    assert sum("—" in cell for cell in linked) == 1
    assert "&#34;total&#34;: 1900" in page or "&quot;total&quot;: 1900" in page
