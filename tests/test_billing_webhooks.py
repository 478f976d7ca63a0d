"""POST /webhooks/stripe: signatures, storage, exactly-once fulfilment, failures and redelivery, concurrency.

Events are Stripe-shaped (today's API: built from the stand-in's factories), signed with the SDK and POSTed to
the endpoint like Stripe's deliveries. Subscriptions, refunds and disputes live in test_billing_subscriptions.py.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import delete, func, select
from werkzeug.serving import make_server

from starter import catalog, credits
from starter.extensions import db
from starter.models import CreditBalance, LedgerEntry, Purchase, StripeEvent, Team
from tests import billing_fixtures
from tests.billing_fixtures import (
    WEBHOOK_SECRET,
    deliver,
    event_count,
    purchased,
    real_stripe_config,
    session_id_from,
    start_checkout,
    stored_event,
)
from tests.stripe_events import encode_event, make_event, sign, signed_request
from tests.stripe_standin import StripeStandIn, make_checkout_session, new_id

MEDIUM = catalog.PACKS["medium"]

# Fixtures of tests/billing_fixtures.py used here (pytest finds them by their function names).
owner, standin, team = (
    billing_fixtures.owner,
    billing_fixtures.standin,
    billing_fixtures.team,
)


@pytest.fixture
def app_config(standin: StripeStandIn) -> dict[str, object]:
    return real_stripe_config(standin)


@pytest.fixture
def customer(team: Team) -> str:
    team.stripe_customer_id = "cus_teamcustomer1"
    db.session.commit()
    return team.stripe_customer_id


def paid_session(team: Team, code: str = "medium", **overrides: Any) -> dict[str, Any]:
    """A completed, paid Checkout Session for a pack, as checkout.session.completed carries it."""
    pack = catalog.PACKS[code]
    fields: dict[str, Any] = {
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "customer": team.stripe_customer_id,
        "amount_total": pack.price_cents,
        "amount_subtotal": pack.price_cents,
        "currency": "usd",
        "payment_intent": new_id("pi_"),
        "metadata": {"team_id": str(team.id), "kind": "pack", "code": code, "user_id": "1"},
    }
    fields.update(overrides)
    return make_checkout_session(**fields)


def grants_for(session_id: str) -> int:
    return db.session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.idempotency_key == f"checkout:{session_id}")
    )


# ------------------------------------------------------------------------------------- rejections


def test_a_bad_signature_is_refused_and_nothing_stored(client, team, customer) -> None:
    response = deliver(client, make_event("checkout.session.completed", paid_session(team)), secret="whsec_other")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_event"
    assert event_count() == 0 and purchased(team.id) == 0


def test_a_stale_signature_is_refused(client, team, customer) -> None:
    event = make_event("checkout.session.completed", paid_session(team))

    assert deliver(client, event, timestamp=int(time.time()) - 400).status_code == 400
    assert event_count() == 0 and purchased(team.id) == 0
    assert deliver(client, event, timestamp=int(time.time()) - 200).status_code == 200  # within five minutes


def test_a_signed_body_that_is_not_an_event_is_refused(client) -> None:
    bodies = [b"{not json", b"[1, 2]", b'{"id": "evt_1", "type": "x"}', '{"id": "evt_é"}'.encode("latin-1")]
    for body in bodies:  # malformed, an array, not an event, not UTF-8: each correctly signed
        headers = {"Stripe-Signature": sign(body.decode("latin-1"), WEBHOOK_SECRET)}

        assert client.post("/webhooks/stripe", data=body, headers=headers).status_code == 400, body
    assert event_count() == 0


def test_a_missing_signature_is_refused(client, team, customer) -> None:
    body, _ = signed_request(make_event("checkout.session.completed", paid_session(team)), WEBHOOK_SECRET)

    response = client.post("/webhooks/stripe", data=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert event_count() == 0 and purchased(team.id) == 0


def test_an_event_of_an_older_api_version_is_refused_and_recorded(client, team, customer) -> None:
    event = make_event("checkout.session.completed", paid_session(team), api_version="2024-06-20")

    response = deliver(client, event)

    assert response.status_code == 400 and response.json["error"]["code"] == "unsupported_api_version"
    stored = stored_event(event["id"])
    assert stored.processed_at is None and "2024-06-20" in stored.error
    assert purchased(team.id) == 0


def test_an_unknown_event_type_is_stored_and_acknowledged(client, team, customer) -> None:
    event = make_event("customer.created", {"id": customer, "object": "customer", "metadata": {}})

    response = deliver(client, event)

    assert response.status_code == 200
    assert response.get_json()["handled"] is False
    stored = stored_event(event["id"])
    assert stored.type == "customer.created" and stored.processed_at is not None and stored.error is None
    assert stored.payload["data"]["object"]["id"] == customer


# ---------------------------------------------------------------------------------- ignored events


def test_a_session_without_metadata_is_ignored(client, team, customer) -> None:
    event = make_event("checkout.session.completed", paid_session(team, metadata={}))

    assert deliver(client, event).status_code == 200
    assert purchased(team.id) == 0
    assert stored_event(event["id"]).error.startswith("ignored")


def test_a_session_naming_another_team_than_its_customer_is_ignored(client, make_user, team, customer) -> None:
    other = db.session.get(Team, make_user("other@example.com").current_team_id)
    session = paid_session(team)
    session["metadata"]["team_id"] = str(other.id)
    event = make_event("checkout.session.completed", session)

    assert deliver(client, event).status_code == 200
    assert purchased(team.id) == 0 and purchased(other.id) == 0
    stored = stored_event(event["id"])
    assert stored.error.startswith("ignored") and stored.processed_at is not None


def test_a_session_of_an_unknown_customer_is_ignored(client, team, customer) -> None:
    event = make_event("checkout.session.completed", paid_session(team, customer="cus_somebodyelse"))

    assert deliver(client, event).status_code == 200
    assert purchased(team.id) == 0
    assert stored_event(event["id"]).error.startswith("ignored")


def test_a_payment_that_does_not_match_the_pack_grants_nothing(client, team, customer, caplog) -> None:
    for amount, currency in [(100, "usd"), (MEDIUM.price_cents, "eur")]:
        event = make_event("checkout.session.completed", paid_session(team, amount_total=amount, currency=currency))

        with caplog.at_level(logging.WARNING):
            response = deliver(client, event)

        assert response.status_code == 200
        error = stored_event(event["id"]).error
        assert error.startswith("ignored") and f"paid {amount} {currency} for medium" in error
        assert any(event["id"] in record.getMessage() and "ignored" in record.getMessage() for record in caplog.records)
    assert purchased(team.id) == 0
    assert db.session.scalar(select(func.count()).select_from(Purchase)) == 0


# -------------------------------------------------------------------- failures roll back and retry


def test_a_failing_handler_rolls_back_and_a_redelivery_applies_it(client, team, customer) -> None:
    account = db.session.get(CreditBalance, team.id)
    saved = (account.balance, account.held)
    # The team's credit account is gone, so the grant fails inside the handler (a genuine error, not a mock).
    db.session.execute(delete(CreditBalance).where(CreditBalance.team_id == team.id))
    db.session.commit()
    session = paid_session(team)
    event = make_event("checkout.session.completed", session)
    body, headers = signed_request(event, WEBHOOK_SECRET)

    response = client.post("/webhooks/stripe", data=body, headers=headers)

    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "processing_failed"
    stored = stored_event(event["id"])
    assert stored.processed_at is None and "no credit account" in stored.error
    assert db.session.scalar(select(func.count()).select_from(Purchase)) == 0
    assert grants_for(session["id"]) == 0

    db.session.add(CreditBalance(team_id=team.id, balance=saved[0], held=saved[1]))
    db.session.commit()
    retry = client.post("/webhooks/stripe", data=body, headers=headers)  # Stripe redelivers the same body

    assert retry.status_code == 200
    assert purchased(team.id) == MEDIUM.total_credits
    stored = stored_event(event["id"])
    assert stored.processed_at is not None and stored.error is None
    assert deliver(client, event).get_json()["duplicate"] is True
    assert purchased(team.id) == MEDIUM.total_credits
    assert credits.verify() == []


# ------------------------------------------------------------------------- concurrency (PostgreSQL)


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app behind a real threaded HTTP server: each request in its own thread, session and connection."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def post(base_url: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    """One HTTP POST on its own connection; the status code."""
    connection = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def run_together(*calls: Any) -> list[Any]:
    """Run the calls in threads released at the same instant; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Any) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:  # reported by the assertion below, not lost in the thread
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.postgres
def test_ten_concurrent_deliveries_of_one_event_grant_once(live_server, team, customer) -> None:
    session = paid_session(team)
    event = make_event("checkout.session.completed", session)
    body, headers = signed_request(event, WEBHOOK_SECRET)

    statuses = run_together(*[lambda: post(live_server, "/webhooks/stripe", body, headers)] * 10)

    assert statuses == [200] * 10
    assert purchased(team.id) == MEDIUM.total_credits
    assert grants_for(session["id"]) == 1
    assert db.session.scalar(select(func.count()).select_from(Purchase)) == 1
    assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 1
    assert credits.verify() == []


