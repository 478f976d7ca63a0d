"""Auto-recharge against a real Stripe API (the local stand-in, through the official SDK).

A spend (web, API, capture) that crosses the threshold records one recharge; the job pays it
off-session with a key per attempt; only ``payment_intent.succeeded`` grants, once, in any order;
declines back off and turn auto-recharge off after three; 3-D Secure finishes on-session from
the emailed link; a refund claws the recharge back like a pack. See docs/billing.md.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from starter import api_keys, catalog, credits
from starter.billing import recharge_job, webhooks
from starter.extensions import db
from starter.models import AutoRecharge, AutoRechargeSettings, CreditBalance, LedgerEntry, Purchase, Team, utcnow
from tests import billing_fixtures
from tests.billing_fixtures import buy_pack, deliver, real_stripe_config
from tests.conftest import AuthActions
from tests.stripe_events import make_event, signed_request
from tests.stripe_factories import make_charge
from tests.stripe_standin import StripeStandIn
from tests.stripe_standin_payments import authenticate, make_payment_method
from tests.test_credits_concurrency import race

SMALL, MEDIUM = catalog.PACKS["small"], catalog.PACKS["medium"]
extra_config, owner, standin, team = (
    billing_fixtures.extra_config,
    billing_fixtures.owner,
    billing_fixtures.standin,
    billing_fixtures.team,
)


@pytest.fixture
def app_config(standin: StripeStandIn, extra_config: dict[str, object]) -> dict[str, object]:
    return {**real_stripe_config(standin), **extra_config}


def save_card(auth: AuthActions, standin: StripeStandIn, team: Team, last4: str = "4242") -> dict:
    """What Checkout with setup_future_usage does: the card is attached to the customer, Stripe says so."""
    method = standin.put(make_payment_method(db.session.get(Team, team.id).stripe_customer_id, last4))
    assert deliver(auth.client, make_event("payment_method.attached", method)).status_code == 200
    return method


def turn_on(auth: AuthActions, threshold: int = 2_000, pack: str = "small", cap: int = 50, enabled: bool = True):
    data = {"threshold": str(threshold), "pack_code": pack, "monthly_cap_dollars": str(cap)}
    if enabled:
        data["enabled"] = "y"
    return auth.post("/billing/auto-recharge", data, token_from="/billing/auto-recharge")


def ready(auth: AuthActions, standin: StripeStandIn, team: Team, last4: str = "4242", **settings: Any) -> None:
    """Medium pack bought (card saved), auto-recharge on with a threshold of 2,000 by default."""
    buy_pack(auth, standin, "medium")
    save_card(auth, standin, team, last4)
    assert turn_on(auth, **settings).status_code == 303


def spend(team: Team, amount: int, key: str) -> credits.Receipt:
    receipt = credits.spend(team.id, amount, key=key)
    db.session.commit()
    return receipt


def recharges(team: Team) -> list[AutoRecharge]:
    db.session.expire_all()
    return list(
        db.session.scalars(select(AutoRecharge).where(AutoRecharge.team_id == team.id).order_by(AutoRecharge.id))
    )


def available(team: Team) -> int:
    db.session.expire_all()
    return credits.balance(team.id).available


def succeeded_event(standin: StripeStandIn, recharge: AutoRecharge) -> dict:
    return make_event("payment_intent.succeeded", standin.get(recharge.payment_intent_id))


# -- the card and the settings -----------------------------------------------------------------------


def test_a_pack_checkout_saves_the_card_and_the_page_shows_it(auth, standin, team) -> None:
    buy_pack(auth, standin, "medium")
    sent = standin.last("POST", "/v1/checkout/sessions").params
    assert sent["payment_intent_data"]["setup_future_usage"] == "off_session"

    page = auth.client.get("/billing/auto-recharge").get_data(as_text=True)
    assert "No card saved yet" in page
    save_card(auth, standin, team, "4242")
    page = auth.client.get("/billing/auto-recharge").get_data(as_text=True)
    assert "ending in <strong>4242</strong>" in page


def test_the_newest_card_stays_on_file_whatever_order_the_events_come_in_and_removal_turns_it_off(
    auth, standin, team
) -> None:
    buy_pack(auth, standin, "medium")
    customer = db.session.get(Team, team.id).stripe_customer_id
    older = standin.put(make_payment_method(customer, "0341", created=1_700_000_000))
    newer = standin.put(make_payment_method(customer, "4242", created=1_700_000_100))
    deliver(auth.client, make_event("payment_method.attached", newer))
    deliver(auth.client, make_event("payment_method.attached", older))  # a late retry of an older event
    db.session.expire_all()
    assert db.session.get(AutoRechargeSettings, team.id).payment_method_id == newer["id"]
    assert turn_on(auth).status_code == 303

    detached = {**newer, "customer": None}
    assert deliver(auth.client, make_event("payment_method.detached", detached)).status_code == 200
    db.session.expire_all()
    settings = db.session.get(AutoRechargeSettings, team.id)
    assert (settings.payment_method_id, settings.enabled) == (None, False)
    assert settings.disabled_reason == "the card on file was removed"


def test_replace_card_starts_checkout_in_setup_mode(auth, standin, team) -> None:
    buy_pack(auth, standin, "medium")
    response = auth.post("/billing/auto-recharge/card", {"attempt": "k1"}, token_from="/billing/auto-recharge")
    assert response.status_code == 303 and response.headers["Location"].startswith(standin.url)
    sent = standin.last("POST", "/v1/checkout/sessions")
    assert sent.params["mode"] == "setup"
    assert sent.params["customer"] == db.session.get(Team, team.id).stripe_customer_id
    assert sent.header("Idempotency-Key") == f"checkout:{team.id}:setup:k1"
    session = standin.complete_checkout(response.headers["Location"].rsplit("/", 1)[1], "no_payment_required")
    assert deliver(auth.client, make_event("checkout.session.completed", session)).status_code == 200
    method = save_card(auth, standin, team, "3155")
    db.session.expire_all()
    assert db.session.get(AutoRechargeSettings, team.id).payment_method_id == method["id"]
    assert available(team) == catalog.FREE_PLAN.monthly_credits + MEDIUM.total_credits  # setting up grants nothing


def test_turning_it_on_needs_a_card_and_changes_nothing_without_one(auth, standin, team) -> None:
    buy_pack(auth, standin, "medium")
    response = turn_on(auth)
    assert response.status_code == 422
    assert "Save a card first" in response.get_data(as_text=True)
    settings = db.session.get(AutoRechargeSettings, team.id)
    assert settings is None or not settings.enabled
    assert db.session.get(CreditBalance, team.id).recharge_below is None


@pytest.mark.parametrize(
    "data",
    [
        {"threshold": "-1", "pack_code": "small", "monthly_cap_dollars": "50", "enabled": "y"},
        {"threshold": "ten", "pack_code": "small", "monthly_cap_dollars": "50", "enabled": "y"},
        {"threshold": "100", "pack_code": "nope", "monthly_cap_dollars": "50", "enabled": "y"},
        {"threshold": "100", "pack_code": "small", "monthly_cap_dollars": "99999999999", "enabled": "y"},
        {"threshold": "100", "pack_code": "small", "monthly_cap_dollars": "1", "enabled": "y"},  # under one pack
    ],
)
def test_bad_settings_are_a_clear_4xx_and_change_nothing(auth, standin, team, data) -> None:
    buy_pack(auth, standin, "medium")
    save_card(auth, standin, team)
    response = auth.post("/billing/auto-recharge", data, token_from="/billing/auto-recharge")
    assert response.status_code == 422
    assert not db.session.get(AutoRechargeSettings, team.id).enabled
    assert db.session.get(CreditBalance, team.id).recharge_below is None


def test_members_cannot_see_or_change_it_and_other_teams_get_404(app, auth, standin, team, make_user) -> None:
    from tests.test_billing import login_member

    ready(auth, standin, team, last4="3184")
    spend(team, 400, "cross")
    recharge_job.pay_due()
    recharge = recharges(team)[0]
    member = login_member(app, make_user, team)
    assert member.client.get("/billing/auto-recharge").status_code == 403
    assert member.client.get("/billing/receipts").status_code == 403
    stranger = make_user("stranger@example.com")
    other = AuthActions(app.test_client())
    other.login(stranger.email)
    assert other.client.get(f"/billing/auto-recharge/confirm/{recharge.id}").status_code == 404
    purchase = db.session.scalar(select(Purchase).where(Purchase.team_id == team.id))
    assert other.client.get(f"/billing/receipts/pack/{purchase.id}?view=here").status_code == 404


# -- crossings: web, API and capture ----------------------------------------------------------------------


def _cross_by_api(app, auth, team) -> None:
    _key, raw = api_keys.create(team.id, "test")
    db.session.commit()
    response = app.test_client().post(
        "/api/v1/spend", json={"amount": 400}, headers={"Authorization": f"Bearer {raw}", "Idempotency-Key": "api-1"}
    )
    assert response.status_code == 201, response.get_json()


def _cross_by_capture(app, auth, team) -> None:
    _key, raw = api_keys.create(team.id, "test")
    db.session.commit()
    headers = {"Authorization": f"Bearer {raw}"}
    client = app.test_client()
    hold = client.post("/api/v1/holds", json={"amount": 500}, headers={**headers, "Idempotency-Key": "h1"})
    assert hold.status_code == 201, hold.get_json()
    assert recharges(team) == [], "a hold spends nothing: no crossing yet"
    captured = client.post(
        f"/api/v1/holds/{hold.get_json()['id']}/capture",
        json={"amount": 400},
        headers={**headers, "Idempotency-Key": "c1"},
    )
    assert captured.status_code == 200, captured.get_json()


def _cross_by_web(app, auth, team) -> None:
    spend(team, 2_300 - 2_004, "to-2004")  # 100 free + 2,200 pack = 2,300; this prompt costs 5
    response = auth.post("/generate", {"prompt": "a haiku", "idempotency_key": "gen-1"}, token_from="/generate")
    assert response.status_code in (200, 303), response.get_data(as_text=True)


@pytest.mark.parametrize("cross", [_cross_by_web, _cross_by_api, _cross_by_capture], ids=["web", "api", "capture"])
def test_a_crossing_from_each_path_records_one_recharge(app, auth, standin, team, cross) -> None:
    ready(auth, standin, team)
    cross(app, auth, team)
    found = recharges(team)
    assert [(r.status, r.credits, r.amount_cents) for r in found] == [("due", SMALL.total_credits, SMALL.price_cents)]
    spend(team, 5, "below-again")  # still below: the same crossing, no second recharge
    assert len(recharges(team)) == 1


def test_a_new_crossing_while_one_is_in_flight_records_no_second(auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross-1")
    credits.grant(team.id, 1_000, source="promo", key="promo")  # back above the threshold, recharge still due
    db.session.commit()
    spend(team, 1_000, "cross-2")  # a second crossing: the database's one-in-flight guard says no
    assert [r.status for r in recharges(team)] == ["due"]


@pytest.mark.parametrize("extra_config", [{"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": 1}])
def test_a_mail_server_that_is_down_never_blocks_the_grant(auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    recharge_job.pay_due()
    before = available(team)
    assert deliver(auth.client, succeeded_event(standin, recharges(team)[0])).status_code == 200
    assert available(team) == before + SMALL.total_credits


def test_the_recharge_is_paid_off_session_and_granted_once_by_the_webhook(auth, standin, team, outbox) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    before = available(team)

    result = recharge_job.pay_due()

    assert (result.claimed, result.charged) == (1, 1)
    request = standin.last("POST", "/v1/payment_intents")
    recharge = recharges(team)[0]
    assert request.header("Idempotency-Key") == f"auto-recharge:{recharge.id}:1"
    assert request.params["off_session"] == "true" and request.params["confirm"] == "true"
    assert request.params["payment_method"] == db.session.get(AutoRechargeSettings, team.id).payment_method_id
    assert (recharge.status, available(team)) == ("confirming", before), "no credits before Stripe says so"

    event = succeeded_event(standin, recharge)
    for _ in range(2):
        assert deliver(auth.client, event).status_code == 200
    assert deliver(auth.client, succeeded_event(standin, recharge)).status_code == 200  # a new event id, same PI

    assert available(team) == before + SMALL.total_credits
    assert recharges(team)[0].status == "succeeded"
    grants = db.session.scalars(select(LedgerEntry).where(LedgerEntry.description.like("Auto-recharge%"))).all()
    assert len(grants) == 1 and grants[0].meta["payment_intent"] == recharge.payment_intent_id
    assert any(m["Subject"].startswith("Receipt: Auto-recharge") for m in outbox)
    assert credits.verify() == []


@pytest.mark.parametrize("order", ["before_the_job_records", "after", "twice_racing_the_job"])
def test_the_success_event_in_any_order_grants_once(auth, standin, team, order) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    before = available(team)
    recharge_id = recharges(team)[0].id
    _row, params = recharge_job._claim(recharge_id, utcnow())
    db.session.commit()
    payment_intent = recharge_job.gateway.create_payment_intent(params, f"auto-recharge:{recharge_id}:1")
    event = make_event("payment_intent.succeeded", payment_intent)
    if order != "after":
        assert deliver(auth.client, event).status_code == 200  # Stripe was quicker than our own bookkeeping
    recharge_job._record_answer(recharge_id, 1, payment_intent, recharge_job.PayResult())
    db.session.commit()
    if order != "before_the_job_records":
        assert deliver(auth.client, event).status_code == 200
    assert recharges(team)[0].status == "succeeded"
    assert available(team) == before + SMALL.total_credits


def test_the_cli_pays_what_is_due(app, auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    result = app.test_cli_runner().invoke(args=["billing", "recharge-due"])
    assert result.exit_code == 0, result.output
    assert "1 due, 1 charged" in result.output
    assert recharges(team)[0].status == "confirming"


def test_a_crash_after_the_claim_repeats_the_same_attempt_with_the_same_key(app, auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    standin.fail_next("POST", "/v1/payment_intents", 500, times=3)  # the SDK retries twice, then gives up

    assert recharge_job.pay_due().errors == 1
    assert recharges(team)[0].status == "processing"
    later = utcnow() + timedelta(seconds=app.config["AUTO_RECHARGE_STALE_SECONDS"] + 1)
    assert recharge_job.pay_due(later).charged == 1
    keys = {r.header("Idempotency-Key") for r in standin.find("POST", "/v1/payment_intents")}
    assert keys == {f"auto-recharge:{recharges(team)[0].id}:1"}


# -- guardrails ------------------------------------------------------------------------------------------


def test_declines_back_off_then_three_in_a_row_turn_it_off_and_email_the_owner(app, auth, standin, team, outbox):
    ready(auth, standin, team, last4="9995")
    spend(team, 400, "cross")
    now = utcnow()

    assert recharge_job.pay_due(now).declined == 1
    recharge = recharges(team)[0]
    first_wait = app.config["AUTO_RECHARGE_BACKOFF_SECONDS"][0]
    assert recharge.status == "retrying" and recharge.failure_code == "insufficient_funds"
    assert abs((recharge.next_attempt_at - now).total_seconds() - first_wait) < 5
    # The webhook says the same: the failure counts once.
    failed = make_event("payment_intent.payment_failed", standin.get(recharge.payment_intent_id))
    assert deliver(auth.client, failed).status_code == 200
    assert db.session.get(AutoRechargeSettings, team.id).consecutive_failures == 1

    assert recharge_job.pay_due(now + timedelta(seconds=first_wait - 60)).claimed == 0, "not before the backoff"
    assert recharge_job.pay_due(now + timedelta(seconds=first_wait + 1)).declined == 1
    assert recharges(team)[0].attempts == 2
    assert recharge_job.pay_due(now + timedelta(days=2)).declined == 1

    db.session.expire_all()
    settings = db.session.get(AutoRechargeSettings, team.id)
    assert recharges(team)[0].status == "failed"
    assert (settings.enabled, settings.consecutive_failures) == (False, 3)
    assert db.session.get(CreditBalance, team.id).recharge_below is None
    keys = [r.header("Idempotency-Key") for r in standin.find("POST", "/v1/payment_intents")]
    assert keys == [f"auto-recharge:{recharge.id}:{n}" for n in (1, 2, 3)]
    turned_off = [m for m in outbox if m["Subject"] == "Auto-recharge was turned off"]
    assert [m["To"] for m in turned_off] == [billing_fixtures.OWNER_EMAIL]
    page = auth.client.get("/dashboard").get_data(as_text=True)
    assert "turned off: 3 payments in a row failed" in page
    spend(team, 1, "after-off")
    assert len(recharges(team)) == 1


def test_authentication_required_emails_a_link_that_finishes_the_payment_on_session(auth, standin, team, outbox):
    ready(auth, standin, team, last4="3184")
    spend(team, 400, "cross")
    before = available(team)

    assert recharge_job.pay_due().needs_action == 1
    recharge = recharges(team)[0]
    assert recharge.status == "requires_action"
    assert standin.get(recharge.payment_intent_id)["status"] == "requires_action"
    mails = [m for m in outbox if m["Subject"] == "Confirm your auto-recharge payment"]
    assert len(mails) == 1
    link = f"/billing/auto-recharge/confirm/{recharge.id}"
    assert link in mails[0].get_body(("plain",)).get_content()
    # The requires_action event changes nothing more (no second email).
    deliver(auth.client, make_event("payment_intent.requires_action", standin.get(recharge.payment_intent_id)))
    assert len([m for m in outbox if m["Subject"] == "Confirm your auto-recharge payment"]) == 1

    response = auth.post(link, {}, token_from=link)
    assert response.status_code == 303
    assert response.headers["Location"] == f"{standin.url}/3ds/{recharge.payment_intent_id}"
    confirm = standin.last("POST", f"/v1/payment_intents/{recharge.payment_intent_id}/confirm")
    assert confirm.params["return_url"].endswith(f"/billing/auto-recharge/confirmed/{recharge.id}")

    authenticate(standin, recharge.payment_intent_id)  # the customer passes 3-D Secure on Stripe's page
    done = auth.client.get(f"/billing/auto-recharge/confirmed/{recharge.id}").get_data(as_text=True)
    assert "Payment confirmed" in done
    assert deliver(auth.client, succeeded_event(standin, recharge)).status_code == 200  # the webhook, later
    assert available(team) == before + SMALL.total_credits
    assert recharges(team)[0].status == "succeeded"


def test_an_unconfirmed_authentication_counts_as_a_failure_after_the_wait(app, auth, standin, team) -> None:
    ready(auth, standin, team, last4="3184")
    spend(team, 400, "cross")
    recharge_job.pay_due()
    assert recharges(team)[0].status == "requires_action"
    hours = app.config["AUTO_RECHARGE_ACTION_HOURS"]
    assert recharge_job.pay_due(utcnow() + timedelta(hours=hours - 1)).declined == 0
    later = recharge_job.pay_due(utcnow() + timedelta(hours=hours, minutes=1))
    # Counted as a failure, then (that late, the backoff is over) tried again: the bank asks again.
    assert (later.declined, later.needs_action) == (1, 1)
    assert (recharges(team)[0].status, recharges(team)[0].attempts) == ("requires_action", 2)
    assert db.session.get(AutoRechargeSettings, team.id).consecutive_failures == 1


def test_the_monthly_cap_is_never_exceeded(auth, standin, team) -> None:
    ready(auth, standin, team, cap=5)  # room for one small pack ($5) a month
    spend(team, 400, "cross-1")
    recharge_job.pay_due()
    deliver(auth.client, succeeded_event(standin, recharges(team)[0]))
    spend(team, available(team) - 1_000, "cross-2")  # a second crossing

    assert len(recharges(team)) == 1, "the cap leaves no room for a second recharge this month"
    assert "this month's cap is reached" in auth.client.get("/dashboard").get_data(as_text=True)


def test_turning_it_off_cancels_what_has_not_reached_stripe(auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    assert turn_on(auth, enabled=False).status_code == 303
    assert recharges(team)[0].status == "canceled"
    assert recharge_job.pay_due().claimed == 0
    assert standin.find("POST", "/v1/payment_intents") == []


def test_turning_it_on_below_the_threshold_recharges_at_once(auth, standin, team) -> None:
    buy_pack(auth, standin, "medium")
    save_card(auth, standin, team)
    assert turn_on(auth, threshold=5_000).status_code == 303
    assert [r.status for r in recharges(team)] == ["due"]


# -- refunds and receipts -----------------------------------------------------------------------------------


def test_a_refunded_recharge_is_clawed_back_and_the_receipts_say_so(auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    recharge_job.pay_due()
    recharge = recharges(team)[0]
    deliver(auth.client, succeeded_event(standin, recharge))
    before = available(team)

    pi = standin.get(recharge.payment_intent_id)
    charge = standin.get(pi["latest_charge"])
    charge.update(amount_refunded=SMALL.price_cents // 2, refunded=False)
    assert deliver(auth.client, make_event("charge.refunded", charge)).status_code == 200

    assert available(team) == before - SMALL.total_credits // 2
    page = auth.client.get("/billing/receipts").get_data(as_text=True)
    assert 'data-kind="recharge" data-status="partially_refunded"' in page
    assert 'data-kind="pack" data-status="paid"' in page
    assert "Auto-recharge: Small pack" in page and "Medium pack credit pack" in page

    # Live mode links the recharge to Stripe's hosted receipt.
    purchase = db.session.scalar(select(Purchase).where(Purchase.stripe_payment_intent_id == pi["id"]))
    response = auth.client.get(f"/billing/receipts/recharge/{purchase.id}")
    assert response.status_code == 303 and response.headers["Location"] == charge["receipt_url"]
    assert credits.verify() == []


def test_a_refund_delivered_before_the_success_is_applied_when_it_lands(auth, standin, team) -> None:
    ready(auth, standin, team)
    spend(team, 400, "cross")
    recharge_job.pay_due()
    recharge = recharges(team)[0]
    before = available(team)
    pi = standin.get(recharge.payment_intent_id)
    charge = standin.get(pi["latest_charge"])
    charge.update(amount_refunded=SMALL.price_cents, refunded=True)
    assert deliver(auth.client, make_event("charge.refunded", charge)).status_code == 200
    deliver(auth.client, succeeded_event(standin, recharge))
    assert available(team) == before
    assert db.session.scalar(select(Purchase.status).where(Purchase.stripe_payment_intent_id == pi["id"])) == "refunded"


def test_a_disputed_pack_shows_as_disputed(auth, standin, team) -> None:
    session = buy_pack(auth, standin, "medium")
    pi = standin.get(session["payment_intent"])
    charge = standin.put(make_charge(pi["id"], pi["amount"], customer=pi["customer"]))
    from tests.stripe_factories import make_dispute

    dispute = make_dispute(charge["id"], pi["id"], pi["amount"], "needs_response")
    assert deliver(auth.client, make_event("charge.dispute.created", dispute)).status_code == 200
    page = auth.client.get("/billing/receipts").get_data(as_text=True)
    assert 'data-kind="pack" data-status="disputed"' in page


# -- PostgreSQL races ---------------------------------------------------------------------------------------


def _race(app, operation, calls):
    """16 workers released together (a longer wait at the start: these operations reach Stripe too)."""
    return race(app, operation, calls, 16, barrier_seconds=2)


@pytest.mark.postgres
@pytest.mark.parametrize("extra_config", [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}])
def test_16_concurrent_spends_make_one_recharge_per_crossing(app, auth, standin, team) -> None:
    ready(auth, standin, team)
    team_id = team.id
    # 2,300 credits, threshold 2,000: 16 spends of 30 cross it once, wherever in the order it happens.
    results = _race(app, lambda key: credits.spend(team_id, 30, key=key), [(f"s{i}",) for i in range(16)])
    assert all(isinstance(r, credits.Receipt) for r in results)
    assert len(recharges(team)) == 1

    recharge_job.pay_due()
    deliver(auth.client, succeeded_event(standin, recharges(team)[0]))  # back above the threshold
    spend(team, available(team) - 2_010, "to-2010")
    results = _race(app, lambda key: credits.spend(team_id, 5, key=key), [(f"t{i}",) for i in range(16)])
    assert [r.status for r in recharges(team)] == ["succeeded", "due"], "the second crossing made exactly one"
    assert db.session.scalar(select(func.count()).select_from(AutoRecharge)) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("extra_config", [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}])
def test_the_cap_holds_under_concurrency(app, auth, standin, team) -> None:
    """Spends, payment runs and success deliveries all at once, crossing after crossing: the recharges
    never cost more than the cap (two small packs), though the spends crossed the threshold more often."""
    threshold = 2_260
    ready(auth, standin, team, threshold=threshold, cap=10)
    team_id = team.id

    def work(i: int) -> object:
        if i % 4 == 0:
            recharge_job.pay_due()
            confirming = select(AutoRecharge.payment_intent_id).where(AutoRecharge.status == "confirming")
            for pi_id in db.session.scalars(confirming).all():
                payload, headers = signed_request(
                    make_event("payment_intent.succeeded", standin.get(pi_id)), billing_fixtures.WEBHOOK_SECRET
                )
                webhooks.receive(payload, headers["Stripe-Signature"])
            return None
        return credits.spend(team_id, 20, key=f"w{i}")

    def crossings() -> int:
        db.session.expire_all()
        after = db.session.scalars(
            select(LedgerEntry.balance_after).where(LedgerEntry.team_id == team_id).order_by(LedgerEntry.id)
        ).all()
        return sum(1 for before, now in itertools.pairwise(after) if before >= threshold > now)

    for round_ in range(30):
        _race(app, work, [(i,) for i in range(round_ * 16, round_ * 16 + 16)])
        if crossings() >= 3 and not any(r.status not in ("succeeded", "failed", "canceled") for r in recharges(team)):
            break
    rows = recharges(team)
    assert crossings() >= 3, "the race never crossed often enough to test the cap"
    assert [(r.status, r.amount_cents) for r in rows] == [("succeeded", 500), ("succeeded", 500)]
    assert credits.verify() == []


# -- the spend's statement budget ------------------------------------------------------------------------


def _statements_of(operation) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import event

    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        operation()
        db.session.commit()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return [s for s in seen if not s.upper().startswith(("BEGIN", "COMMIT", "PRAGMA"))]


def test_auto_recharge_costs_a_plain_spend_nothing_and_the_crossing_one_statement(app, backend) -> None:
    from starter.credits.recharge_due import set_threshold
    from tests.factories import ledger_team

    team = ledger_team("budget")
    credits.grant(team.id, 1_000, source="purchase", key="g")
    db.session.add(
        AutoRechargeSettings(
            team_id=team.id,
            enabled=True,
            threshold=500,
            pack_code="small",
            pack_price_cents=SMALL.price_cents,
            pack_credits=SMALL.total_credits,
            monthly_cap_cents=5_000,
            payment_method_id="pm_x",
        )
    )
    set_threshold(team.id, 500)
    db.session.commit()
    team_id = team.id

    budget = 1 if backend == "postgresql" else 8  # a plain spend (tests/test_credits_model.py says why)
    plain = _statements_of(lambda: credits.spend(team_id, 5, key="plain"))
    assert len(plain) == budget, plain  # the threshold came with the lock
    crossing = _statements_of(lambda: credits.spend(team_id, 600, key="crossing"))
    assert len(crossing) == budget + 1 and crossing[-1].upper().startswith("INSERT INTO AUTO_RECHARGES"), crossing
    below = _statements_of(lambda: credits.spend(team_id, 5, key="below"))
    assert len(below) == budget, below
