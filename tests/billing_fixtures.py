"""Fixtures and helpers shared by the billing tests (import them explicitly from the test modules).

Real-Stripe mode: the app is configured with a secret key and ``STRIPE_API_BASE`` pointing at the local
Stripe stand-in (``tests/stripe_standin.py``), so the official SDK makes real HTTP calls; webhook events are
built and signed by ``tests/stripe_events.py`` and POSTed to ``/webhooks/stripe`` like Stripe's deliveries.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from starter import credits
from starter.extensions import db
from starter.models import LedgerEntry, StripeEvent, Team, User
from tests import stripe_standin
from tests.conftest import AuthActions
from tests.stripe_events import make_event, signed_request
from tests.stripe_standin import StripeStandIn

Json = dict[str, Any]
standin = stripe_standin.standin  # the fixture, re-exported for the billing tests
WEBHOOK_SECRET = "whsec_test"
OWNER_EMAIL = "owner@example.com"


@pytest.fixture
def extra_config() -> dict[str, object]:
    """Settings added on top of real-Stripe mode; override with ``@pytest.mark.parametrize("extra_config", …)``."""
    return {}


def real_stripe_config(standin: StripeStandIn) -> dict[str, object]:
    """The app talks to the stand-in through the real SDK, as it would to api.stripe.com."""
    return {
        "STRIPE_SECRET_KEY": "sk_test_x",
        "BILLING_TEST_MODE": False,
        "STRIPE_API_BASE": standin.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


@pytest.fixture
def owner(make_user: Any, auth: AuthActions) -> User:
    """A logged-in user who owns their (current, personal) team."""
    user = make_user(OWNER_EMAIL)
    response = auth.login(OWNER_EMAIL)
    assert response.status_code in (302, 303)
    return user


@pytest.fixture
def team(owner: User) -> Team:
    return db.session.get(Team, owner.current_team_id)


def start_checkout(auth: AuthActions, kind: str = "pack", code: str = "medium", attempt: str = "try1") -> Any:
    """POST the purchase form as the browser does (CSRF token from /billing)."""
    return auth.post("/billing/checkout", {"kind": kind, "code": code, "attempt": attempt}, token_from="/billing")


def session_id_from(location: str) -> str:
    match = re.search(r"(cs_[A-Za-z0-9_]+)", location)
    assert match, f"no checkout session id in {location!r}"
    return match.group(1)


def deliver(client: FlaskClient, event: Json, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> Any:
    """POST a signed event to the webhook endpoint, as Stripe delivers it."""
    body, headers = signed_request(event, secret, timestamp)
    return client.post("/webhooks/stripe", data=body, headers=headers)


def buy_pack(auth: AuthActions, standin: StripeStandIn, code: str = "medium", attempt: str = "buy") -> Json:
    """A pack bought for real: Checkout via the app, paid at the stand-in, fulfilled by the webhook."""
    response = start_checkout(auth, "pack", code, attempt)
    assert response.status_code == 303, response.get_data(as_text=True)
    session = standin.complete_checkout(session_id_from(response.headers["Location"]))
    assert deliver(auth.client, make_event("checkout.session.completed", session)).status_code == 200
    return session


def purchased(team_id: int) -> int:
    db.session.expire_all()
    return credits.balance(team_id).purchased


def plan_credits(team_id: int) -> int:
    db.session.expire_all()
    return credits.balance(team_id).plan


def entries(team_id: int, kind: str) -> list[LedgerEntry]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.team_id == team_id, LedgerEntry.kind == kind).order_by(LedgerEntry.id)
        )
    )


def stored_event(event_id: str) -> StripeEvent | None:
    db.session.expire_all()
    return db.session.get(StripeEvent, event_id)


def event_count() -> int:
    return db.session.scalar(select(func.count()).select_from(StripeEvent))