@pytest.mark.postgres
def test_concurrent_completed_and_async_succeeded_grant_once(live_server, team, customer) -> None:
    session = paid_session(team)
    requests = []
    for kind in ["checkout.session.completed", "checkout.session.async_payment_succeeded"] * 3:
        body, headers = signed_request(make_event(kind, session), WEBHOOK_SECRET)
        requests.append(lambda body=body, headers=headers: post(live_server, "/webhooks/stripe", body, headers))

    assert run_together(*requests) == [200] * 6
    assert purchased(team.id) == MEDIUM.total_credits
    assert grants_for(session["id"]) == 1
    assert db.session.scalar(select(func.count()).select_from(StripeEvent)) == 6


@pytest.mark.postgres
def test_the_success_page_racing_the_webhook_grants_once(app, auth, standin, team) -> None:
    for attempt in range(3):  # a few rounds, so both orders and true overlaps get their chance
        response = start_checkout(auth, attempt=f"race{attempt}")
        session = standin.complete_checkout(session_id_from(response.headers["Location"]))
        body, headers = signed_request(make_event("checkout.session.completed", session), WEBHOOK_SECRET)
        webhook_client = app.test_client()

        page, webhook = run_together(
            lambda path=f"/billing/success?session_id={session['id']}": auth.client.get(path),
            lambda client=webhook_client, body=body, headers=headers: client.post(
                "/webhooks/stripe", data=body, headers=headers
            ),
        )

        assert page.status_code == 200 and webhook.status_code == 200
        assert "2,200 credits added" in page.get_data(as_text=True)
        assert grants_for(session["id"]) == 1
    assert purchased(team.id) == 3 * MEDIUM.total_credits
    assert db.session.scalar(select(func.count()).select_from(Purchase)) == 3
    assert credits.verify() == []


def test_the_stored_payload_is_the_delivered_event(client, team, customer) -> None:
    event = make_event("checkout.session.completed", paid_session(team))
    body = encode_event(event)

    client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body, WEBHOOK_SECRET)})

    stored = stored_event(event["id"])
    assert stored.payload == json.loads(body)
    assert stored.stripe_created == event["created"] and stored.type == "checkout.session.completed"


def test_a_webhook_grant_names_stripe_as_its_actor(client, team, customer) -> None:
    """Attribution: what a webhook changes is recorded as caused by Stripe, with no user and no API key."""
    event = make_event("checkout.session.completed", paid_session(team))
    assert deliver(client, event).status_code == 200
    session_id = event["data"]["object"]["id"]
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == f"checkout:{session_id}"))
    assert (entry.actor_type, entry.actor_user_id, entry.api_key_id) == ("stripe", None, None)
