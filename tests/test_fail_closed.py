"""Missing configuration fails closed: no default anyone can know stands in for a secret or a key."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from sqlalchemy import func, select

from starter import config, create_app
from starter.extensions import db
from starter.models import LedgerEntry, Team
from tests import billing_fixtures
from tests.billing_fixtures import start_checkout

owner, team = billing_fixtures.owner, billing_fixtures.team
PUBLIC_DEV_SECRET = "whsec_dev_only_not_secret"  # the secret the first milestone shipped in its source


def test_the_app_refuses_to_start_without_a_secret_key(tmp_path):
    with pytest.raises(config.ConfigurationError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'a.db'}", "SECRET_KEY": None})


def test_a_stripe_key_without_a_webhook_secret_refuses_to_start(tmp_path):
    settings = {"SECRET_KEY": "k", "STRIPE_SECRET_KEY": "sk_live_x", "STRIPE_WEBHOOK_SECRET": None}
    with pytest.raises(config.ConfigurationError, match="STRIPE_WEBHOOK_SECRET"):
        config.check(settings, instance_path=str(tmp_path), debug=False)


def test_test_mode_gets_a_random_webhook_secret_of_its_own_instance(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir(), second.mkdir()
    settings = [{"SECRET_KEY": "k", "BILLING_TEST_MODE": True} for _ in range(3)]
    config.check(settings[0], instance_path=str(first), debug=False)
    config.check(settings[1], instance_path=str(first), debug=False)  # a second worker of the same instance
    config.check(settings[2], instance_path=str(second), debug=False)

    secrets = [s["STRIPE_WEBHOOK_SECRET"] for s in settings]
    assert secrets[0] == secrets[1] != secrets[2]
    assert all(s.startswith("whsec_") and len(s) > 40 and s != PUBLIC_DEV_SECRET for s in secrets)
    assert (first / config.WEBHOOK_SECRET_FILE).stat().st_mode & 0o077 == 0  # readable by the app's user only


def test_a_forged_event_signed_with_the_old_public_secret_is_refused(client, team):
    session = {"id": "cs_forged", "object": "checkout.session", "mode": "payment", "payment_status": "paid"}
    body = json.dumps({"id": "evt_forged", "type": "checkout.session.completed", "created": int(time.time()),
                       "api_version": stripe.api_version, "data": {"object": session}})  # fmt: skip
    header = stripe.WebhookSignature.generate_signature_header(body, PUBLIC_DEV_SECRET)

    response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header})

    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_event"


@pytest.mark.parametrize("app_config", [{"BILLING_TEST_MODE": False, "STRIPE_SECRET_KEY": ""}])
def test_without_a_key_or_the_opt_in_buying_is_refused_and_nothing_granted(auth, team):
    response = start_checkout(auth, "pack", "medium")

    assert response.status_code == 503
    assert "Payments are not configured" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Team, team.id).stripe_customer_id is None
    count = select(func.count()).select_from(LedgerEntry).where(LedgerEntry.team_id == team.id)
    assert db.session.scalar(count) == 1  # the free allowance only
    assert "Test mode" not in auth.client.get("/dashboard").get_data(as_text=True)


@pytest.mark.parametrize("key", [None, config.DEV_SECRET_KEY])
def test_debug_outside_flask_run_does_not_allow_the_development_key(tmp_path, monkeypatch, key):
    # FLASK_DEBUG=1 left in a gunicorn or compose environment makes app.debug true: still refused.
    monkeypatch.delenv(config.FLASK_RUN, raising=False)
    with pytest.raises(config.ConfigurationError, match="SECRET_KEY"):
        config.check({"SECRET_KEY": key}, instance_path=str(tmp_path), debug=True)
    monkeypatch.setenv(config.FLASK_RUN, "true")  # the interactive `flask run --debug`
    settings = {"SECRET_KEY": key}
    config.check(settings, instance_path=str(tmp_path), debug=True)
    assert settings["SECRET_KEY"] == config.DEV_SECRET_KEY
