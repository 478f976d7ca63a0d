"""The product pages: dashboard warnings, the example paid feature, history filters and CSV, the admin area."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from starter import credits
from starter.billing import webhooks
from starter.extensions import db
from starter.models import LedgerEntry, StripeEvent, Team, User


def entries(team_id: int, kind: str | None = None) -> int:
    query = select(func.count()).select_from(LedgerEntry).where(LedgerEntry.team_id == team_id)
    if kind:
        query = query.where(LedgerEntry.kind == kind)
    return db.session.scalar(query)


@pytest.fixture
def owner(make_user, auth) -> User:  # type: ignore[no-untyped-def]
    user = make_user("owner@example.com", name="Olivia Owner")
    auth.login("owner@example.com")
    return user


def team_of(user: User) -> Team:
    return db.session.get(Team, user.current_team_id)


# -- dashboard ---------------------------------------------------------------------------------


def test_dashboard_shows_plan_credits_their_reset_and_a_low_balance_warning(owner, auth, app):
    page = auth.client.get("/dashboard").get_data(as_text=True)
    assert 'data-testid="plan-credits">100<' in page
    assert "Used 0 of 100 · resets on" in page
    assert "Your balance is low" not in page  # 100 is above the default threshold of 50

    app.config["LOW_BALANCE_THRESHOLD"] = 150
    page = auth.client.get("/dashboard").get_data(as_text=True)
    assert "Your balance is low: 100 credits left" in page
    assert 'id="buy-credits"' in page  # the purchase dialog is on the page


def test_a_past_due_team_sees_the_banner(owner, auth):
    team = team_of(owner)
    team.subscription_status = "past_due"
    db.session.commit()
    assert "Your last payment failed" in auth.client.get("/dashboard").get_data(as_text=True)


# -- the example paid feature ------------------------------------------------------------------


def generate(auth, prompt: str, key: str):  # type: ignore[no-untyped-def]
    return auth.post("/generate", {"prompt": prompt, "idempotency_key": key}, token_from="/generate")


def test_generation_reserves_then_charges_what_it_used_and_a_double_submit_charges_once(owner, auth):
    team = team_of(owner)
    first = generate(auth, "A tagline for a night bakery", "key-1")
    assert first.status_code == 200
    assert 'data-testid="output"' in first.get_data(as_text=True)
    after_one = credits.balance(team.id).available
    assert 90 <= after_one < 100
    again = generate(auth, "A tagline for a night bakery", "key-1")
    assert "you were charged once" in again.get_data(as_text=True)
    assert credits.balance(team.id).available == after_one
    assert entries(team.id, "capture") == 1
    assert credits.verify() == []


def test_not_enough_credits_is_a_friendly_402_with_the_purchase_dialog(owner, auth):
    team = team_of(owner)
    credits.spend(team.id, 95, key="drain")
    db.session.commit()
    response = generate(auth, "anything", "key-2")
    page = response.get_data(as_text=True)
    assert response.status_code == 402
    assert "Not enough credits: nothing was charged" in page and "A run reserves 10 credits" in page
    assert "anything</textarea>" in page  # the prompt is kept
    assert 'id="buy-credits"' in page
    assert credits.balance(team.id).available == 5 and entries(team.id, "hold") == 0


@pytest.mark.parametrize("data", [{"prompt": ""}, {"prompt": "x" * 2001}])
def test_bad_generation_input_changes_nothing(owner, auth, data):
    team = team_of(owner)
    before = entries(team.id)
    data.setdefault("idempotency_key", "key-3")
    response = auth.post("/generate", data, token_from="/generate")
    assert response.status_code == 200 and "Result" not in response.get_data(as_text=True)
    assert entries(team.id) == before


# -- history -----------------------------------------------------------------------------------


def test_history_filters_by_kind_and_feature_and_refuses_bad_filters(owner, auth):
    team = team_of(owner)
    credits.spend(team.id, 3, key="s1", feature="export_pdf")
    credits.spend(team.id, 4, key="s2", description="Tokens")
    db.session.commit()
    page = auth.client.get("/credits/history?kind=spend&feature=export_pdf").get_data(as_text=True)
    assert "PDF export" in page and "Tokens" not in page and "Free plan credits" not in page
    all_rows = auth.client.get("/credits/history").get_data(as_text=True)
    assert "Tokens" in all_rows and "Free plan credits" in all_rows
    for bad in ("kind=teleport", "feature=nope", "since=yesterday", "after=not-a-cursor"):
        assert auth.client.get(f"/credits/history?{bad}").status_code == 400, bad


def test_history_pages_with_a_cursor(owner, auth):
    team = team_of(owner)
    for n in range(55):
        credits.spend(team.id, 1, key=f"s{n}")
    db.session.commit()
    first = auth.client.get("/credits/history").get_data(as_text=True)
    assert first.count('<tr data-kind="used">') == 50
    next_link = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = auth.client.get(next_link).get_data(as_text=True)
    assert second.count('<tr data-kind="used">') == 5
    assert "Free plan credits" in second


def test_csv_export_streams_the_filtered_entries_and_defuses_formulas(owner, auth):
    team = team_of(owner)
    credits.spend(team.id, 2, key="s1", description="=HYPERLINK(evil)")
    db.session.commit()
    response = auth.client.get("/credits/history.csv?kind=spend")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:3] == ["id", "created_at", "kind"]
    assert len(rows) == 2 and rows[1][2] == "spend" and rows[1][5] == "-2"
    assert rows[1][3] == "'=HYPERLINK(evil)"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r", "\n"], ids=repr)
def test_csv_export_defuses_every_formula_start(owner, auth, start):
    team = team_of(owner)
    credits.spend(team.id, 2, key="s1", description=f"{start}cmd|' /C calc'!A0")
    db.session.commit()

    response = auth.client.get("/credits/history.csv?kind=spend")

    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[1][3] == f"'{start}cmd|' /C calc'!A0"


def test_another_teams_history_is_never_shown(owner, auth, make_user):
    stranger = make_user("stranger@example.com")
    credits.spend(stranger.current_team_id, 1, key="x", description="Stranger's secret")
    db.session.commit()
    assert "Stranger's secret" not in auth.client.get("/credits/history").get_data(as_text=True)
    assert "Stranger" not in auth.client.get("/credits/history.csv").get_data(as_text=True)


# -- admin -------------------------------------------------------------------------------------


@pytest.fixture
def admin(make_user, app):  # type: ignore[no-untyped-def]
    from tests.conftest import AuthActions

    make_user("root@example.com", name="Ada Admin", is_site_admin=True)
    actions = AuthActions(app.test_client())
    actions.login("root@example.com")
    return actions


def test_the_admin_area_is_a_404_for_everyone_else(owner, auth):
    team = team_of(owner)
    for path in ("/admin", f"/admin/teams/{team.id}", "/admin/events"):
        assert auth.client.get(path).status_code == 404
    assert auth.post(f"/admin/teams/{team.id}/adjust", {"amount": "5", "reason": "x"}).status_code == 404


def test_an_admin_finds_a_team_by_member_email_and_adjusts_with_a_reason(owner, admin):
    team = team_of(owner)
    listing = admin.client.get("/admin?q=OWNER@example").get_data(as_text=True)
    assert f"/admin/teams/{team.id}" in listing
    assert admin.client.get("/admin?q=nobody-matches").get_data(as_text=True).count("/admin/teams/") == 0
    form = {
        "amount": "-30",
        "reason": "duplicate job",
        "description": "Duplicate run refunded",
        "idempotency_key": "k1",
    }
    review = admin.post(f"/admin/teams/{team.id}/adjust", form, token_from=f"/admin/teams/{team.id}")
    assert review.status_code == 200 and "Take 30 credits from" in review.get_data(as_text=True)
    assert entries(team.id, "adjustment") == 0  # only shown back for confirmation
    response = admin.post(
        f"/admin/teams/{team.id}/adjust", {**form, "confirmed": "yes"}, token_from=f"/admin/teams/{team.id}"
    )
    assert response.status_code == 302
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == "adjustment"))
    assert (entry.amount, entry.actor_type, entry.description) == (-30, "admin", "Duplicate run refunded")
    assert entry.meta["reason"] == "duplicate job"
    assert db.session.get(User, entry.actor_user_id).email == "root@example.com"
    assert "Ada Admin" in admin.client.get(f"/admin/teams/{team.id}").get_data(as_text=True)


@pytest.mark.parametrize("amount", ["0", "abc", "1.5", "", "-1000"])
def test_bad_adjustments_change_nothing(owner, admin, amount):
    team = team_of(owner)
    before = entries(team.id)
    admin.post(
        f"/admin/teams/{team.id}/adjust",
        {"amount": amount, "reason": "x", "idempotency_key": "k", "confirmed": "yes"},
        token_from=f"/admin/teams/{team.id}",
    )
    assert entries(team.id) == before and credits.balance(team.id).available == 100


def test_admin_sees_events_and_replays_a_failed_one(owner, admin, app):
    import json
    import time

    import stripe

    from starter.models import CreditBalance

    team = team_of(owner)
    team.stripe_customer_id = "cus_admin"
    db.session.commit()
    session = {
        "id": "cs_admin",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "amount_total": 500,
        "currency": "usd",
        "customer": "cus_admin",
        "payment_intent": "pi_admin",
        "metadata": {"team_id": str(team.id), "kind": "pack", "code": "small"},
    }
    event = {
        "id": "evt_admin",
        "object": "event",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "api_version": stripe.api_version,
        "data": {"object": session},
    }
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(
        payload, app.config["STRIPE_WEBHOOK_SECRET"], timestamp=int(time.time())
    )
    balance_row = db.session.get(CreditBalance, team.id)
    db.session.delete(balance_row)  # processing will fail: the team has no credit account
    db.session.commit()
    assert webhooks.receive(payload.encode(), header)[0] == 500
    assert "failed" in admin.client.get("/admin/events").get_data(as_text=True)

    credits.open_account(team)
    db.session.commit()
    response = admin.post("/admin/events/evt_admin/replay", token_from="/admin/events")
    assert response.status_code == 302
    assert db.session.get(StripeEvent, "evt_admin").processed_at is not None
    assert credits.balance(team.id).purchased == 500
    admin.post("/admin/events/evt_admin/replay", token_from="/admin/events")  # processed: a no-op
    assert credits.balance(team.id).purchased == 500
    assert admin.post("/admin/events/evt_nope/replay", token_from="/admin/events").status_code == 404


@pytest.mark.parametrize(
    "query",
    ["until=9999-12-31", "since=0001-01-01&until=9999-12-31"],
)
def test_extreme_dates_are_just_open_bounds(owner, auth, query):
    assert auth.client.get(f"/credits/history?{query}").status_code == 200


@pytest.mark.parametrize(
    "after", ["2024-01-01T00:00:00_5", "1.99999999999999999999", "999999999999999999.1", "x.y", "1.2.3"]
)
def test_hand_made_cursors_are_a_400_not_a_500(owner, auth, after):
    assert auth.client.get(f"/credits/history?after={after}").status_code == 400


def test_huge_ids_in_urls_and_forms_are_not_found(owner, auth, admin):
    huge = str(2**63)
    for path in (
        f"/team/members/{huge}/remove",
        f"/team/members/{huge}/role",
        f"/team/invitations/{huge}/revoke",
        f"/team/api-keys/{huge}/revoke",
    ):
        assert auth.post(path, {"role": "member"}, token_from="/team/members").status_code == 404, path
    assert auth.post("/team/switch", {"team_id": huge}, token_from="/dashboard").status_code == 400
    assert admin.client.get(f"/admin/teams/{huge}").status_code == 404
